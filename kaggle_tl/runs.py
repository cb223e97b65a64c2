"""The run contract: what a run folder holds, written in one place and read in one place.

Layout of ``<runs_dir>/<run_id>/`` (nothing else in kaggle_tl names these files)::

    record.json                     RunRecord: schema version, resolved config, data identity,
                                    classes and ids, backbones, one ModelRecord per model
                                    (head, its parameters, CV scores, submission path), notes,
                                    timings, versions, figures
    models/<model>/predictions.npz  Predictions: oof (V, N, C), test (V, K, M, C), views, folds, y
    plots/*.png                     figures of the best model

``pipeline.run`` writes only through ``RunRecord.save`` and ``RunRecord.save_predictions``; the
leaderboard, ensembles, figures and tests read only through ``RunRecord.load`` and
``RunRecord.predictions``. A record of another schema version is refused: an unreleased
package keeps no readers for old layouts.
"""
from __future__ import annotations

import dataclasses
import datetime as dt
import io
import json
import os
import platform
import secrets
import zipfile
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from collections.abc import Iterable
from typing import Any

import numpy as np
import pandas as pd

from kaggle_tl import metrics
from kaggle_tl.cache import atomic_write_bytes
from kaggle_tl.errors import KaggleTLError

SCHEMA_VERSION = 2
RECORD_FILE = "record.json"
MODELS_DIR = "models"
PREDICTIONS_FILE = "predictions.npz"
PLOTS_DIR = "plots"
PACKAGES = ("kaggle-tl", "tensorflow", "keras", "numpy", "pandas", "scikit-learn", "opencv-python-headless", "joblib")


def new_run_id() -> str:
    return f"{dt.datetime.now():%Y%m%d-%H%M%S}-{secrets.token_hex(2)}"


def claim_run_dir(parent: str | Path) -> Path:
    """A new, empty folder ``<parent>/<run id>``, created exclusively.

    Runs launched together (a grid script, jobs on a cluster sharing one runs folder) can draw
    the same second and suffix; taking the folder with an exclusive mkdir means a second run
    draws again instead of overwriting the first one's record.
    """
    Path(parent).mkdir(parents=True, exist_ok=True)
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


def to_json(value: Any) -> bytes:
    return json.dumps(value, indent=1, default=str, ensure_ascii=False).encode("utf-8")


def ensure_writable(directory: str | Path, what: str) -> Path:
    """Fail now, with one line, rather than after hours of extraction."""
    directory = Path(directory)
    try:
        directory.mkdir(parents=True, exist_ok=True)
        probe = directory / f".write-test-{os.getpid()}"
        probe.write_bytes(b"ok")
        probe.unlink()
    except OSError as exc:
        raise KaggleTLError(f"{directory}: {what} folder is not writable ({exc.strerror or exc})") from None
    return directory


