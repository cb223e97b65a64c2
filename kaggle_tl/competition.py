"""Read a Kaggle competition folder: train ids + labels, classes, test ids in submission order."""
from __future__ import annotations

import hashlib
import logging
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from kaggle_tl.config import RunConfig
from kaggle_tl.errors import KaggleTLError
from kaggle_tl.images import IMAGE_EXTENSIONS

log = logging.getLogger(__name__)


@dataclass
class Competition:
    root: Path
    classes: list[str]  # submission column order
    train_ids: list[str]
    train_paths: list[Path]
    y: np.ndarray  # (N,) int index into classes
    test_ids: list[str]  # sample_submission row order
    test_paths: list[Path]
    sample_submission: pd.DataFrame  # as read (ids as strings); fixes columns and row order
    id_column: str
    notes: list[str]  # handled oddities (ignored files, ...) recorded in the run

    @property
    def n_classes(self) -> int:
        return len(self.classes)


def read_competition(config: RunConfig, root: str | Path | None = None) -> Competition:
    """Read and validate the folder named by ``config.data`` (or ``root``)."""
    root = Path(root if root is not None else config.data)
    if not root.is_dir():
        raise KaggleTLError(f"{root}: competition folder not found")
    notes: list[str] = []
    train_dir, test_dir = root / config.train_dir, root / config.test_dir
    if not train_dir.is_dir():
        raise KaggleTLError(f"{train_dir}: train folder not found")
    labels_path = root / config.labels_csv
    if labels_path.is_file():
        train_ids, train_paths, labels = _labels_from_csv(labels_path, train_dir, config, notes)
    else:
        train_ids, train_paths, labels = _labels_from_folders(train_dir, labels_path)

    sample_path = root / config.sample_submission
    test_files = _images_by_id(test_dir) if test_dir.is_dir() else {}
    if sample_path.is_file():
        sample = _read_csv(sample_path, required=[config.id_column])
        classes = [c for c in sample.columns if c != config.id_column]
        if not classes:
            raise KaggleTLError(f"{sample_path}: no class columns besides {config.id_column!r}")
        test_ids = sample[config.id_column].tolist()
        _check_unique(test_ids, sample_path, config.id_column)
    else:
        classes = sorted(set(labels))
        test_ids = sorted(test_files)
        sample = pd.DataFrame({config.id_column: test_ids, **{c: 1.0 / len(classes) for c in classes}})
        notes.append(f"no {sample_path.name}: classes taken from the labels, test ids from {test_dir.name}/")
    if not test_ids:
        raise KaggleTLError(f"{test_dir}: no test images (a submission needs at least one)")
    missing = [i for i in test_ids if i not in test_files]
    if missing:
        raise KaggleTLError(f"{sample_path}: {len(missing)} id(s) have no image in {test_dir}/, "
                            f"e.g. {missing[:3]}")
    extra_test = len(test_files) - len(test_ids)
    if extra_test > 0:
        notes.append(f"{extra_test} image(s) in {test_dir.name}/ are not in {sample_path.name}: ignored")

    unknown = sorted(set(labels) - set(classes))
    if unknown:
        raise KaggleTLError(f"{labels_path}: label(s) {unknown[:5]} are not columns of {sample_path.name}")
    no_train = [c for c in classes if c not in set(labels)]
    if no_train:
        notes.append(f"class(es) {no_train[:5]} have no training image: their probabilities stay near 0")
    class_index = {c: i for i, c in enumerate(classes)}
    y = np.array([class_index[label] for label in labels], dtype=np.int64)
    _check_class_counts(y, classes, config.folds, labels_path)
    for note in notes:
        log.warning(note)
    return Competition(root, classes, train_ids, train_paths, y, test_ids,
                       [test_files[i] for i in test_ids], sample, config.id_column, notes)


def _read_csv(path: Path, required: list[str]) -> pd.DataFrame:
    try:
        # dtype=str: ids like "00123" must keep their zeros; keep_default_na: "NA" is a valid id.
        frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    except (pd.errors.ParserError, UnicodeDecodeError, pd.errors.EmptyDataError) as exc:
        raise KaggleTLError(f"{path}: not a readable CSV ({str(exc).splitlines()[0]})") from None
    absent = [c for c in required if c not in frame.columns]
    if absent:
        raise KaggleTLError(f"{path}: missing column(s) {absent}; found {list(frame.columns)[:8]}")
    return frame


