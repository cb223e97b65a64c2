"""Read a Kaggle competition folder: train ids + labels, classes, test ids in submission order."""
from __future__ import annotations

import dataclasses
import logging
import os
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from kaggle_tl.data.csvs import locate_csv, read_text_csv
from kaggle_tl.data.images import IMAGE_EXTENSIONS, find_bad_images, image_problem
from kaggle_tl.errors import KaggleTLError

log = logging.getLogger(__name__)
# Left in data folders by tools, never images: Windows' thumbnail caches and folder settings.
SYSTEM_FILES = ("thumbs.db", "ehthumbs.db", "ehthumbs_vista.db", "desktop.ini")


@dataclass(frozen=True)
class Layout:
    """Where a competition folder keeps its parts: sub-folders, CSV names and columns."""

    train_dir: str = "train"
    test_dir: str = "test"
    labels_csv: str = "labels.csv"
    sample_submission: str = "sample_submission.csv"
    id_column: str = "id"
    label_column: str = "label"


@dataclass
class Competition:
    root: Path
    layout: Layout
    classes: list[str]  # submission column order
    train_ids: list[str]
    train_paths: list[Path]
    y: np.ndarray  # (N,) int index into classes
    test_ids: list[str]  # sample_submission row order
    test_paths: list[Path]
    sample_submission: pd.DataFrame  # as read (ids as strings); fixes columns and row order
    notes: list[str]  # handled oddities (ignored files, ...) recorded in the run
    skipped_images: list[dict] = field(default_factory=list)  # {"id", "path", "problem"}: --skip-bad-train-images

    @property
    def n_classes(self) -> int:
        return len(self.classes)

    @property
    def id_column(self) -> str:
        return self.layout.id_column

    def without(self, rows: dict[int, str], note: str) -> "Competition":
        """The competition without the training ``rows`` ({row: problem}), each recorded as skipped."""
        keep = np.array([i for i in range(len(self.train_ids)) if i not in rows], dtype=np.int64)
        skipped = [{"id": self.train_ids[i], "path": str(self.train_paths[i]), "problem": problem}
                   for i, problem in sorted(rows.items())]
        return dataclasses.replace(self, train_ids=[self.train_ids[i] for i in keep],
                                   train_paths=[self.train_paths[i] for i in keep], y=self.y[keep],
                                   notes=[*self.notes, note], skipped_images=[*self.skipped_images, *skipped])

    def with_usable_images(self, bad_train: dict[int, str], bad_test: dict[int, str], skip_bad_train: bool,
                           folds: int) -> "Competition":
        """Stop on any bad test image, and on bad training images unless skipping; else leave them out.

        ``bad_*`` map row positions to problems (from the pre-scan, or from decoding). Images left
        out are recorded, and the class counts are checked again against ``folds``.
        """
        if not bad_train and not bad_test:
            return self
        found = ([(self.train_paths[i], p) for i, p in sorted(bad_train.items())]
                 + [(self.test_paths[i], p) for i, p in sorted(bad_test.items())])
        for path, problem in found:  # the full list; the error line names the first few
            log.error("unusable image %s: %s", path, problem)
        n_train_stopping = 0 if skip_bad_train else len(bad_train)
        stopping = found[len(bad_train) - n_train_stopping:]
        if stopping:
            what = ", ".join([f"{n_train_stopping} in {self.layout.train_dir}/"] * bool(n_train_stopping)
                             + [f"{len(bad_test)} in {self.layout.test_dir}/"] * bool(bad_test))
            hint = ("a submission needs every test image, so no flag skips them: replace them" if bad_test
                    else "fix or remove them, or pass --skip-bad-train-images to leave them out")
            examples = "; ".join(f"{path}: {problem}" for path, problem in stopping[:3])
            raise KaggleTLError(f"{len(stopping)} unusable image(s) ({what}; all listed in the log): {examples}"
                                f"{'; ...' if len(stopping) > 3 else ''} ({hint})")
        if len(bad_train) == len(self.train_ids):
            raise KaggleTLError(f"{self.root / self.layout.train_dir}: none of the {len(bad_train)} training images "
                                f"is usable, e.g. {found[0][0]}: {found[0][1]}")
        first = sorted(bad_train.items())[0]
        note = (f"{len(bad_train)} unusable training image(s) left out (--skip-bad-train-images), "
                f"e.g. {self.train_paths[first[0]]}: {first[1]}; all in the run record's skipped_images")
        competition = self.without(bad_train, note)
        check_class_counts(competition.y, competition.classes, folds,
                           f"{self.root / self.layout.train_dir} after leaving out unusable images")
        return competition

    def scan_images(self) -> tuple[dict[int, str], dict[int, str]]:
        """Every train and test image checked cheaply (header, declared size, end marker): {row: problem} each."""
        return find_bad_images(self.train_paths), find_bad_images(self.test_paths)


