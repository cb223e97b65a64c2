"""Tiny synthetic competitions, built in tmp_path: a few classes, a few dozen mixed images."""
from __future__ import annotations

import os
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")  # determinism and speed: tests run on the CPU

import cv2
import numpy as np
import pandas as pd
import pytest

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