def _check_unique(ids: list[str], path: Path, column: str) -> None:
    seen: set[str] = set()
    for row, value in enumerate(ids, start=2):  # row 1 is the header
        if value in seen:
            raise KaggleTLError(f"{path}: duplicate {column} {value!r} at row {row}")
        seen.add(value)


def _images_by_id(folder: Path) -> dict[str, Path]:
    """Map id -> path for image files directly in ``folder``; an id is the file name minus extension."""
    out: dict[str, Path] = {}
    for path in sorted(folder.iterdir()):
        if path.is_file() and path.suffix.lower() in IMAGE_EXTENSIONS:
            if path.stem in out:
                raise KaggleTLError(f"{path}: two images share the id {path.stem!r} ({out[path.stem].name})")
            out[path.stem] = path
    return out


def _labels_from_csv(labels_path: Path, train_dir: Path, config: RunConfig, notes: list[str]):
    frame = _read_csv(labels_path, required=[config.id_column, config.label_column])
    ids = [_strip_extension(i) for i in frame[config.id_column]]
    _check_unique(ids, labels_path, config.id_column)
    files = _images_by_id(train_dir)
    missing = [i for i in ids if i not in files]
    if missing:
        raise KaggleTLError(f"{labels_path}: {len(missing)} id(s) have no image in {train_dir}/, "
                            f"e.g. {missing[:3]}")
    empty = [i for i, label in zip(ids, frame[config.label_column]) if label == ""]
    if empty:
        raise KaggleTLError(f"{labels_path}: {len(empty)} row(s) have an empty {config.label_column}, "
                            f"e.g. id {empty[0]!r}")
    unlabelled = len(files) - len(ids)
    if unlabelled > 0:
        notes.append(f"{unlabelled} image(s) in {train_dir.name}/ have no row in {labels_path.name}: ignored")
    return ids, [files[i] for i in ids], frame[config.label_column].tolist()


def _strip_extension(value: str) -> str:
    suffix = Path(value).suffix.lower()
    return value[: -len(suffix)] if suffix in IMAGE_EXTENSIONS else value


def _labels_from_folders(train_dir: Path, labels_path: Path):
    ids, paths, labels = [], [], []
    for class_dir in sorted(p for p in train_dir.iterdir() if p.is_dir()):
        for image_id, path in _images_by_id(class_dir).items():
            ids.append(f"{class_dir.name}/{image_id}")
            paths.append(path)
            labels.append(class_dir.name)
    if not ids:
        raise KaggleTLError(f"{labels_path}: not found, and {train_dir}/ has no class sub-folders of images")
    return ids, paths, labels


def _check_class_counts(y: np.ndarray, classes: list[str], folds: int, labels_path: Path) -> None:
    counts = np.bincount(y, minlength=len(classes))
    small = [(classes[i], int(n)) for i, n in enumerate(counts) if 0 < n < folds]
    if small:
        name, n = small[0]
        raise KaggleTLError(f"{labels_path}: class {name!r} has {n} image(s), fewer than folds={folds}; "
                            f"lower --folds or add images ({len(small)} class(es) affected)")


def file_digest(path: Path) -> str:
    with open(path, "rb") as handle:
        return hashlib.file_digest(handle, "sha1").hexdigest()


def image_set_key(paths: list[Path], threads: int = 8) -> str:
    """Content hash of an ordered image list: a changed, added or reordered image changes it."""
    with ThreadPoolExecutor(max_workers=threads) as pool:
        digests = list(pool.map(file_digest, paths))
    return hashlib.sha1("\n".join(digests).encode()).hexdigest()


def data_fingerprint(competition: Competition, train_key: str, test_key: str) -> str:
    """Identity of a competition's data: runs are comparable only when this matches."""
    h = hashlib.sha1()
    for part in (competition.classes, competition.train_ids, competition.y.tolist(),
                 competition.test_ids, [train_key, test_key]):
        h.update(repr(part).encode())
    return h.hexdigest()[:16]
