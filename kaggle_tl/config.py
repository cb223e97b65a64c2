"""RunConfig: every knob of a run in one frozen, type-checked dataclass, resolved in one place.

``resolve_config`` turns what a user wrote (flags, TOML, or Python) into the complete config a
run uses and saves: the demo folder and its backbone when no data is given, the mission's
backbones otherwise, and every head's full parameter set. The CLI and ``kaggle_tl.run`` both
call it, so ``python run_all.py`` and ``kaggle_tl.run(RunConfig())`` do the same thing.
"""
from __future__ import annotations

import dataclasses
import tomllib
import typing
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from kaggle_tl.engine import ENGINES
from kaggle_tl.errors import KaggleTLError
from kaggle_tl.images import DEFAULT_RESIZE, RESIZE_POLICIES, VIEW_TRANSFORMS

VIEWS = tuple(VIEW_TRANSFORMS)

MISSION_BACKBONES = ("xception", "inception_v3")
# The embedded default main job: offline, pretrained, finishes in minutes on 2 CPU cores.
DEMO_DATA = "data/demo"
DEMO_BACKBONES = ("efficientnet_lite0",)
SEED_RANGE = (0, 2**32 - 1)  # what numpy's and scikit-learn's seeding accepts


@dataclass(frozen=True)
class RunConfig:
    """Defaults are the mission: Xception + InceptionV3 at 299 px, flips, 5 folds, dense head."""

    data: str | None = None  # competition folder; None: the embedded demo (data/demo)
    train_dir: str = "train"
    test_dir: str = "test"
    labels_csv: str = "labels.csv"
    sample_submission: str = "sample_submission.csv"
    id_column: str = "id"
    label_column: str = "label"

    backbones: tuple[str, ...] | None = None  # None: xception + inception_v3 (the demo: efficientnet_lite0)
    image_size: int | None = None  # None: each backbone's native size (299 for the mission pair)
    weights: str = "imagenet"  # imagenet | none | path to a weights file or folder
    views: tuple[str, ...] = ("original", "hflip")  # test-time augmentation views, each its own features
    resize: str = DEFAULT_RESIZE  # pad | squash | crop: how an image becomes the backbone's square input
    heads: tuple[str, ...] = ("dense",)
    head_params: dict[str, dict[str, Any]] = field(default_factory=dict)  # head name -> parameters
    folds: int = 5
    seed: int = 42
    head_jobs: int = 1  # parallel fold x view fits (1 BLAS thread each when > 1)
    batch_size: int = 32
    decode_threads: int = 4
    skip_bad_train_images: bool = False
    engine: str = "local"  # local | dask
    address: str | None = None  # dask scheduler; None with engine dask: a LocalCluster on this machine

    cache_dir: str = "cache"
    runs_dir: str = "runs"
    submissions_dir: str = "submissions"

    def __post_init__(self) -> None:
        hints = typing.get_type_hints(RunConfig)
        for f in fields(self):
            object.__setattr__(self, f.name, _checked(f.name, getattr(self, f.name), hints[f.name]))
        self._check_values()

    def _check_values(self) -> None:
        def bad(name: str, why: str) -> KaggleTLError:
            return KaggleTLError(f"setting {name}: {why}, got {getattr(self, name)!r}")

        if self.backbones is not None and not self.backbones:
            raise bad("backbones", "at least one backbone is needed")
        if self.image_size is not None and self.image_size < 1:
            raise bad("image_size", "must be a positive number of pixels")
        unknown = [v for v in self.views if v not in VIEWS]
        if unknown or not self.views or len(set(self.views)) != len(self.views):
            raise bad("views", f"must be distinct names from {', '.join(VIEWS)}")
        if self.resize not in RESIZE_POLICIES:
            raise bad("resize", f"must be one of {', '.join(RESIZE_POLICIES)}")
        if self.engine not in ENGINES:
            raise bad("engine", f"must be one of {', '.join(ENGINES)}")
        if not self.heads or len(set(self.heads)) != len(self.heads):
            raise bad("heads", "must name at least one head, each once")
        if self.folds < 2:
            raise bad("folds", "must be at least 2")
        if not SEED_RANGE[0] <= self.seed <= SEED_RANGE[1]:
            raise bad("seed", f"must be in [{SEED_RANGE[0]}, {SEED_RANGE[1]}]")
        for name in ("batch_size", "decode_threads", "head_jobs"):
            if getattr(self, name) < 1:
                raise bad(name, "must be at least 1")

    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        for name, value in out.items():
            if isinstance(value, tuple):
                out[name] = list(value)
        return out

    def replace(self, **changes: Any) -> "RunConfig":
        return dataclasses.replace(self, **changes)

    @classmethod
    def from_dict(cls, values: dict[str, Any], source: str = "config") -> "RunConfig":
        """From TOML or flag values; ``flips = false`` is shorthand for ``views = ["original"]``."""
        try:
            return cls(**_views_from_flips(values, set(f.name for f in fields(cls))))
        except KaggleTLError as exc:
            raise KaggleTLError(f"{source}: {exc}") from None

    @classmethod
    def from_toml(cls, path: str | Path, **overrides: Any) -> "RunConfig":
        path = Path(path)
        try:
            values = tomllib.loads(path.read_bytes().decode("utf-8"))
        except FileNotFoundError:
            raise KaggleTLError(f"{path}: config file not found") from None
        except UnicodeDecodeError as exc:
            raise KaggleTLError(f"{path}: not UTF-8 text (byte {exc.start}); save the config as UTF-8") from None
        except tomllib.TOMLDecodeError as exc:
            raise KaggleTLError(f"{path}: not valid TOML ({exc})") from None
        values = values.get("kaggle_tl", values)  # allow a [kaggle_tl] table or top-level keys
        if "head_params" in overrides and "head_params" in values:  # flags refine the file's head parameters
            merged = {h: dict(p) for h, p in _checked("head_params", values["head_params"],
                                                       dict[str, dict[str, Any]]).items()}
            for head, params in overrides.pop("head_params").items():
                merged.setdefault(head, {}).update(params)
            values["head_params"] = merged
        if "flips" in overrides:
            values.pop("views", None)  # --flips/--no-flips on the command line wins over the file's views
        values.update(overrides)
        return cls.from_dict(values, source=str(path))


