"""The run contract: what a run folder holds, written in one place and read in one place.

Layout of ``<runs_dir>/<run_id>/`` (nothing else in kaggle_tl names these files)::

    record.json                     RunRecord: schema version, resolved config, data identity,
                                    classes and ids, backbones, one ModelRecord per model
                                    (head, its parameters, CV scores, submission path), notes,
                                    timings, versions, figures
    models/<model>/predictions.npz  Predictions: oof (V, N, W), test (V, K, M, W), views, folds, y,
                                    decisions (K + 1, P)
    plots/*.png                     figures of the best model

``pipeline.run`` writes only through ``RunRecord.save`` and ``RunRecord.save_predictions``; the
leaderboard, ensembles, figures and tests read only through ``RunRecord.load`` and
``RunRecord.predictions``. A record of another schema version is refused: an unreleased
package keeps no readers for old layouts.
"""
from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import platform
import secrets
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

from kaggle_tl.config import RunConfig
from kaggle_tl.errors import KaggleTLError
from kaggle_tl.files import atomic_write_bytes, npz_bytes, read_json, read_npz, remove_stale_temps, to_json
from kaggle_tl.tasks.metrics import Score
from kaggle_tl.tasks.task import Task

SCHEMA_VERSION = 4
RECORD_FILE = "record.json"
MODELS_DIR = "models"
PREDICTIONS_FILE = "predictions.npz"
PLOTS_DIR = "plots"
PACKAGES = ("kaggle-tl", "tensorflow", "keras", "numpy", "pandas", "scikit-learn", "opencv-python-headless", "joblib",
            "openvino")


def new_run_id() -> str:
    return f"{dt.datetime.now():%Y%m%d-%H%M%S}-{secrets.token_hex(2)}"


def claim_run_dir(parent: str | Path) -> Path:
    """A new, empty folder ``<parent>/<run id>``, created exclusively.

    Runs launched together (a grid script, jobs on a cluster sharing one runs folder) can draw
    the same second and suffix; taking the folder with an exclusive mkdir means a second run
    draws again instead of overwriting the first one's record.
    """
    Path(parent).mkdir(parents=True, exist_ok=True)
    for folder in Path(parent).iterdir():  # temporaries of runs killed mid-write (kill -9 runs no `finally`)
        if folder.is_dir():
            remove_stale_temps(folder)
    while True:
        folder = Path(parent) / new_run_id()
        try:
            folder.mkdir()
            return folder
        except FileExistsError:
            continue


def package_versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