def read_competition(root: str | Path, layout: Layout = Layout()) -> Competition:
    """Read and validate a competition folder: ids, labels, classes, test ids in submission order.

    Nothing is decoded here; ``Competition.scan_images`` checks the image files cheaply and
    ``Competition.with_usable_images`` applies the bad-image policy to what it (or decoding) found.
    """
    root = Path(root)
    if not root.is_dir():
        raise KaggleTLError(f"{root}: competition folder not found")
    notes: list[str] = []
    ignored: dict[str, list[Path]] = defaultdict(list)  # kind -> paths left out of every listing
    train_dir, test_dir = root / layout.train_dir, root / layout.test_dir
    if not train_dir.is_dir():
        raise KaggleTLError(f"{train_dir}: train folder not found")
    labels_path = locate_csv(root, layout.labels_csv)
    if labels_path.is_file():
        train_ids, train_paths, labels = _labels_from_csv(labels_path, train_dir, layout, notes, ignored)
    else:
        train_ids, train_paths, labels = _labels_from_folders(train_dir, labels_path, notes, ignored)

    sample_path = locate_csv(root, layout.sample_submission)
    if not test_dir.is_dir():
        raise KaggleTLError(f"{test_dir}: test folder not found")
    test_files, test_others = _images_by_id(test_dir, ignored)
    if sample_path.is_file():
        sample = read_text_csv(sample_path, "sample submission", required=[layout.id_column])
        classes = [c for c in sample.columns if c != layout.id_column]
        if not classes:
            raise KaggleTLError(f"{sample_path}: no class columns besides {layout.id_column!r}")
        test_ids = sample[layout.id_column].tolist()
        _check_unique(test_ids, sample_path, layout.id_column)
        # Some samples name test images with their extension ("0a1b.jpg"); the id stays as written.
        test_files.update({i: test_files[_strip_extension(i)] for i in test_ids
                           if i not in test_files and _strip_extension(i) in test_files})
    else:
        classes = sorted(set(labels))
        test_ids = sorted(test_files)
        sample = pd.DataFrame({layout.id_column: test_ids, **{c: 1.0 / len(classes) for c in classes}})
        notes.append(f"no {sample_path.name}: classes taken from the labels, test ids from {test_dir.name}/")
    if not test_ids:
        raise KaggleTLError(f"{test_dir}: no test images (a submission needs at least one)")
    missing = [i for i in test_ids if i not in test_files]
    _stop_on_missing(missing, test_others, ignored["hidden"], sample_path, test_dir)
    extra_test = sorted({p.name for p in test_files.values()} - {test_files[i].name for i in test_ids})
    if extra_test:
        notes.append(f"{len(extra_test)} image(s) in {test_dir.name}/ are not in {sample_path.name}: ignored, "
                     f"e.g. {extra_test[:3]}")

    unknown = sorted(set(labels) - set(classes))
    if unknown:
        raise KaggleTLError(f"{labels_path}: label(s) {unknown[:5]} are not columns of {sample_path.name}")
    no_train = [c for c in classes if c not in set(labels)]
    if no_train:
        notes.append(f"class(es) {no_train[:5]} have no training image: their probabilities stay near 0")
    class_index = {c: i for i, c in enumerate(classes)}
    y = np.array([class_index[label] for label in labels], dtype=np.int64)
    notes.extend(_ignored_notes(ignored, root))
    for note in notes:
        log.warning(note)
    return Competition(root, layout, classes, train_ids, train_paths, y, test_ids,
                       [test_files[i] for i in test_ids], sample, notes)


def usable_competition(root: str | Path, layout: Layout, folds: int, skip_bad_train_images: bool) -> Competition:
    """``read_competition``, its images scanned and the bad-image policy applied, its classes checked for ``folds``."""
    competition = read_competition(root, layout)
    competition = competition.with_usable_images(*competition.scan_images(), skip_bad_train_images, folds)
    check_class_counts(competition.y, competition.classes, folds, competition.root / layout.labels_csv)
    return competition