def _views_from_flips(values: dict[str, Any], known: set[str]) -> dict[str, Any]:
    """``values`` with the ``flips`` shorthand turned into ``views``; unknown settings refused."""
    values = dict(values)
    if "flips" in values:
        flips = _checked("flips", values.pop("flips"), bool)
        shorthand = ("original", "hflip") if flips else ("original",)
        if "views" in values and tuple(_checked("views", values["views"], tuple[str, ...])) != shorthand:
            raise KaggleTLError(f"flips = {str(flips).lower()} contradicts views = {values['views']!r}; "
                                "set one of them")
        values["views"] = shorthand
    unknown = sorted(set(values) - known)
    if unknown:
        raise KaggleTLError(f"unknown setting(s) {', '.join(unknown)}")
    return values


def _checked(name: str, value: Any, kind: Any) -> Any:
    """``value`` as the field's type, or one KaggleTLError line naming the setting and the value.

    Strict on purpose: TOML ``flips = "false"`` is a string, and a non-empty string is truthy,
    so accepting it would silently turn flips on.
    """
    origin, args = typing.get_origin(kind), typing.get_args(kind)
    if origin in (typing.Union, getattr(__import__("types"), "UnionType", None)):
        if value is None and type(None) in args:
            return None
        (kind,) = [a for a in args if a is not type(None)]
        return _checked(name, value, kind)

    def refuse(expected: str) -> KaggleTLError:
        return KaggleTLError(f"setting {name}: expected {expected}, got {value!r} ({type(value).__name__})")

    if kind is bool:
        if not isinstance(value, bool):
            raise refuse("true or false")
        return value
    if kind is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise refuse("an integer")
        return value
    if kind is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise refuse("a number")
        return float(value)
    if kind is str:
        if not isinstance(value, str):
            raise refuse("a string")
        return value
    if typing.get_origin(kind) is tuple:
        if isinstance(value, str):
            value = [v.strip() for v in value.split(",") if v.strip()]
        if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) for v in value):
            raise refuse("a list of names")
        return tuple(value)
    if typing.get_origin(kind) is dict:
        if not isinstance(value, dict) or not all(isinstance(v, dict) for v in value.values()):
            raise refuse("a table of head name -> parameters, e.g. [head_params.logreg] C = 0.2")
        return {str(k): dict(v) for k, v in value.items()}
    raise AssertionError(f"no check for {kind}")  # a new field type needs its check here


def resolve_config(config: RunConfig) -> RunConfig:
    """The complete config a run uses and saves; raises before any model is built if a setting is wrong.

    - no data: the embedded demo (``data/demo``) with EfficientNet-Lite0, unless backbones are given;
    - data but no backbones: the mission's Xception + InceptionV3;
    - every head's parameters filled in from its defaults and checked (``create_head``);
    - each backbone's identity checked (known name, image size not below its minimum).
    """
    from kaggle_tl.backbones import get_backbone_spec, is_user_model
    from kaggle_tl.heads import create_head

    changes: dict[str, Any] = {}
    if config.data is None:
        changes["data"] = DEMO_DATA
        if config.backbones is None:
            changes["backbones"] = DEMO_BACKBONES
    elif config.backbones is None:
        changes["backbones"] = MISSION_BACKBONES
    unused = sorted(set(config.head_params) - set(config.heads))
    if unused:
        raise KaggleTLError(f"setting head_params: parameters for {', '.join(unused)}, which is not among heads "
                            f"{', '.join(config.heads)}")
    params = {}
    for name in config.heads:
        head = create_head(name, random_state=config.seed, **config.head_params.get(name, {}))
        params[name] = {k: v for k, v in head.get_params().items() if k != "random_state"}
    changes["head_params"] = params
    resolved = config.replace(**changes)
    for name in resolved.backbones:
        if is_user_model(name):
            continue  # its input size comes from the model file, read when its identity is computed
        spec = get_backbone_spec(name)
        if resolved.image_size is not None and resolved.image_size < spec.min_size:
            raise KaggleTLError(f"setting image_size: {name} needs at least {spec.min_size} px, "
                                f"got {resolved.image_size}")
    return resolved
