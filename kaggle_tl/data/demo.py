"""The embedded demo competition: procedurally drawn shapes in the Kaggle folder layout.

``make_demo_competition(root)`` writes::

    root/
      train/<id>.jpg|.png     labels.csv         (id,label)
      test/<id>.jpg|.png      sample_submission.csv  (id,<class>...; uniform probabilities)
      demo.json               how it was made (marks the folder as ours, safe to regenerate)

Each image holds one filled shape (its class) drawn with a random colour, size, rotation and
position over a cluttered background (gradients, smooth colour noise, lines, blobs, pixel noise).
Colour never depends on the class, so only shape separates them. Images come in mixed,
non-square sizes, as JPEG and PNG, a few in grayscale. The same seed gives the same bytes.
"""
from __future__ import annotations

import json
import logging
import os
import secrets
import shutil
import time
from pathlib import Path

import cv2
import numpy as np
import pandas as pd

from kaggle_tl.errors import KaggleTLError

logger = logging.getLogger(__name__)

CLASSES = ("circle", "cross", "ring", "square", "star", "triangle")  # sorted, as in submissions
MANIFEST = "demo.json"
GENERATOR_VERSION = 1  # bump when the drawing changes, so old folders can be told apart

_SIZE_RANGE = (64, 256)  # image side lengths in pixels
_MAX_ASPECT = 2.0
_PNG_FRACTION = 0.4
_GRAY_FRACTION = 0.06
_SHIFT = 4  # cv2 fixed-point bits: sub-pixel vertices make small shapes less jagged
_SCALE = 1 << _SHIFT


# ---------------------------------------------------------------------------------------------
# Drawing (pure: rng in, RGB uint8 array out)