def _check_unique(ids: list[str], path: Path, column: str) -> None:
    seen: set[str] = set()
    for row, value in enumerate(ids, start=2):  # row 1 is the header
        if value in seen:
            raise KaggleTLError(f"{path}: duplicate {column} {value!r} at row {row}")
        seen.add(value)


def _ignored_kind(name: str) -> str | None:
    """Why a file or folder name is never data (a hidden or system entry), or None."""
    if name.startswith("."):
        return "hidden"  # .ipynb_checkpoints, .DS_Store, ._photo.jpg (macOS resource forks)
    if name == "__MACOSX":
        return "__MACOSX"  # the resource forks macOS' zip adds
    if name.lower() in SYSTEM_FILES or name == "Icon\r":
        return "system"
    return None


def _ignored_notes(ignored: dict[str, list[Path]], root: Path) -> list[str]:
    what = {"hidden": "hidden file(s)/folder(s) (name starting with '.')",
            "__MACOSX": "__MACOSX folder(s) (macOS zip metadata)",
            "system": "system file(s) (Thumbs.db, desktop.ini, Icon)",
            "other": "file(s) that are not images kaggle_tl reads",
            "broken": "link(s) that lead nowhere (dangling, or a loop)"}
    return [f"{len(paths)} {what[kind]} ignored, e.g. {paths[0].relative_to(root)}"
            for kind, paths in ignored.items() if paths]


def _list_folder(folder: Path, ignored: dict[str, list[Path]]) -> tuple[list[Path], list[Path]]:
    """(files, sub-folders) directly in ``folder``, by name, hidden and system entries left out (and recorded)."""
    try:
        entries = sorted(os.scandir(folder), key=lambda entry: entry.name)
        files, folders = [], []
        for entry in entries:
            kind = _ignored_kind(entry.name)
            try:
                is_dir, is_file = entry.is_dir(), entry.is_file()
            except OSError:  # a symbolic link loop (ELOOP): as unreadable as a dangling link
                is_dir = is_file = False
            if kind:
                ignored[kind].append(Path(entry.path))
            elif is_dir:
                folders.append(Path(entry.path))
            elif is_file:
                files.append(Path(entry.path))
            else:
                ignored["broken"].append(Path(entry.path))
    except OSError as exc:
        raise KaggleTLError(f"{folder}: cannot list the folder ({exc.strerror or exc})") from None
    return files, folders


def _images_by_id(folder: Path, ignored: dict[str, list[Path]]) -> tuple[dict[str, Path], dict[str, Path]]:
    """Map id -> path for image files directly in ``folder``, and id -> path for its other files.

    An id is the file name minus extension. Other files are recorded in ``ignored["other"]``;
    they are returned so that an id with only, say, a GIF can be refused naming the format.
    """
    images: dict[str, Path] = {}
    others: dict[str, Path] = {}
    for path in _list_folder(folder, ignored)[0]:
        if path.suffix.lower() not in IMAGE_EXTENSIONS:
            others.setdefault(path.stem, path)
            ignored["other"].append(path)
        elif path.stem in images:
            raise KaggleTLError(f"{path}: two images share the id {path.stem!r} ({images[path.stem].name})")
        else:
            images[path.stem] = path
    return images, others


def _stop_on_missing(missing: list[str], others: dict[str, Path], hidden: list[Path], csv_path: Path,
                     folder: Path) -> None:
    """One line for ids of ``csv_path`` without an image in ``folder``: unsupported files, hidden ones, or none."""
    if not missing:
        return
    _stop_on_unsupported(missing, others, csv_path)
    _stop_on_hidden(missing, hidden, csv_path)
    raise KaggleTLError(f"{csv_path}: {len(missing)} id(s) have no image in {folder}/, e.g. {missing[:3]}")


def _stop_on_unsupported(missing: list[str], others: dict[str, Path], csv_path: Path) -> None:
    """Name the format when an id lacks an image but has a file kaggle_tl does not read (a GIF, say)."""
    found = [others[i] for i in missing if i in others]
    if found:
        problem = image_problem(found[0])
        if problem is None:  # a readable image under a foreign extension
            problem = f"the {found[0].suffix} extension is not one kaggle_tl reads ({', '.join(IMAGE_EXTENSIONS)})"
        raise KaggleTLError(f"{found[0]}: {problem} ({len(found)} id(s) of {csv_path.name} have only such a file)")


