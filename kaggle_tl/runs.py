"""Run records: config, data fingerprint, per-model OOF/test predictions and scores, on disk."""
from __future__ import annotations

import datetime as dt
import json
import os
import platform
import secrets
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

from kaggle_tl.cache import atomic_write_bytes
from kaggle_tl.errors import KaggleTLError

PACKAGES = ("kaggle-tl", "tensorflow", "keras", "numpy", "pandas", "scikit-learn", "opencv-python-headless", "joblib")


def new_run_id() -> str:
    return f"{dt.datetime.now():%Y%m%d-%H%M%S}-{secrets.token_hex(2)}"


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


def save_model_predictions(run_dir: Path, model_name: str, oof: np.ndarray, test: np.ndarray,
                           views: list[str]) -> Path:
    """Store (V, N, C) OOF and (V, K, M, C) test predictions of one model (backbones x head)."""
    folder = run_dir / "models" / model_name
    folder.mkdir(parents=True, exist_ok=True)
    for name, array in (("oof", oof), ("test", test)):
        tmp = folder / f".{name}.tmp.npy"
        np.save(tmp, array.astype(np.float32))
        os.replace(tmp, folder / f"{name}.npy")
    atomic_write_bytes(folder / "views.json", to_json(views))
    return folder


def write_record(run_dir: Path, record: dict[str, Any]) -> Path:
    path = run_dir / "record.json"
    atomic_write_bytes(path, to_json(record))
    return path


def load_record(run_dir: str | Path) -> dict[str, Any]:
    path = Path(run_dir) / "record.json"
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise KaggleTLError(f"{path}: not a kaggle_tl run (record.json missing)") from None
    except json.JSONDecodeError as exc:
        raise KaggleTLError(f"{path}: damaged run record ({exc})") from None
    record["run_dir"] = str(path.parent)  # where it was found, not where it was written
    return record


def list_runs(runs_dir: str | Path) -> list[dict[str, Any]]:
    """Every complete run record under ``runs_dir``, oldest first, each with its ``run_dir``."""
    runs_dir = Path(runs_dir)
    if not runs_dir.is_dir():
        return []
    records = []
    for path in sorted(runs_dir.glob("*/record.json")):
        try:
            record = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError):
            continue  # a run killed mid-write has no usable record; it is simply not listed
        if isinstance(record, dict) and "run_id" in record and "data_fingerprint" in record:
            record["run_dir"] = str(path.parent)
            records.append(record)
    return records


# --------------------------------------------------------------------------- reading runs back
@dataclass
class ModelPredictions:
    """One model (backbone set x head) of one run, with its per-view, per-fold predictions."""

    run_id: str
    name: str  # "<backbones>__<head>", unique within its run
    head: str
    backbones: list[str]
    views: list[str]
    settings: dict[str, Any]  # what else must match for two models to be compared (weights, size)
    cv_logloss: float
    cv_accuracy: float
    oof: np.ndarray  # (V, N, C)
    test: np.ndarray  # (V, K, M, C)

    @property
    def key(self) -> str:
        """Unique across runs: ``<run_id>/<name>``."""
        return f"{self.run_id}/{self.name}"

    @property
    def oof_mean(self) -> np.ndarray:
        """(N, C) OOF averaged over views: what the run's own CV score is computed on."""
        return self.oof.mean(axis=0)

    @property
    def test_mean(self) -> np.ndarray:
        """(M, C) test predictions averaged over views and folds: what the run submitted."""
        return self.test.mean(axis=(0, 1))


def resolve_run_dir(run: str | Path, runs_dir: str | Path) -> Path:
    """A run folder from a run id (under ``runs_dir``) or a path to the folder itself."""
    for candidate in (Path(runs_dir) / str(run), Path(run)):
        if (candidate / "record.json").is_file():
            return candidate
    raise KaggleTLError(f"{run}: no run with that id in {runs_dir}/ and not a run folder (no record.json); "
                        f"`kaggle-tl leaderboard --runs-dir {runs_dir}` lists the runs")