# --------------------------------------------------------------------------- predictions
@dataclass
class Predictions:
    """One model's cross-validated predictions: every view x fold, the targets they are scored on, and the
    decision rule's parameters of each fold (what turns predictions into submission cells).

    W is the head's output width for the task (classes, tags, or 1 for a value).
    """

    views: list[str]
    oof: np.ndarray  # (V, N, W): row i predicted by the fold model that held it out, per view
    test: np.ndarray  # (V, K, M, W): every fold model's predictions of every test row, per view
    folds: np.ndarray  # (N,) outer fold of each row
    y: np.ndarray  # (N,) class index or value, or (N, L) 0/1 tags: the Task's encoding
    fitted: dict[str, np.ndarray] = field(default_factory=dict)  # (V, K) of what each fit chose (C = "auto")
    # (K + 1, P): row k the rule fold k's OOF rows are decided with (tuned on rows fold k never scores),
    # row K the rule the test rows are (tuned on every OOF row); P = 0 for rules without parameters.
    decisions: np.ndarray | None = None

    def __post_init__(self) -> None:
        # Held as stored (float32) from the start: a score computed before saving must equal one
        # computed after loading, or a cached re-run would report a different number.
        self.views = list(self.views)
        self.oof = np.asarray(self.oof, dtype=np.float32)
        self.test = np.asarray(self.test, dtype=np.float32)
        self.folds = np.asarray(self.folds, dtype=np.int64)
        self.y = np.asarray(self.y)
        self.fitted = {name: np.asarray(values, dtype=np.float64) for name, values in self.fitted.items()}
        if self.oof.ndim != 3:
            raise KaggleTLError(f"predictions of inconsistent shapes: oof {self.oof.shape}")
        n_views, n_rows, width = self.oof.shape
        n_folds = int(self.folds.max()) + 1 if len(self.folds) else 0
        self.decisions = np.asarray(np.zeros((n_folds + 1, 0)) if self.decisions is None else self.decisions,
                                    dtype=np.float64)
        if (len(self.views) != n_views or self.test.ndim != 4 or self.test.shape[0] != n_views
                or self.test.shape[1] != n_folds or self.test.shape[3] != width
                or self.y.ndim not in (1, 2) or len(self.y) != n_rows or self.folds.shape != (n_rows,)
                or self.decisions.ndim != 2 or len(self.decisions) != n_folds + 1):
            raise KaggleTLError(f"predictions of inconsistent shapes: oof {self.oof.shape}, test {self.test.shape}, "
                                f"views {len(self.views)}, y {self.y.shape}, folds {self.folds.shape}, "
                                f"decisions {self.decisions.shape}")

    @property
    def oof_mean(self) -> np.ndarray:
        """(N, C) OOF averaged over views: what the model's CV score is computed on."""
        return self.oof.mean(axis=0)

    @property
    def test_mean(self) -> np.ndarray:
        """(M, W) test predictions averaged over views x folds: what the submission is decided from."""
        return self.test.mean(axis=(0, 1))

    @property
    def test_decision(self) -> np.ndarray:
        """The decision rule's parameters for the test rows (tuned on every OOF row)."""
        return self.decisions[-1]

    def is_finite(self) -> bool:
        return bool(np.isfinite(self.oof).all() and np.isfinite(self.test).all())

    def to_bytes(self) -> bytes:
        """The .npz file's bytes (the prediction cache and the run folder hold the same file)."""
        return npz_bytes({"oof": self.oof, "test": self.test, "folds": self.folds, "y": self.y,
                          "views": np.array(self.views), "decisions": self.decisions,
                          **{f"fitted_{name}": values for name, values in self.fitted.items()}})

    @staticmethod
    def max_bytes(n_views: int, n_rows: int, n_folds: int, n_test: int, n_classes: int) -> int:
        """The most a predictions file of these sizes holds: oof, test, folds, y (tags: a row of classes),
        views, decisions and what each fit chose (float32, int64, float64), doubled for slack: the bound
        ``load`` reads within."""
        width = max(1, n_classes)
        arrays = (4 * n_views * width * (n_rows + n_folds * n_test) + 8 * n_rows * (1 + width)
                  + 8 * n_views * n_folds * 16 + 8 * (n_folds + 1) * (width + 1))
        return 2 * arrays + 65536

    @classmethod
    def load(cls, path: str | Path, max_bytes: int) -> "Predictions":
        path = Path(path)

        def build(data: dict[str, np.ndarray]) -> "Predictions":
            fitted = {name[len("fitted_"):]: values for name, values in data.items() if name.startswith("fitted_")}
            return cls([str(v) for v in data["views"]], data["oof"], data["test"], data["folds"], data["y"], fitted,
                       data["decisions"])

        preds = read_npz(path, "predictions", build, max_bytes)
        if not preds.is_finite():
            raise KaggleTLError(f"{path}: predictions hold NaN or infinite values; re-run to recompute them")
        return preds


def file_sha1(path: Path) -> str:
    with open(path, "rb") as handle:
        return hashlib.file_digest(handle, "sha1").hexdigest()


# --------------------------------------------------------------------------- records
@dataclass
class ModelRecord:
    """One model of a run: a backbone set x head, with its CV score."""

    name: str  # "<backbones>__<head>", unique within its run
    head: str
    head_params: dict[str, Any]
    backbones: list[str]
    response: str  # what the head predicted for the task: proba, tags or value
    score: Score
    optimistic: bool  # True when the head stopped early on the rows it was scored on
    recipe: str  # the feature recipe and the head's parameters in short: what tells two models apart
    predictions_sha1: str  # of models/<name>/predictions.npz: a file swapped in from elsewhere is refused
    fitted: dict[str, list] = field(default_factory=dict)  # per fold x view, what a head chose (C = "auto")
    submission: str = ""

    def to_dict(self) -> dict[str, Any]:
        values = dataclasses.asdict(self)
        values["score"] = self.score.columns()
        return values

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> "ModelRecord":
        return cls(**{**values, "score": Score.from_columns(values["score"])})


