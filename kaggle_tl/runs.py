"""Run records: config, data fingerprint, per-model OOF/test predictions and scores, on disk."""
from __future__ import annotations

import datetime as dt
import json
import os
import platform
import secrets
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
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise KaggleTLError(f"{path}: not a kaggle_tl run (record.json missing)") from None
    except json.JSONDecodeError as exc:
        raise KaggleTLError(f"{path}: damaged run record ({exc})") from None


def list_runs(runs_dir: str | Path) -> list[dict[str, Any]]:
    """Every complete run record under ``runs_dir``, oldest first."""
    runs_dir = Path(runs_dir)
    if not runs_dir.is_dir():
        return []
    records = []
    for path in sorted(runs_dir.glob("*/record.json")):
        try:
            records.append(json.loads(path.read_text(encoding="utf-8")))
        except (OSError, json.JSONDecodeError):
            continue  # a run killed mid-write has no usable record; it is simply not listed
    return records
