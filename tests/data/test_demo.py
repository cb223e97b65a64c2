"""The embedded demo competition: layout, images, determinism, atomic writes, learnability."""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedKFold, cross_val_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from kaggle_tl.data import demo
from kaggle_tl.data.demo import CLASSES, ensure_demo_competition, make_demo_competition
from kaggle_tl.errors import KaggleTLError

SMALL = dict(n_train=24, n_test=6)


@pytest.fixture(scope="module")
def full_demo(tmp_path_factory) -> Path:
    """The default-size demo (300 train + 100 test), generated once for this module."""
    return make_demo_competition(tmp_path_factory.mktemp("full") / "demo")


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in root.rglob("*") if p.is_file()}


def _mtimes(root: Path) -> dict[str, int]:
    return {str(p.relative_to(root)): p.stat().st_mtime_ns for p in root.rglob("*")}


def _siblings(root: Path) -> list[str]:
    return sorted(p.name for p in root.parent.iterdir() if p != root)


def test_layout_and_labels(full_demo):
    assert sorted(p.name for p in full_demo.iterdir()) == [
        "demo.json", "labels.csv", "sample_submission.csv", "test", "train"]
    labels = pd.read_csv(full_demo / "labels.csv", dtype={"id": str})
    assert list(labels.columns) == ["id", "label"]
    assert len(labels) == 300 and labels["id"].is_unique
    assert sorted(p.stem for p in (full_demo / "train").iterdir()) == sorted(labels["id"])
    # Balanced classes, and ids that carry no hint of the label.
    assert labels["label"].value_counts().to_dict() == {c: 50 for c in CLASSES}
    assert not any(c in i for i in labels["id"] for c in CLASSES)
    test_ids = sorted(p.stem for p in (full_demo / "test").iterdir())
    assert len(test_ids) == 100
    assert not set(test_ids) & set(labels["id"])


def test_sample_submission(full_demo):
    sample = pd.read_csv(full_demo / "sample_submission.csv", dtype={"id": str})
    assert list(sample.columns) == ["id", *sorted(CLASSES)]
    assert list(sample["id"]) == sorted(p.stem for p in (full_demo / "test").iterdir())
    np.testing.assert_allclose(sample[list(CLASSES)].to_numpy(), 1 / len(CLASSES))


def test_images_decode_with_mixed_sizes_formats_and_channels(full_demo):
    paths = sorted((full_demo / "train").iterdir()) + sorted((full_demo / "test").iterdir())
    assert {p.suffix for p in paths} == {".jpg", ".png"}
    shapes = []
    for p in paths:
        img = cv2.imread(str(p), cv2.IMREAD_UNCHANGED)
        assert img is not None, p
        assert img.dtype == np.uint8 and (img.ndim == 2 or img.shape[2] == 3), (p, img.shape)
        shapes.append(img.shape)
    heights, widths = np.array([s[:2] for s in shapes]).T
    assert heights.min() >= 64 and widths.max() <= 256
    assert len({s[:2] for s in shapes}) > 200  # varied sizes...
    assert np.mean(heights != widths) > 0.9  # ...mostly not square
    n_gray = sum(len(s) == 2 for s in shapes)
    assert 0 < n_gray < len(shapes) * 0.15


def test_encode_writes_rgb_as_bgr():
    rgb = np.zeros((40, 50, 3), np.uint8)
    rgb[..., 0] = 200  # pure red in RGB
    seen = set()
    for seed in range(20):
        ext, data = demo._encode(rgb, np.random.default_rng(seed))
        decoded = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
        # Decoded BGR: red must land in the last channel, whatever the format.
        np.testing.assert_allclose(decoded.mean(axis=(0, 1)), [0, 0, 200], atol=3)
        seen.add(ext)
    assert seen == {".jpg", ".png"}


def test_same_seed_same_bytes_other_seed_differs(tmp_path):
    a = _files(make_demo_competition(tmp_path / "a", seed=3, **SMALL))
    b = _files(make_demo_competition(tmp_path / "b", seed=3, **SMALL))
    c = _files(make_demo_competition(tmp_path / "c", seed=4, **SMALL))
    assert a == b
    assert a.keys() != c.keys()  # the ids themselves depend on the seed
    assert sorted(a.values()) != sorted(c.values())


def test_ensure_reuses_a_complete_folder(tmp_path):
    root = ensure_demo_competition(tmp_path / "demo", **SMALL)
    before = _mtimes(root)
    assert ensure_demo_competition(tmp_path / "demo", **SMALL) == root
    assert _mtimes(root) == before
    assert _siblings(root) == []