@dataclass
class RunRecord:
    """Everything the leaderboard, ensembles, scoring and figures need later, without the images."""

    run_id: str
    config: RunConfig  # the resolved config, rebuilt typed on load
    data_fingerprint: str
    image_keys: dict[str, str]  # split -> content key of its image list
    task: Task  # what the competition asks and how it is scored, rebuilt typed on load
    layout: dict[str, str]  # where the competition's parts were found (data.Layout: folders, CSV names, columns)
    submission_columns: list[str]
    train_ids: list[str]
    test_ids: list[str]
    train_paths: list[str]
    test_paths: list[str]
    backbones: list[dict[str, Any]]  # feature identities (name, weights id, size, ...)
    # Microseconds, because runs started within one second (a script, a test) must still list in
    # the order they were made; the run id's random suffix does not sort by time.
    created: str = field(default_factory=lambda: dt.datetime.now().isoformat(timespec="microseconds"))
    models: list[ModelRecord] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    skipped_images: list[dict[str, str]] = field(default_factory=list)  # id, path, problem of each left out
    cache_entries: dict[str, dict[str, str]] = field(default_factory=dict)  # kind -> {key: where it came from}
    versions: dict[str, str] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)
    plots: dict[str, str] = field(default_factory=dict)  # figure name -> file name under plots/
    schema_version: int = SCHEMA_VERSION
    run_dir: Path = field(default=Path("."), repr=False, compare=False)  # where it was found; not saved

    @property
    def competition(self) -> str:
        """The competition folder (absolute)."""
        return str(self.config.data)

    @property
    def id_column(self) -> str:
        return self.task.id_column

    @property
    def classes(self) -> list[str]:
        return list(self.task.classes)

    @property
    def random_weights(self) -> bool:
        return self.config.weights == "none"

    @property
    def views(self) -> list[str]:
        return list(self.config.views)

    @property
    def plots_dir(self) -> Path:
        return self.run_dir / PLOTS_DIR

    def model(self, name: str) -> ModelRecord:
        for entry in self.models:
            if entry.name == name or entry.head == name:
                return entry
        raise KaggleTLError(f"{self.run_dir}: run {self.run_id} has no model {name!r} "
                            f"(models: {', '.join(m.name for m in self.models) or 'none'})")

    def predictions_path(self, name: str) -> Path:
        return self.run_dir / MODELS_DIR / name / PREDICTIONS_FILE

    def predictions(self, name: str) -> Predictions:
        """A model's predictions, refused with one line unless they are the very file this run saved."""
        path = self.predictions_path(name)
        if not path.is_file():
            raise KaggleTLError(f"{path}: predictions of run {self.run_id} missing")
        if file_sha1(path) != self.model(name).predictions_sha1:
            raise KaggleTLError(f"{path}: not the predictions run {self.run_id} saved (replaced or damaged since; "
                                "its record holds another checksum)")
        width = self.task.width(self.model(name).response)
        preds = Predictions.load(path, Predictions.max_bytes(len(self.views), len(self.train_ids), self.config.folds,
                                                             len(self.test_ids), width))
        if preds.oof.shape[2] != width or preds.test.shape[2] != len(self.test_ids):
            raise KaggleTLError(f"{path}: predictions do not match the run record "
                                f"({width} output column(s), {len(self.test_ids)} test rows)")
        return preds

    # ------------------------------------------------------------------ writing
    def save_predictions(self, name: str, preds: Predictions) -> tuple[Path, str]:
        """Write a model's predictions; returns the path and the checksum its ModelRecord keeps."""
        path = self.predictions_path(name)
        data = preds.to_bytes()
        atomic_write_bytes(path, data)
        return path, hashlib.sha1(data).hexdigest()

    def save(self) -> Path:
        """(Re)write record.json atomically; called after every step so a run is never lost."""
        values = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "run_dir"}
        values["config"] = self.config.to_dict()
        values["task"] = self.task.to_dict()
        values["models"] = [m.to_dict() for m in self.models]
        path = self.run_dir / RECORD_FILE
        atomic_write_bytes(path, to_json(values))
        return path

    # ------------------------------------------------------------------ reading
    @classmethod
    def load(cls, run_dir: str | Path) -> "RunRecord":
        """The record in ``run_dir``, or one KaggleTLError line saying what is wrong with it."""
        path = Path(run_dir) / RECORD_FILE
        if not path.is_file() and Path(run_dir).is_dir():
            raise KaggleTLError(f"{path}: not a kaggle_tl run ({RECORD_FILE} missing)")
        values = read_json(path, "run record")
        if not isinstance(values, dict):
            raise KaggleTLError(f"{path}: damaged run record (not a JSON object)")
        version = values.get("schema_version")
        if version != SCHEMA_VERSION:
            raise KaggleTLError(f"{path}: run record of schema version {version}, this kaggle_tl reads "
                                f"{SCHEMA_VERSION}; re-run it with this version")
        fields = {f.name: f for f in dataclasses.fields(cls) if f.name != "run_dir"}
        missing = sorted(n for n, f in fields.items() if n not in values and f.default is dataclasses.MISSING
                         and f.default_factory is dataclasses.MISSING)
        unknown = sorted(set(values) - set(fields))
        if missing or unknown:
            raise KaggleTLError(f"{path}: damaged run record ({'missing ' + ', '.join(missing) if missing else ''}"
                                f"{'; ' if missing and unknown else ''}"
                                f"{'unknown ' + ', '.join(unknown) if unknown else ''})")
        try:
            config = RunConfig.from_dict(values["config"], source=f"{path}: saved config")
            models = [ModelRecord.from_dict(m) for m in values.get("models") or []]
            record = cls(**{**values, "config": config, "models": models, "task": Task.from_dict(values["task"])})
        except (TypeError, KeyError, ValueError, AttributeError) as exc:
            raise KaggleTLError(f"{path}: damaged run record ({type(exc).__name__}: {exc})") from None
        record.run_dir = path.parent
        return record