# --------------------------------------------------------------------------- predictions
@dataclass
class Predictions:
    """One model's cross-validated predictions: every view x fold, and the labels they are scored on."""

    views: list[str]
    oof: np.ndarray  # (V, N, C): row i predicted by the fold model that held it out, per view
    test: np.ndarray  # (V, K, M, C): every fold model's predictions of every test row, per view
    folds: np.ndarray  # (N,) outer fold of each row
    y: np.ndarray  # (N,) class index of each row

    def __post_init__(self) -> None:
        # Held as stored (float32) from the start: a score computed before saving must equal one
        # computed after loading, or a cached re-run would report a different number.
        self.views = list(self.views)
        self.oof = np.asarray(self.oof, dtype=np.float32)
        self.test = np.asarray(self.test, dtype=np.float32)
        self.folds = np.asarray(self.folds, dtype=np.int64)
        self.y = np.asarray(self.y, dtype=np.int64)
        n_views, n_rows, n_classes = self.oof.shape
        n_folds = int(self.folds.max()) + 1 if len(self.folds) else 0
        if (len(self.views) != n_views or self.test.ndim != 4 or self.test.shape[0] != n_views
                or self.test.shape[1] != n_folds or self.test.shape[3] != n_classes
                or self.y.shape != (n_rows,) or self.folds.shape != (n_rows,)):
            raise KaggleTLError(f"predictions of inconsistent shapes: oof {self.oof.shape}, test {self.test.shape}, "
                                f"views {len(self.views)}, y {self.y.shape}, folds {self.folds.shape}")

    @property
    def oof_mean(self) -> np.ndarray:
        """(N, C) OOF averaged over views: what the model's CV score is computed on."""
        return self.oof.mean(axis=0)

    @property
    def test_mean(self) -> np.ndarray:
        """(M, C) test predictions averaged over views x folds: what the submission holds."""
        return self.test.mean(axis=(0, 1))

    def score(self) -> dict[str, float]:
        """The model's CV score (metrics.score of the view-averaged OOF predictions)."""
        return metrics.score(self.y, self.oof_mean)

    def score_table(self) -> pd.DataFrame:
        """Log loss / accuracy per fold and overall, for each view and (with several) their average."""
        columns = [(view, self.oof[v]) for v, view in enumerate(self.views)]
        if len(self.views) > 1:
            columns.append(("+".join(self.views), self.oof_mean))
        rows = []
        for name, proba in columns:
            for k in range(int(self.folds.max()) + 1):
                rows.append({"view": name, "fold": str(k),
                             **metrics.score(self.y[self.folds == k], proba[self.folds == k])})
            rows.append({"view": name, "fold": "all", **metrics.score(self.y, proba)})
        return pd.DataFrame(rows)

    def save(self, path: str | Path) -> Path:
        """Write atomically as one .npz (a killed write leaves the previous file or none)."""
        buffer = io.BytesIO()
        np.savez(buffer, oof=self.oof, test=self.test, folds=self.folds, y=self.y, views=np.array(self.views))
        atomic_write_bytes(Path(path), buffer.getvalue())
        return Path(path)

    @classmethod
    def load(cls, path: str | Path) -> "Predictions":
        path = Path(path)
        try:
            with np.load(path, allow_pickle=False) as data:
                preds = cls([str(v) for v in data["views"]], data["oof"], data["test"], data["folds"], data["y"])
        except FileNotFoundError:
            raise KaggleTLError(f"{path}: predictions missing") from None
        except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as exc:
            raise KaggleTLError(f"{path}: predictions damaged ({type(exc).__name__}: {exc})") from None
        if not (np.isfinite(preds.oof).all() and np.isfinite(preds.test).all()):
            raise KaggleTLError(f"{path}: predictions hold NaN or infinite values; re-run to recompute them")
        return preds


# --------------------------------------------------------------------------- records
@dataclass
class ModelRecord:
    """One model of a run: a backbone set x head, with its CV score."""

    name: str  # "<backbones>__<head>", unique within its run
    head: str
    head_params: dict[str, Any]
    backbones: list[str]
    cv_logloss: float
    cv_logloss_se: float
    cv_accuracy: float
    cv_accuracy_se: float
    optimistic: bool  # True when the head stopped early on the rows it was scored on
    submission: str = ""