@pytest.mark.parametrize("damage", ["missing_image", "empty_image", "missing_csv", "bad_csv"])
def test_ensure_regenerates_an_incomplete_folder(tmp_path, damage):
    root = make_demo_competition(tmp_path / "demo", **SMALL)
    expected = _files(root)
    victim = sorted((root / "test").iterdir())[0]
    if damage == "missing_image":
        victim.unlink()
    elif damage == "empty_image":
        victim.write_bytes(b"")
    elif damage == "missing_csv":
        (root / "labels.csv").unlink()
    else:
        (root / "sample_submission.csv").write_text("id,circle\n")
    assert not demo.is_complete_demo(root)
    ensure_demo_competition(root, **SMALL)
    assert _files(root) == expected
    assert _siblings(root) == []


def test_interrupted_generation_leaves_nothing_to_reuse(tmp_path, monkeypatch):
    calls = []
    render = demo.render_demo_image

    def render_then_interrupt(label, rng):
        calls.append(label)
        if len(calls) == 10:
            raise KeyboardInterrupt
        return render(label, rng)

    monkeypatch.setattr(demo, "render_demo_image", render_then_interrupt)
    with pytest.raises(KeyboardInterrupt):
        make_demo_competition(tmp_path / "demo", **SMALL)
    assert list(tmp_path.iterdir()) == []  # neither the target nor the temporary folder remains


def test_make_replaces_an_earlier_demo_but_not_other_folders(tmp_path):
    root = make_demo_competition(tmp_path / "demo", seed=1, **SMALL)
    make_demo_competition(root, seed=2, **SMALL)
    assert _files(root) == _files(make_demo_competition(tmp_path / "fresh", seed=2, **SMALL))
    assert _siblings(root) == ["fresh"]

    precious = tmp_path / "mine"
    precious.mkdir()
    (precious / "notes.txt").write_text("keep me")
    with pytest.raises(KaggleTLError, match="not a demo competition"):
        ensure_demo_competition(precious, **SMALL)
    assert (precious / "notes.txt").read_text() == "keep me"


def test_rejects_too_few_images(tmp_path):
    with pytest.raises(KaggleTLError, match="n_train"):
        make_demo_competition(tmp_path / "demo", n_train=5)


def _colour_histogram(img: np.ndarray) -> np.ndarray:
    return np.concatenate([np.histogram(img[..., c], 8, (0, 256))[0] / img[..., c].size
                           for c in range(3)])


def _edge_orientation_spectrum(img: np.ndarray) -> np.ndarray:
    """Rotation-invariant shape cue: |FFT| of the colour-edge orientation histogram."""
    img = cv2.resize(img, (64, 64), interpolation=cv2.INTER_AREA).astype(np.float32)
    gx, gy = cv2.Sobel(img, cv2.CV_32F, 1, 0), cv2.Sobel(img, cv2.CV_32F, 0, 1)
    strongest = (gx**2 + gy**2).argmax(axis=-1)[..., None]
    gx, gy = (np.take_along_axis(g, strongest, -1)[..., 0] for g in (gx, gy))
    magnitude, angle = cv2.cartToPolar(gx, gy)
    hist = np.histogram(angle % np.pi, 36, (0, np.pi), weights=magnitude**2)[0]
    return np.abs(np.fft.rfft(hist / (hist.sum() + 1e-6)))[1:9]


def test_learnable_from_shape_not_from_colour(full_demo):
    labels = pd.read_csv(full_demo / "labels.csv", dtype={"id": str})
    paths = {p.stem: p for p in (full_demo / "train").iterdir()}
    images = [cv2.imread(str(paths[i]), cv2.IMREAD_COLOR) for i in labels["id"]]
    model = make_pipeline(StandardScaler(), LogisticRegression(C=0.1, max_iter=3000))
    folds = StratifiedKFold(5, shuffle=True, random_state=0)

    def cv_accuracy(feature) -> float:
        X = np.array([feature(img) for img in images])
        return cross_val_score(model, X, labels["label"], cv=folds).mean()

    chance = 1 / len(CLASSES)
    # Seen with seeds 0-3: colour 0.12-0.21, edge orientations 0.39-0.45 (chance 0.17).
    assert cv_accuracy(_colour_histogram) < chance + 0.1
    assert cv_accuracy(_edge_orientation_spectrum) > chance + 0.15