def _background(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """Flat, linear-gradient or smooth-noise colour field, float32 RGB in [0, 255]."""
    kind = rng.integers(3)
    if kind == 0:
        return np.full((h, w, 3), rng.uniform(0, 255, 3), dtype=np.float32)
    if kind == 1:
        theta = rng.uniform(0, 2 * np.pi)
        yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
        t = xx * np.cos(theta) + yy * np.sin(theta)
        t = (t - t.min()) / max(float(t.max() - t.min()), 1.0)
        c0, c1 = rng.uniform(0, 255, (2, 3)).astype(np.float32)
        return c0 + t[..., None] * (c1 - c0)
    # Low-frequency noise: a tiny random grid upsampled smoothly.
    grid = rng.uniform(0, 255, (int(rng.integers(2, 6)), int(rng.integers(2, 6)), 3))
    return cv2.resize(grid.astype(np.float32), (w, h), interpolation=cv2.INTER_CUBIC).clip(0, 255)


def _random_colour(rng: np.random.Generator) -> tuple[float, float, float]:
    return tuple(float(c) for c in rng.uniform(0, 255, 3))


def _clutter(img: np.ndarray, rng: np.random.Generator, n_lines: int, n_blobs: int) -> None:
    """Draw thin random lines and small ellipses in place (distractors smaller than the object)."""
    h, w = img.shape[:2]
    side = min(h, w)
    for _ in range(n_lines):
        p0 = (int(rng.integers(w)), int(rng.integers(h)))
        p1 = (int(rng.integers(w)), int(rng.integers(h)))
        cv2.line(img, p0, p1, _random_colour(rng), int(rng.integers(1, 3)), cv2.LINE_AA)
    for _ in range(n_blobs):
        centre = (int(rng.integers(w)), int(rng.integers(h)))
        axes = (int(rng.uniform(0.02, 0.09) * side) + 1, int(rng.uniform(0.02, 0.09) * side) + 1)
        cv2.ellipse(img, centre, axes, float(rng.uniform(0, 180)), 0, 360, _random_colour(rng),
                    -1, cv2.LINE_AA)


def _star(r: float, rng: np.random.Generator) -> np.ndarray:
    inner = rng.uniform(0.38, 0.52) * r
    angles = np.arange(10) * np.pi / 5
    radii = np.where(np.arange(10) % 2 == 0, r, inner)
    return np.stack([radii * np.sin(angles), -radii * np.cos(angles)], axis=1)


def _cross(r: float, rng: np.random.Generator) -> np.ndarray:
    a = rng.uniform(0.2, 0.32) * r  # half arm width
    b = r * 0.9
    return np.array([(-a, -b), (a, -b), (a, -a), (b, -a), (b, a), (a, a),
                     (a, b), (-a, b), (-a, a), (-b, a), (-b, -a), (-a, -a)])


def _square(r: float, rng: np.random.Generator) -> np.ndarray:
    # Half-side r * 0.8 keeps its area close to the circle's, so area says little about class.
    half = r * 0.8
    aspect = rng.uniform(0.87, 1.15)
    hx, hy = half * np.sqrt(aspect), half / np.sqrt(aspect)
    return np.array([(-hx, -hy), (hx, -hy), (hx, hy), (-hx, hy)])


def _triangle(r: float, rng: np.random.Generator) -> np.ndarray:
    angles = np.arange(3) * 2 * np.pi / 3 + rng.uniform(-0.2, 0.2, 3)
    radii = r * rng.uniform(0.95, 1.15, 3)
    return np.stack([radii * np.sin(angles), -radii * np.cos(angles)], axis=1)


_POLYGONS = {"star": _star, "cross": _cross, "square": _square, "triangle": _triangle}


def _draw_object(img: np.ndarray, label: str, rng: np.random.Generator,
                 centre: tuple[float, float], r: float, colour: tuple[float, ...]) -> None:
    """Draw the class shape of radius ``r`` at ``centre`` in place, with an optional outline."""
    cx, cy = centre
    outline = rng.random() < 0.3
    edge_colour = _random_colour(rng)
    edge = int(rng.integers(1, 4))
    if label in ("circle", "ring"):
        c = (int(cx * _SCALE), int(cy * _SCALE))
        if label == "circle":
            cv2.circle(img, c, int(r * _SCALE), colour, -1, cv2.LINE_AA, _SHIFT)
            if outline:
                cv2.circle(img, c, int(r * _SCALE), edge_colour, edge, cv2.LINE_AA, _SHIFT)
        else:
            thickness = rng.uniform(0.25, 0.45) * r
            mid = r - thickness / 2
            cv2.circle(img, c, int(mid * _SCALE), colour, max(int(thickness), 2), cv2.LINE_AA,
                       _SHIFT)
        return
    pts = _POLYGONS[label](r, rng)
    theta = rng.uniform(0, 2 * np.pi)
    rot = np.array([[np.cos(theta), -np.sin(theta)], [np.sin(theta), np.cos(theta)]])
    pts = pts @ rot.T + (cx, cy)
    poly = [np.round(pts * _SCALE).astype(np.int32)]
    cv2.fillPoly(img, poly, colour, cv2.LINE_AA, _SHIFT)
    if outline:
        cv2.polylines(img, poly, True, edge_colour, edge, cv2.LINE_AA, _SHIFT)


def _contrasting_colour(rng: np.random.Generator, behind: np.ndarray) -> tuple[float, ...]:
    """A random colour at least a fixed distance from ``behind`` so the object stays visible."""
    for _ in range(30):
        colour = rng.uniform(0, 255, 3)
        if np.linalg.norm(colour - behind) > 110:
            break
    else:
        colour = 255.0 - behind
    return tuple(float(c) for c in colour)


def render_demo_image(label: str, rng: np.random.Generator) -> np.ndarray:
    """Draw one demo image of class ``label``: uint8 RGB (H, W, 3), or (H, W) when grayscale."""
    lo, hi = _SIZE_RANGE
    while True:  # rejection keeps the aspect ratio bounded without biasing towards squares
        h, w = (int(v) for v in rng.integers(lo, hi + 1, 2))
        if max(h, w) / min(h, w) <= _MAX_ASPECT:
            break
    side = min(h, w)
    img = _background(rng, h, w)
    _clutter(img, rng, int(rng.integers(0, 5)), int(rng.integers(0, 5)))

    r = rng.uniform(0.22, 0.42) * side
    margin = r * 1.05
    centre = (rng.uniform(margin, w - margin), rng.uniform(margin, h - margin))
    x, y = int(centre[0]), int(centre[1])
    patch = img[max(y - int(r), 0):y + int(r) + 1, max(x - int(r), 0):x + int(r) + 1]
    colour = _contrasting_colour(rng, patch.reshape(-1, 3).mean(axis=0))
    _draw_object(img, label, rng, centre, r, colour)
    # A few distractors on top occlude the object a little, as in real photos.
    _clutter(img, rng, int(rng.integers(0, 3)), int(rng.integers(0, 2)))

    img += rng.normal(0, rng.uniform(0, 12), img.shape).astype(np.float32)
    if rng.random() < 0.25:
        img = cv2.GaussianBlur(img, (0, 0), rng.uniform(0.5, 1.5))
    out = np.clip(img + 0.5, 0, 255).astype(np.uint8)
    if rng.random() < _GRAY_FRACTION:
        out = cv2.cvtColor(out, cv2.COLOR_RGB2GRAY)
    return out


def _encode(img: np.ndarray, rng: np.random.Generator) -> tuple[str, bytes]:
    """Encode as PNG or JPEG (random quality); returns (extension, bytes)."""
    # cv2 encoders expect BGR; grayscale passes through unchanged.
    bgr = img if img.ndim == 2 else cv2.cvtColor(img, cv2.COLOR_RGB2BGR)
    if rng.random() < _PNG_FRACTION:
        ext, params = ".png", [cv2.IMWRITE_PNG_COMPRESSION, 3]
    else:
        ext, params = ".jpg", [cv2.IMWRITE_JPEG_QUALITY, int(rng.integers(70, 96))]
    ok, buf = cv2.imencode(ext, bgr, params)
    if not ok:  # cv2 only fails here on a broken build
        raise RuntimeError(f"cv2.imencode failed for {ext}")
    return ext, buf.tobytes()


# ---------------------------------------------------------------------------------------------
# The competition folder


def _balanced_labels(n: int, rng: np.random.Generator) -> list[str]:
    return [CLASSES[i] for i in rng.permutation(np.resize(np.arange(len(CLASSES)), n))]


def _write_split(folder: Path, ids: list[str], labels: list[str], seeds: list) -> None:
    folder.mkdir()
    for image_id, label, seed in zip(ids, labels, seeds):
        rng = np.random.default_rng(seed)
        ext, data = _encode(render_demo_image(label, rng), rng)
        (folder / f"{image_id}{ext}").write_bytes(data)


def _write_competition(out: Path, n_train: int, n_test: int, seed: int) -> None:
    """Write every file of the competition into the (empty) folder ``out``."""
    seq = np.random.SeedSequence(seed)
    top_seed, *image_seeds = seq.spawn(1 + n_train + n_test)
    rng = np.random.default_rng(top_seed)
    # Random hex ids, unique across both splits, say nothing about the label.
    ids = [f"{v:08x}" for v in rng.choice(16**8, size=n_train + n_test, replace=False)]
    train_ids, test_ids = sorted(ids[:n_train]), sorted(ids[n_train:])
    train_labels = _balanced_labels(n_train, rng)
    test_labels = _balanced_labels(n_test, rng)

    _write_split(out / "train", train_ids, train_labels, image_seeds[:n_train])
    _write_split(out / "test", test_ids, test_labels, image_seeds[n_train:])
    pd.DataFrame({"id": train_ids, "label": train_labels}).to_csv(out / "labels.csv", index=False)
    sample = pd.DataFrame({"id": test_ids})
    for name in CLASSES:
        sample[name] = 1.0 / len(CLASSES)
    sample.to_csv(out / "sample_submission.csv", index=False)
    manifest = {"generator": "kaggle_tl.demo", "version": GENERATOR_VERSION, "seed": seed,
                "n_train": n_train, "n_test": n_test, "classes": list(CLASSES)}
    (out / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")


def make_demo_competition(root: str | Path, n_train: int = 300, n_test: int = 100,
                          seed: int = 0) -> Path:
    """Generate the demo competition at ``root``, replacing an earlier demo folder there.

    Files are written to a temporary sibling folder that is renamed into place at the end, so an
    interrupted run never leaves a half-written ``root``. An existing non-empty ``root`` is
    replaced only if it holds a demo manifest (``demo.json``); anything else raises
    :class:`KaggleTLError` rather than deleting a folder we did not make.

    Returns
    -------
    The resolved ``root`` path.
    """
    root = Path(root).resolve()
    if n_train < 2 * len(CLASSES) or n_test < 1:
        raise KaggleTLError(f"demo competition needs n_train >= {2 * len(CLASSES)} and "
                            f"n_test >= 1 (got n_train={n_train}, n_test={n_test})")
    if root.exists() and (not root.is_dir()
                          or any(root.iterdir()) and not (root / MANIFEST).is_file()):
        raise KaggleTLError(f"{root} exists and is not a demo competition (no {MANIFEST}); "
                            "remove it or choose another folder for the demo")
    root.parent.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    # Not tempfile.mkdtemp: its 0700 mode would survive the rename; mkdir honours the umask.
    tmp = root.parent / f".{root.name}.partial-{os.getpid()}-{secrets.token_hex(4)}"
    tmp.mkdir()
    try:
        _write_competition(tmp, n_train, n_test, seed)
        if root.exists():
            # Move the old folder aside first: rename cannot replace a non-empty directory.
            old = root.parent / f".{root.name}.old-{os.getpid()}-{secrets.token_hex(4)}"
            root.rename(old)
            try:
                tmp.rename(root)
            except BaseException:
                old.rename(root)
                raise
            shutil.rmtree(old, ignore_errors=True)
        else:
            tmp.rename(root)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    logger.info("Generated demo competition in %s: %d train + %d test images, %d classes, "
                "seed %d (%.1f s)", root, n_train, n_test, len(CLASSES), seed,
                time.perf_counter() - start)
    return root


def is_complete_demo(root: str | Path) -> bool:
    """True if ``root`` holds a demo manifest, both CSVs and every image they list."""
    root = Path(root)
    try:
        labels = pd.read_csv(root / "labels.csv", dtype={"id": str})
        sample = pd.read_csv(root / "sample_submission.csv", dtype={"id": str})
        json.loads((root / MANIFEST).read_text())
    except (OSError, ValueError):  # pandas' parse errors are ValueErrors
        return False
    if list(labels.columns) != ["id", "label"] or list(sample.columns) != ["id", *CLASSES]:
        return False
    if not set(labels["label"]) <= set(CLASSES):
        return False
    for split, ids in (("train", labels["id"]), ("test", sample["id"])):
        folder = root / split
        if not folder.is_dir():
            return False
        present = {p.stem for p in folder.iterdir() if p.stat().st_size > 0}
        if not set(ids) <= present:
            return False
    return True


def ensure_demo_competition(root: str | Path, n_train: int = 300, n_test: int = 100,
                            seed: int = 0) -> Path:
    """Return ``root``, generating the demo competition there first unless one is complete."""
    root = Path(root).resolve()
    if is_complete_demo(root):
        logger.info("Using existing demo competition in %s", root)
        return root
    if root.exists():
        logger.warning("Demo competition in %s is incomplete; regenerating it", root)
    return make_demo_competition(root, n_train=n_train, n_test=n_test, seed=seed)