@dataclass
class RunRecord:
    """Everything the leaderboard, ensembles, scoring and figures need later, without the images."""

    run_id: str
    config: dict[str, Any]  # the resolved RunConfig, as saved
    competition: str  # absolute path of the competition folder
    data_fingerprint: str
    image_keys: dict[str, str]
    classes: list[str]
    id_column: str
    submission_columns: list[str]
    train_ids: list[str]
    test_ids: list[str]
    train_paths: list[str]
    backbones: list[dict[str, Any]]  # feature identities (name, weights id, size, ...)
    # Microseconds, because runs started within one second (a script, a test) must still list in
    # the order they were made; the run id's random suffix does not sort by time.
    created: str = field(default_factory=lambda: dt.datetime.now().isoformat(timespec="microseconds"))
    models: list[ModelRecord] = field(default_factory=list)
    random_weights: bool = False
    notes: list[str] = field(default_factory=list)
    skipped_images: list[dict[str, str]] = field(default_factory=list)  # id, path, problem of each left out
    versions: dict[str, str] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)
    plots: dict[str, str] = field(default_factory=dict)  # figure name -> file name under plots/
    schema_version: int = SCHEMA_VERSION
    run_dir: Path = field(default=Path("."), repr=False, compare=False)  # where it was found; not saved

    @property
    def views(self) -> list[str]:
        return list(self.config["views"])

    @property
    def plots_dir(self) -> Path:
        return self.run_dir / PLOTS_DIR

    def model(self, name: str) -> ModelRecord:
        for entry in self.models:
            if entry.name == name:
                return entry
        raise KaggleTLError(f"{self.run_dir}: run {self.run_id} has no model {name!r}")

    def predictions_path(self, name: str) -> Path:
        return self.run_dir / MODELS_DIR / name / PREDICTIONS_FILE

    def predictions(self, name: str) -> Predictions:
        preds = Predictions.load(self.predictions_path(name))
        if preds.oof.shape[2] != len(self.classes) or preds.test.shape[2] != len(self.test_ids):
            raise KaggleTLError(f"{self.predictions_path(name)}: predictions do not match the run record "
                                f"({len(self.classes)} classes, {len(self.test_ids)} test rows)")
        return preds

    def targets(self) -> tuple[np.ndarray, np.ndarray]:
        """(y, folds) of the run: every model of a run shares them."""
        if not self.models:
            raise KaggleTLError(f"{self.run_dir}: run {self.run_id} holds no finished model")
        preds = self.predictions(self.models[0].name)
        return preds.y, preds.folds

    # ------------------------------------------------------------------ writing
    def save_predictions(self, name: str, preds: Predictions) -> Path:
        path = self.predictions_path(name)
        path.parent.mkdir(parents=True, exist_ok=True)
        return preds.save(path)

    def save(self) -> Path:
        """(Re)write record.json atomically; called after every step so a run is never lost."""
        self.run_dir.mkdir(parents=True, exist_ok=True)
        values = dataclasses.asdict(self)
        del values["run_dir"]
        path = self.run_dir / RECORD_FILE
        atomic_write_bytes(path, to_json(values))
        return path

    # ------------------------------------------------------------------ reading
    @classmethod
    def load(cls, run_dir: str | Path) -> "RunRecord":
        """The record in ``run_dir``, or one KaggleTLError line saying what is wrong with it."""
        path = Path(run_dir) / RECORD_FILE
        try:
            values = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise KaggleTLError(f"{path}: not a kaggle_tl run ({RECORD_FILE} missing)") from None
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise KaggleTLError(f"{path}: damaged run record ({exc})") from None
        if not isinstance(values, dict):
            raise KaggleTLError(f"{path}: damaged run record (not a JSON object)")
        version = values.get("schema_version")
        if version != SCHEMA_VERSION:
            raise KaggleTLError(f"{path}: run record of schema version {version}, this kaggle_tl reads "
                                f"{SCHEMA_VERSION}; re-run it with this version")
        names = {f.name for f in dataclasses.fields(cls)} - {"run_dir"}
        model_names = {f.name for f in dataclasses.fields(ModelRecord)}
        try:
            missing = sorted(n for n in names if n not in values and cls.__dataclass_fields__[n].default
                             is dataclasses.MISSING and cls.__dataclass_fields__[n].default_factory
                             is dataclasses.MISSING)
            if missing:
                raise KaggleTLError(f"{path}: damaged run record (missing {', '.join(missing)})")
            models = []
            for i, entry in enumerate(values.get("models") or []):
                lacking = sorted(model_names - set(entry) - {"submission"}) if isinstance(entry, dict) else ["all"]
                if lacking:
                    raise KaggleTLError(f"{path}: damaged run record (model {i} lacks {', '.join(lacking)})")
                models.append(ModelRecord(**{k: entry[k] for k in model_names if k in entry}))
            record = cls(**{k: values[k] for k in names if k in values and k != "models"}, models=models)
        except TypeError as exc:
            raise KaggleTLError(f"{path}: damaged run record ({exc})") from None
        record.run_dir = path.parent
        return record


def oldest_first(records: Iterable[RunRecord]) -> list[RunRecord]:
    """Runs in the order they were made: "the newest run" everywhere is the last of these."""
    return sorted(records, key=lambda r: (r.created, r.run_id))


def list_runs(runs_dir: str | Path) -> tuple[list[RunRecord], list[str]]:
    """Every readable run under ``runs_dir`` oldest first, and one line for each that is not.

    A folder without record.json is a run still in progress (or killed before its first
    record) and is passed over quietly; a damaged record is named.
    """
    runs_dir = Path(runs_dir)
    if not runs_dir.is_dir():
        return [], []
    records, problems = [], []
    for path in sorted(runs_dir.glob(f"*/{RECORD_FILE}")):
        try:
            records.append(RunRecord.load(path.parent))
        except KaggleTLError as exc:
            problems.append(f"left out: {exc}")
    return oldest_first(records), problems


def resolve_run_dir(run: str | Path, runs_dir: str | Path) -> Path:
    """A run folder from a run id (under ``runs_dir``) or a path to the folder itself."""
    for candidate in (Path(runs_dir) / str(run), Path(run)):
        if (candidate / RECORD_FILE).is_file():
            return candidate
    raise KaggleTLError(f"{run}: no run with that id in {runs_dir}/ and not a run folder (no {RECORD_FILE}); "
                        f"`kaggle-tl leaderboard --runs-dir {runs_dir}` lists the runs")


