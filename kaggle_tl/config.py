"""RunConfig: every knob of a run in one frozen dataclass, saved beside the run's outputs."""
from __future__ import annotations

import dataclasses
import tomllib
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from kaggle_tl.errors import KaggleTLError

VIEWS_WITH_FLIP = ("original", "hflip")
HEAD_NAMES = ("dense", "svm", "logreg")


@dataclass(frozen=True)
class RunConfig:
    """Defaults are the mission: Xception + InceptionV3 at 299 px, flips, 5 folds, dense head."""

    data: str | None = None  # competition folder; None means the embedded demo (data/demo)
    train_dir: str = "train"
    test_dir: str = "test"
    labels_csv: str = "labels.csv"
    sample_submission: str = "sample_submission.csv"
    id_column: str = "id"
    label_column: str = "label"

    backbones: tuple[str, ...] = ("xception", "inception_v3")
    image_size: int | None = None  # None: each backbone's native size (299 for the mission pair)
    weights: str = "imagenet"  # imagenet | none | path to a weights file or folder
    flips: bool = True
    heads: tuple[str, ...] = ("dense",)
    folds: int = 5
    seed: int = 42
    batch_size: int = 32
    decode_threads: int = 4
    max_epochs: int = 50  # dense head
    logreg_c: float = 0.005  # logreg head: inverse L2 strength on standardised features
    svm_c: float = 0.001  # svm head
    skip_bad_train_images: bool = False

    cache_dir: str = "cache"
    runs_dir: str = "runs"
    submissions_dir: str = "submissions"

    def __post_init__(self) -> None:
        # Accept lists/comma strings from TOML and flags; store tuples so the config is hashable.
        for name in ("backbones", "heads"):
            value = getattr(self, name)
            if isinstance(value, str):
                value = tuple(v.strip() for v in value.split(",") if v.strip())
            object.__setattr__(self, name, tuple(value))
        if not self.backbones:
            raise KaggleTLError("config: at least one backbone is needed")
        unknown = [h for h in self.heads if h not in HEAD_NAMES]
        if unknown or not self.heads:
            raise KaggleTLError(f"config: unknown head(s) {unknown}; choose from {', '.join(HEAD_NAMES)}")
        if self.folds < 2:
            raise KaggleTLError(f"config: folds must be at least 2, got {self.folds}")
        if self.batch_size < 1:
            raise KaggleTLError(f"config: batch_size must be positive, got {self.batch_size}")

    @property
    def views(self) -> tuple[str, ...]:
        return VIEWS_WITH_FLIP if self.flips else VIEWS_WITH_FLIP[:1]

    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out["backbones"] = list(self.backbones)
        out["heads"] = list(self.heads)
        return out

    def replace(self, **changes: Any) -> "RunConfig":
        return dataclasses.replace(self, **changes)

    @classmethod
    def from_dict(cls, values: dict[str, Any], source: str = "config") -> "RunConfig":
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise KaggleTLError(f"{source}: unknown setting(s) {', '.join(unknown)}")
        try:
            return cls(**values)
        except TypeError as exc:
            raise KaggleTLError(f"{source}: {exc}") from None

    @classmethod
    def from_toml(cls, path: str | Path, **overrides: Any) -> "RunConfig":
        path = Path(path)
        try:
            values = tomllib.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise KaggleTLError(f"{path}: config file not found") from None
        except tomllib.TOMLDecodeError as exc:
            raise KaggleTLError(f"{path}: not valid TOML ({exc})") from None
        values = values.get("kaggle_tl", values)  # allow a [kaggle_tl] table or top-level keys
        values.update(overrides)
        return cls.from_dict(values, source=str(path))


# The embedded default main job: offline, pretrained, finishes in minutes on 2 CPU cores.
DEMO_DATA = "data/demo"
DEMO_OVERRIDES: dict[str, Any] = {"backbones": ("efficientnet_lite0",)}