def _stop_on_hidden(missing: list[str], hidden: list[Path], csv_path: Path) -> None:
    """Say so when an id's only image is a hidden file (its name starts with "."), which is never read."""
    by_id = {_strip_extension(p.name): p for p in hidden if p.is_file()}
    found = [by_id[i] for i in missing if i in by_id]
    if found:
        raise KaggleTLError(f"{found[0]}: {len(found)} id(s) of {csv_path.name} (e.g. {found[0].name!r}) name "
                            "hidden files (starting with '.'), which kaggle_tl ignores as system files; rename "
                            "the images and their ids")


def _labels_from_csv(labels_path: Path, train_dir: Path, layout: Layout, notes: list[str],
                     ignored: dict[str, list[Path]]):
    frame = read_text_csv(labels_path, "labels", required=[layout.id_column, layout.label_column])
    ids = [_strip_extension(i) for i in frame[layout.id_column]]
    _check_unique(ids, labels_path, layout.id_column)
    files, others = _images_by_id(train_dir, ignored)
    missing = [i for i in ids if i not in files]
    _stop_on_missing(missing, others, ignored["hidden"], labels_path, train_dir)
    empty = [i for i, label in zip(ids, frame[layout.label_column]) if label == ""]
    if empty:
        raise KaggleTLError(f"{labels_path}: {len(empty)} row(s) have an empty {layout.label_column}, "
                            f"e.g. id {empty[0]!r}")
    unlabelled = sorted(files[i].name for i in set(files) - set(ids))
    if unlabelled:
        notes.append(f"{len(unlabelled)} image(s) in {train_dir.name}/ have no row in {labels_path.name}: "
                     f"ignored, e.g. {unlabelled[:3]}")
    return ids, [files[i] for i in ids], frame[layout.label_column].tolist()


def _strip_extension(value: str) -> str:
    suffix = Path(value).suffix.lower()
    return value[: -len(suffix)] if suffix in IMAGE_EXTENSIONS else value


def _labels_from_folders(train_dir: Path, labels_path: Path, notes: list[str], ignored: dict[str, list[Path]]):
    """train/<class>/<image>: one level of class folders. Loose files beside them and deeper folders are
    not read; they are counted in a note, since a user who put them there expected them to count."""
    ids, paths, labels = [], [], []
    loose, class_dirs = _list_folder(train_dir, ignored)
    deeper: list[Path] = []
    for class_dir in class_dirs:
        images, _ = _images_by_id(class_dir, ignored)
        deeper.extend(p for p in sorted(class_dir.iterdir()) if p.is_dir() and not _ignored_kind(p.name))
        for image_id, path in images.items():
            ids.append(f"{class_dir.name}/{image_id}")
            paths.append(path)
            labels.append(class_dir.name)
    if not ids:
        raise KaggleTLError(f"{labels_path}: not found, and {train_dir}/ has no class sub-folders of images")
    if loose:
        notes.append(f"{len(loose)} file(s) directly in {train_dir.name}/ have no class folder: ignored, "
                     f"e.g. {loose[0].name} (labels come from train/<class>/ folders when there is no "
                     f"{labels_path.name})")
    if deeper:
        count = sum(1 for folder in deeper for p in folder.rglob("*") if p.is_file())
        notes.append(f"{len(deeper)} folder(s) inside class folders ({count} file(s)) are not read: only "
                     f"train/<class>/<image> counts, e.g. {deeper[0].relative_to(train_dir)}")
    return ids, paths, labels


def check_class_counts(y: np.ndarray, classes: list[str], folds: int, source: Path | str) -> None:
    counts = np.bincount(y, minlength=len(classes))
    small = [(classes[i], int(n)) for i, n in enumerate(counts) if 0 < n < folds]
    if small:
        name, n = small[0]
        raise KaggleTLError(f"{source}: class {name!r} has {n} image(s), fewer than folds={folds}; "
                            f"lower --folds or add images ({len(small)} class(es) affected)")
    if np.count_nonzero(counts) < 2:
        raise KaggleTLError(f"{source}: training images of at least 2 classes are needed, found "
                            f"{[classes[i] for i in np.flatnonzero(counts)]}")