def select_runs(records: list[dict[str, Any]], data: str | Path | None = None,
                fingerprint: str | None = None) -> tuple[list[dict[str, Any]], list[str]]:
    """The runs of one data set: filtered by competition folder and/or fingerprint (a prefix will do).

    Runs on different data are never mixed: when the filter leaves several data fingerprints
    (no filter, or the folder's images changed between runs), the newest run's is kept and
    each other one is named in the returned notes.
    """
    if data is not None:
        folder = str(Path(data).resolve())
        records = [r for r in records if r.get("competition") == folder]
    if fingerprint:
        records = [r for r in records if str(r.get("data_fingerprint", "")).startswith(fingerprint)]
    if not records:
        return [], []
    newest = max(records, key=lambda r: (r.get("created", ""), r.get("run_id", "")))["data_fingerprint"]
    notes = []
    for other in sorted({r["data_fingerprint"] for r in records} - {newest}):
        others = [r for r in records if r["data_fingerprint"] == other]
        notes.append(f"{len(others)} run(s) on other data not shown: fingerprint {other} "
                     f"({others[-1].get('competition')}); select them with --fingerprint {other}")
    return [r for r in records if r["data_fingerprint"] == newest], notes


def load_models(record: dict[str, Any]) -> list[ModelPredictions]:
    """Every model of a run, predictions loaded from ``models/<name>/``."""
    run_dir = Path(record["run_dir"])
    config = record.get("config", {})
    models = []
    for entry in record.get("models", []):
        folder = run_dir / "models" / entry["name"]
        try:
            oof, test = np.load(folder / "oof.npy"), np.load(folder / "test.npy")
        except (OSError, ValueError) as exc:
            raise KaggleTLError(f"{folder}: predictions missing or damaged ({exc})") from None
        views = entry.get("views") or json.loads((folder / "views.json").read_text(encoding="utf-8"))
        models.append(ModelPredictions(
            run_id=record["run_id"], name=entry["name"], head=entry["head"],
            backbones=list(entry.get("backbones") or config.get("backbones", [])), views=list(views),
            settings={"weights": config.get("weights"), "image_size": config.get("image_size")},
            cv_logloss=float(entry["cv_logloss"]), cv_accuracy=float(entry["cv_accuracy"]), oof=oof, test=test))
    return models


def load_targets(record: dict[str, Any]) -> tuple[np.ndarray, np.ndarray]:
    """(y, folds) of a run: the labels and the outer folds its models were cross-validated with."""
    run_dir = Path(record["run_dir"])
    try:
        return np.load(run_dir / "y.npy"), np.load(run_dir / "folds.npy")
    except (OSError, ValueError) as exc:
        raise KaggleTLError(f"{run_dir}: y.npy or folds.npy missing or damaged ({exc})") from None


def check_comparable(records: list[dict[str, Any]]) -> tuple[np.ndarray, np.ndarray]:
    """Raise unless every run has the same data and folds; return their shared (y, folds).

    Models from runs on different data cannot be combined at all; models cross-validated on
    different folds cannot be stacked or weighted honestly, because each row's OOF predictions
    would come from models that saw different rows.
    """
    if not records:
        raise KaggleTLError("no runs to ensemble; pass --runs RUN_ID ... or --all")
    first = records[0]
    y, folds = load_targets(first)
    for record in records[1:]:
        pair = f"runs {first['run_id']} and {record['run_id']}"
        if record.get("data_fingerprint") != first.get("data_fingerprint"):
            raise KaggleTLError(f"{pair} are on different data (fingerprints {first.get('data_fingerprint')} "
                                f"and {record.get('data_fingerprint')}); ensemble runs of one data set only")
        for field_name in ("classes", "test_ids"):
            if field_name in first and record.get(field_name) != first.get(field_name):
                raise KaggleTLError(f"{pair} have different {field_name}; ensemble runs of one data set only")
        other_y, other_folds = load_targets(record)
        if not np.array_equal(other_y, y):
            raise KaggleTLError(f"{pair} have different training labels (y.npy); ensemble runs of one data set only")
        if not np.array_equal(other_folds, folds):
            raise KaggleTLError(f"{pair} were cross-validated on different folds (folds.npy: other --folds or "
                                f"--seed); re-run one with the other's folds and seed to ensemble them")
    return y, folds


def same_folds_as_newest(records: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], list[str]]:
    """The runs (of one data set) cross-validated on the newest run's labels and folds, and a note on the rest."""
    if not records:
        return [], []
    y, folds = load_targets(records[-1])
    kept, skipped = [], []
    for record in records:
        other_y, other_folds = load_targets(record)
        if np.array_equal(other_y, y) and np.array_equal(other_folds, folds):
            kept.append(record)
        else:
            skipped.append(record["run_id"])
    notes = [f"{len(skipped)} run(s) on other folds left out ({', '.join(skipped[:5])}): "
             f"different --folds or --seed from run {records[-1]['run_id']}"] if skipped else []
    return kept, notes
