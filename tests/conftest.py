"""Tiny synthetic competitions, built in tmp_path: a few classes, a few dozen mixed images."""
from __future__ import annotations

import datetime as dt
import os
import zlib
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")  # determinism and speed: tests run on the CPU

import cv2
import numpy as np
import pandas as pd
import pytest
from scipy.special import softmax

from kaggle_tl.config import RunConfig
from kaggle_tl.data.digests import image_set_key
from kaggle_tl.runs.record import ModelRecord, Predictions, RunRecord
from kaggle_tl.tasks.evaluate import model_score
from kaggle_tl.tasks.task import Task

SHARED_DATASETS = Path(__file__).resolve().parents[2] / "shared" / "datasets"
CLASSES = ["blue", "green", "red"]


def draw_image(label: str, rng: np.random.Generator, size: tuple[int, int]) -> np.ndarray:
    """An RGB image whose class is its dominant colour: easy to separate on purpose."""
    h, w = size
    image = rng.integers(0, 60, (h, w, 3), dtype=np.uint8)
    channel = {"red": 0, "green": 1, "blue": 2}[label]
    y0, x0 = rng.integers(0, h // 3), rng.integers(0, w // 3)
    image[y0:y0 + h // 2, x0:x0 + w // 2, channel] = rng.integers(180, 255)
    return image


def write_image(path: Path, rgb: np.ndarray) -> None:
    ok, data = cv2.imencode(path.suffix, cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    assert ok
    path.write_bytes(data.tobytes())


def write_dicom(path: Path, pixels: np.ndarray, photometric: str = "MONOCHROME2", window: tuple | None = None,
                rescale: tuple[float, float] = (1.0, 0.0)) -> None:
    """A DICOM file as scanners write them (preamble, file meta, explicit VR little endian, uncompressed), by
    pydicom: ``pixels`` (H, W) or (frames, H, W) integers, the window (center, width) and rescale (slope,
    intercept) when given. Its UIDs follow from the file's name, so the same call writes the same bytes."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, MRImageStorage, generate_uid
    uid = generate_uid(entropy_srcs=[path.parent.name, path.name])
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID = MRImageStorage, uid
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    dataset = Dataset()
    dataset.file_meta, dataset.SOPClassUID, dataset.SOPInstanceUID, dataset.Modality = meta, MRImageStorage, uid, "MR"
    dataset.set_pixel_data(pixels, photometric, bits_stored=8 * pixels.dtype.itemsize)
    if window is not None:
        dataset.WindowCenter, dataset.WindowWidth = window
    dataset.RescaleSlope, dataset.RescaleIntercept = rescale
    path.parent.mkdir(parents=True, exist_ok=True)
    dataset.save_as(path, enforce_file_format=True)


def random_pngs(folder: Path, n: int, seed: int = 0) -> list[Path]:
    """``n`` small PNGs of random pixels in ``folder`` (im00.png, im01.png, ...): images for the cache's tests."""
    rng = np.random.default_rng(seed)
    paths = []
    for i in range(n):
        path = folder / f"im{i:02d}.png"
        ok, data = cv2.imencode(".png", rng.integers(0, 255, (20, 24, 3), dtype=np.uint8))
        assert ok
        path.write_bytes(data.tobytes())
        paths.append(path)
    return paths


def make_competition(root: Path, n_per_class: int = 10, n_test: int = 9, seed: int = 0,
                     classes: list[str] = CLASSES) -> Path:
    """Kaggle layout with mixed sizes and JPEG/PNG; test ids shuffled in sample_submission."""
    rng = np.random.default_rng(seed)
    (root / "train").mkdir(parents=True)
    (root / "test").mkdir()
    rows = []
    for i in range(n_per_class * len(classes)):
        label = classes[i % len(classes)]
        image_id = f"tr{i:03d}"
        ext = ".png" if i % 3 == 0 else ".jpg"
        size = (int(rng.integers(40, 120)), int(rng.integers(40, 120)))
        write_image(root / "train" / f"{image_id}{ext}", draw_image(label, rng, size))
        rows.append((image_id, label))
    pd.DataFrame(rows, columns=["id", "label"]).to_csv(root / "labels.csv", index=False)
    test_ids = [f"te{i:03d}" for i in range(n_test)]
    for i, image_id in enumerate(test_ids):
        ext = ".png" if i % 2 else ".jpg"
        write_image(root / "test" / f"{image_id}{ext}", draw_image(classes[i % len(classes)], rng, (64, 80)))
    order = list(rng.permutation(test_ids))
    sample = pd.DataFrame({"id": order, **{c: 1 / len(classes) for c in classes}})
    sample.to_csv(root / "sample_submission.csv", index=False)
    return root


@pytest.fixture(autouse=True)
def private_digest_cache(tmp_path_factory, monkeypatch):
    """Weights digests are remembered under $XDG_CACHE_HOME: keep the tests' out of the user's."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path_factory.getbasetemp() / "xdg-cache"))


@pytest.fixture
def competition(tmp_path: Path) -> Path:
    return make_competition(tmp_path / "comp")


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch) -> Path:
    """Run in a fresh folder so cache/, runs/ and submissions/ land in tmp."""
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    return work


def blobs(n_per_class=40, n_classes=3, dim=32, seed=0, spread=0.6):
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(n_classes, dim)) * 3
    y = np.repeat(np.arange(n_classes), n_per_class)
    X = (centres[y] + rng.normal(scale=spread, size=(len(y), dim))).astype(np.float32)
    order = rng.permutation(len(y))
    return X[order], y[order]


VIEWS = ["original", "hflip"]


def class_task(n_classes: int = 3, metric: str = "log_loss") -> Task:
    """A multiclass task of classes c0, c1, ...: one probability column each (the Dog Breed shape) for log loss,
    else one label column (the Cassava shape)."""
    classes = tuple(f"c{i}" for i in range(n_classes))
    columns = classes if metric in ("log_loss", "roc_auc") else ("label",)
    return Task("multiclass", metric, id_column="id", target_columns=columns, classes=classes)


def competition_labels(competition: Path) -> tuple[list[str], np.ndarray, list[str], list[str]]:
    """(classes, y, train ids, test ids) of a conftest competition, as pipeline.run reads them."""
    labels = pd.read_csv(competition / "labels.csv", dtype=str)
    sample = pd.read_csv(competition / "sample_submission.csv", dtype={"id": str})
    classes = [c for c in sample.columns if c != "id"]
    y = np.array([classes.index(label) for label in labels["label"]])
    return classes, y, labels["id"].tolist(), sample["id"].tolist()


def make_run(runs_dir: Path, competition: Path, run_id: str, models: dict[str, tuple[list[str], float]],
             fingerprint: str = "fp-a", seed: int = 42, folds: int = 5, minutes: int | None = 0,
             head: str = "logreg", optimistic: bool = False, metric: str = "log_loss") -> RunRecord:
    """A run of ``models``: name -> (backbones, signal); a larger signal gives a better model.

    ``minutes`` after a fixed time stamps the run; None leaves the record's own "now" stamp.
    """
    classes, y, train_ids, test_ids = competition_labels(competition)
    task = Task("multiclass", metric, id_column="id", target_columns=tuple(classes), classes=tuple(classes))
    fold_ids = task.make_folds(y, folds, seed)
    rng = np.random.default_rng(zlib.crc32(run_id.encode()))
    config = RunConfig(data=str(competition.resolve()), backbones=tuple(models[next(iter(models))][0]),
                       weights="none", folds=folds, seed=seed, runs_dir=str(runs_dir))
    test_paths = [p.resolve() for i in test_ids for p in (competition / "test").glob(f"{i}.*")]
    record = RunRecord(
        run_id=run_id, config=config, data_fingerprint=fingerprint,
        image_keys={"train": "k1", "test": image_set_key(test_paths)}, task=task,
        layout={"train_dir": "train", "test_dir": "test", "labels_csv": "labels.csv",
                "sample_submission": "sample_submission.csv", "id_column": "id", "label_column": "label"},
        submission_columns=["id", *classes], train_ids=train_ids, test_ids=test_ids,
        train_paths=[str(p.resolve()) for i in train_ids for p in (competition / "train").glob(f"{i}.*")],
        test_paths=[str(p) for p in test_paths], backbones=[], run_dir=runs_dir / run_id)
    if minutes is not None:
        record.created = (dt.datetime(2024, 5, 1, 12) + dt.timedelta(minutes=minutes)).isoformat()
    for name, (backbones, signal) in models.items():
        onehot = np.eye(len(classes))[y]
        oof = softmax(rng.normal(0, 1, (len(VIEWS), len(y), len(classes))) + signal * onehot, axis=2)
        test = softmax(rng.normal(0, 1, (len(VIEWS), folds, len(test_ids), len(classes))), axis=3)
        preds = Predictions(VIEWS, oof, test, fold_ids, y)
        _, sha1 = record.save_predictions(name, preds)
        record.models.append(ModelRecord(
            name=name, head=name.split("__")[-1] if "__" in name else head, head_params={}, backbones=backbones,
            response="proba", score=model_score(task, preds), optimistic=optimistic, recipe=f"signal {signal}", predictions_sha1=sha1,
            submission=f"submissions/{run_id}_{name}.csv"))
    record.save()
    return record