def select_runs(records: list[RunRecord], data: str | Path | None = None,
                fingerprint: str | None = None) -> tuple[list[RunRecord], list[str]]:
    """The runs of one data set: filtered by competition folder and/or fingerprint (a prefix will do).

    Runs on different data are never mixed: when the filter leaves several data fingerprints
    (no filter, or the folder's images changed between runs), the newest run's is kept and
    each other one is named in the returned notes.
    """
    if data is not None:
        folder = str(Path(data).resolve())
        records = [r for r in records if r.competition == folder]
    if fingerprint:
        records = [r for r in records if r.data_fingerprint.startswith(fingerprint)]
    if not records:
        return [], []
    newest = oldest_first(records)[-1].data_fingerprint
    notes = []
    for other in sorted({r.data_fingerprint for r in records} - {newest}):
        others = [r for r in records if r.data_fingerprint == other]
        notes.append(f"{len(others)} run(s) on other data not shown: fingerprint {other} "
                     f"({others[-1].competition}); select them with --fingerprint {other}")
    return [r for r in records if r.data_fingerprint == newest], notes


def with_models(records: list[RunRecord]) -> tuple[list[RunRecord], list[str]]:
    """The runs holding at least one finished model, and a note naming the others."""
    kept = [r for r in records if r.models]
    empty = [r.run_id for r in records if not r.models]
    return kept, ([f"{len(empty)} run(s) without a finished model left out ({', '.join(empty[:5])})"] if empty else [])


def same_folds_as_newest(records: list[RunRecord]) -> tuple[list[RunRecord], list[str]]:
    """The runs (of one data set) cross-validated on the newest run's labels and folds, and a note on the rest."""
    records, notes = with_models(records)
    if not records:
        return [], notes
    y, folds = records[-1].targets()
    kept, skipped = [], []
    for record in records:
        other_y, other_folds = record.targets()
        if np.array_equal(other_y, y) and np.array_equal(other_folds, folds):
            kept.append(record)
        else:
            skipped.append(record.run_id)
    if skipped:
        notes.append(f"{len(skipped)} run(s) on other folds left out ({', '.join(skipped[:5])}): "
                     f"different --folds or --seed from run {records[-1].run_id}")
    return kept, notes


def check_comparable(records: list[RunRecord]) -> tuple[np.ndarray, np.ndarray]:
    """Raise unless every run has the same data and folds; return their shared (y, folds).

    Models from runs on different data cannot be combined at all; models cross-validated on
    different folds cannot be stacked or weighted honestly, because each row's OOF predictions
    would come from models that saw different rows.
    """
    if not records:
        raise KaggleTLError("no runs to ensemble; pass --runs RUN_ID ... or --all")
    first = records[0]
    y, folds = first.targets()
    for record in records[1:]:
        pair = f"runs {first.run_id} and {record.run_id}"
        if record.data_fingerprint != first.data_fingerprint:
            raise KaggleTLError(f"{pair} are on different data (fingerprints {first.data_fingerprint} "
                                f"and {record.data_fingerprint}); ensemble runs of one data set only")
        for name in ("classes", "test_ids", "train_ids"):
            if getattr(record, name) != getattr(first, name):
                raise KaggleTLError(f"{pair} have different {name}; ensemble runs of one data set only")
        other_y, other_folds = record.targets()
        if not np.array_equal(other_y, y):
            raise KaggleTLError(f"{pair} have different training labels; ensemble runs of one data set only")
        if not np.array_equal(other_folds, folds):
            raise KaggleTLError(f"{pair} were cross-validated on different folds (other --folds or --seed); "
                                "re-run one with the other's folds and seed to ensemble them")
    return y, folds


# --------------------------------------------------------------------------- models across runs
@dataclass
class RunModel:
    """One model of one run with its predictions: the unit the leaderboard and ensembles rank."""

    run: RunRecord
    entry: ModelRecord
    predictions: Predictions

    @property
    def key(self) -> str:
        """Unique across runs: ``<run_id>/<model name>``."""
        return f"{self.run.run_id}/{self.entry.name}"

    @property
    def settings(self) -> tuple:
        """What else must match for two models' features to be comparable (weights, size, views)."""
        config = self.run.config
        return (str(config.get("weights")), str(config.get("image_size")), str(config.get("resize")),
                tuple(self.predictions.views))


def load_models(records: list[RunRecord]) -> list[RunModel]:
    """Every finished model of the given runs, predictions loaded."""
    return [RunModel(record, entry, record.predictions(entry.name)) for record in records for entry in record.models]
