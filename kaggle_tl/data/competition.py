"""Read a Kaggle competition folder: train ids, labels and the Task, test ids in submission order.

Where the parts are is found (``layouts``); what the competition asks is decided once from the label
cells and the sample submission (``tasks.detect``), and ``y`` is the Task's encoding of the cells.
"""
from __future__ import annotations

import dataclasses
import logging
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from kaggle_tl.data.archives import ImagePath, folder_label, is_archive_name
from kaggle_tl.data.csvs import locate_csv, read_text_csv
from kaggle_tl.data.folders import (Ignored, check_unique, ignored_notes, image_of, images_by_id, list_folder,
                                    stop_on_missing)
from kaggle_tl.data.images import find_bad_images
from kaggle_tl.data.layouts import (SAMPLE_CSV, TEST_CSV, TEST_DIRS, TRAIN_DIRS, Labels, Layout, find_folder,
                                    find_sample, folder_in, images_in_test_json, images_one_folder_down, read_labels,
                                    scan_folders, scan_note)
from kaggle_tl.data.tabular import SideFeatures, read_side_features
from kaggle_tl.errors import KaggleTLError
from kaggle_tl.tasks.detect import TaskSettings, class_order, detect_task
from kaggle_tl.tasks.task import Task

__all__ = ["Competition", "Layout", "read_competition", "usable_competition"]
log = logging.getLogger(__name__)


@dataclass
class Competition:
    root: Path
    layout: Layout  # as found: every part named (labels_csv "" for class-folder and file-name labels)
    task: Task  # what the competition asks: kind, classes, metric, the submission's columns
    train_ids: list[str]  # as the labels write them (class-folder labels: "<class>/<file stem>")
    train_paths: list[ImagePath]  # image files, or images inside train.zip (data.archives.ArchiveMember)
    y: np.ndarray  # task.encode(label cells): (N,) int64 class index, (N, L) uint8 tags or (N,) float64 value
    test_ids: list[str]  # sample_submission row order
    test_paths: list[ImagePath]
    sample_submission: pd.DataFrame  # as read (text); fixes columns and row order
    notes: list[str]  # handled oddities (ignored files, readings chosen, ...) recorded in the run
    skipped_images: list[dict] = field(default_factory=list)  # {"id", "path", "problem"}: --skip-bad-train-images
    side: SideFeatures | None = None  # numeric columns of the labels CSV and test.csv (data.tabular)

    @property
    def classes(self) -> list[str]:
        """Class, grade or tag names in the task's order (probabilities: the submission's columns); [] for values."""
        return list(self.task.classes)

    @property
    def n_classes(self) -> int:
        return len(self.classes)

    @property
    def id_column(self) -> str:
        """The sample submission's id column (the labels' may be named otherwise: ``layout.id_column``)."""
        return self.task.id_column

    @property
    def labels_source(self) -> Path:
        """Where the labels were read: the labels CSV, or the train folder (class folders, file names)."""
        return self.root / (self.layout.labels_csv or self.layout.train_dir)

    def without(self, rows: dict[int, str], note: str) -> "Competition":
        """The competition without the training ``rows`` ({row: problem}), each recorded as skipped."""
        keep = np.array([i for i in range(len(self.train_ids)) if i not in rows], dtype=np.int64)
        skipped = [{"id": self.train_ids[i], "path": str(self.train_paths[i]), "problem": problem}
                   for i, problem in sorted(rows.items())]
        return dataclasses.replace(self, train_ids=[self.train_ids[i] for i in keep],
                                   train_paths=[self.train_paths[i] for i in keep], y=self.y[keep],
                                   side=self.side.rows(keep) if self.side is not None else None,
                                   notes=[*self.notes, note], skipped_images=[*self.skipped_images, *skipped])

    def with_usable_images(self, bad_train: dict[int, str], bad_test: dict[int, str], skip_bad_train: bool,
                           folds: int) -> "Competition":
        """Stop on any bad test image, and on bad training images unless skipping; else leave them out.

        ``bad_*`` map row positions to problems (from the pre-scan, or from decoding). Images left
        out are recorded, and what is left is checked again against ``folds`` (``Task.fold_problem``).
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
            what = ", ".join([f"{n_train_stopping} in {_shown(self.layout.train_dir)}"] * bool(n_train_stopping)
                             + [f"{len(bad_test)} in {_shown(self.layout.test_dir)}"] * bool(bad_test))
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
        problem = competition.task.fold_problem(competition.y, folds)
        if problem:
            raise KaggleTLError(f"{self.root / self.layout.train_dir} after leaving out unusable images: {problem}")
        return competition

    def scan_images(self) -> tuple[dict[int, str], dict[int, str]]:
        """Every train and test image checked cheaply (header, declared size, end marker): {row: problem} each."""
        return find_bad_images(self.train_paths), find_bad_images(self.test_paths)


def read_competition(root: str | Path, layout: Layout = Layout(), settings: TaskSettings = TaskSettings()
                     ) -> Competition:
    """Read and validate a competition folder: where its parts are, ids, labels, the Task, test ids in
    submission order. ``layout``'s non-empty fields and ``settings`` override what is found.

    Nothing is decoded here; ``Competition.scan_images`` checks the image files cheaply and
    ``Competition.with_usable_images`` applies the bad-image policy to what it (or decoding) found.
    """
    root = Path(root)
    if not root.is_dir():
        raise KaggleTLError(f"{root}: competition folder not found")
    notes: list[str] = []
    ignored: Ignored = defaultdict(list)  # kind -> paths left out of every listing
    sample_path = find_sample(root, layout, notes)
    sample = as_read = None
    if sample_path is not None:
        as_read = read_text_csv(sample_path, "sample submission", required=[layout.id_column] * bool(layout.id_column))
        if as_read.attrs.get("row_index"):
            notes.append(f"{sample_path.name}: its first column, unnamed, numbers the rows 0, 1, 2, ...: a row index, "
                         f"left out (the submission is written without it)")
        id_column = layout.id_column or as_read.columns[0]
        if len(as_read.columns) < 2:
            raise KaggleTLError(f"{sample_path}: no target column besides the id column {id_column!r}")
        sample = as_read[[id_column, *[c for c in as_read.columns if c != id_column]]]  # the id first, as detect reads
    train_dir = find_folder(root, layout.train_dir, TRAIN_DIRS, "train", notes)
    labels = read_labels(root, train_dir, layout, sample, notes, ignored)
    if settings.negative:
        labels.targets = _one_against_the_rest(labels.targets, settings.negative, labels.source, notes)
    test_dir = find_folder(root, layout.test_dir, TEST_DIRS, "test", notes)
    shared = test_dir == train_dir  # one images/ folder: the CSVs' ids tell train from test
    if shared:
        test_files, test_others = labels.images, labels.others
    else:
        test_files, test_folders = list_folder(test_dir, ignored)
        test_files, test_others = images_by_id(test_files, ignored)
        if labels.coco:  # its test JSON names the test images (herbarium's, in sub-folders)
            test_files.update(images_in_test_json(test_dir, ignored))
        elif test_folders and sample is not None and not any(image_of(test_files, i) is not None
                                                             for i in sample.iloc[:, 0]):
            test_files, test_others = _images_one_folder_down(test_dir, test_folders, test_files, test_others,
                                                              sample, ignored, notes)
    train_paths = set(labels.paths)
    if sample is None:
        sample, test_ids, where = _sample_from_labels(root, labels, test_files, train_paths if shared else set(),
                                                      layout, test_dir)
        as_read = sample
        notes.append(f"no {layout.sample_submission or SAMPLE_CSV}: classes taken from the labels, test ids from "
                     f"{folder_label(where) if where == test_dir else where.name}")
    else:
        test_ids = sample.iloc[:, 0].tolist()
        check_unique(test_ids, sample_path, sample.columns[0])
        where = sample_path
    if not test_ids:
        raise KaggleTLError(f"{test_dir}: no test images (a submission needs at least one)")
    missing = [i for i in test_ids if image_of(test_files, i) is None]
    stop_on_missing(missing, test_others, ignored["hidden"], where, test_dir)
    test_paths = [image_of(test_files, i) for i in test_ids]
    _note_unread_images(labels, train_paths, set(test_paths), test_files, shared, train_dir, test_dir, where, notes)

    task, task_notes = detect_task(labels.targets, sample, settings, where=str(labels.where), source=labels.source)
    notes.extend(task_notes)
    y = task.encode(labels.targets, str(labels.where))
    notes.extend(_classes_without_images(task, y))
    side, side_notes = read_side_features(root, labels.csv, labels.id_column, labels.label_columns, labels.ids,
                                          sample.columns[0], test_ids)
    notes.extend(side_notes)
    notes.extend(ignored_notes(ignored, root))
    for note in notes:
        log.warning(note)
    found = Layout(train_dir=layout.train_dir or folder_in(root, train_dir),
                   test_dir=layout.test_dir or folder_in(root, test_dir),
                   labels_csv=labels.csv, sample_submission=sample_path.name if sample_path else "",
                   id_column=labels.id_column, label_column=",".join(labels.label_columns))
    return Competition(root, found, task, labels.ids, labels.paths, y, test_ids, test_paths, as_read, notes,
                       side=side)


def _one_against_the_rest(targets: pd.DataFrame, negative: str, source: str, notes: list[str]) -> pd.DataFrame:
    """The labels as a binary task: ``negative`` as 0, every other label as 1 (alaska2: Cover against the three
    algorithms' folders); one line when ``negative`` is none of them."""
    column = targets.iloc[:, 0]
    found = sorted(set(column))
    if negative not in found:
        raise KaggleTLError(f"{source}: the negative label {negative!r} is not one of the labels {found[:6]}")
    notes.append(f"labels as a binary task: {negative} is 0, {', '.join(v for v in found if v != negative)} are 1")
    return targets.assign(**{targets.columns[0]: np.where(column == negative, "0", "1")})


def _images_one_folder_down(test_dir: ImagePath, folders: list[ImagePath], files: dict[str, ImagePath],
                            others: dict[str, ImagePath], sample: pd.DataFrame, ignored: Ignored,
                            notes: list[str]) -> tuple[dict[str, ImagePath], dict[str, ImagePath]]:
    """The test images one folder down (seti's test/<id[0]>/<id>.npy), where the sample's ids name none directly
    in the test folder but name some there; else the scan folders they name (one image each); else the test
    folder's own files, as they were."""
    nested, nested_others = images_one_folder_down(folders, defaultdict(list))
    if not any(image_of(nested, i) is not None for i in sample.iloc[:, 0]):
        scans = scan_folders(folders)
        if any(image_of(scans, i) is not None for i in sample.iloc[:, 0]):  # the test scans, a folder each
            notes.append(scan_note(test_dir, folders))
            return scans, {}
        return files, others
    nested, nested_others = images_one_folder_down(folders, ignored)
    notes.append(f"{folder_label(test_dir)} has sub-folders ({folders[0].name}, ...): the test images are read from "
                 "them, as the sample's ids name them")
    return nested, nested_others


def usable_competition(root: str | Path, layout: Layout, folds: int, skip_bad_train_images: bool,
                       settings: TaskSettings = TaskSettings()) -> Competition:
    """``read_competition``, its images scanned and the bad-image policy applied, its ``y`` checked for ``folds``."""
    competition = read_competition(root, layout, settings)
    competition = competition.with_usable_images(*competition.scan_images(), skip_bad_train_images, folds)
    problem = competition.task.fold_problem(competition.y, folds)
    if problem:
        raise KaggleTLError(f"{competition.labels_source}: {problem}")
    return competition


def _sample_from_labels(root: Path, labels: Labels, test_files: dict[str, ImagePath], train_paths: set[ImagePath],
                        layout: Layout, test_dir: ImagePath) -> tuple[pd.DataFrame, list[str], ImagePath]:
    """Without a sample submission: one probability column per class (or per one-hot label column), the test
    ids from test.csv, else every image of the test folder that is not a training image (and where from)."""
    id_column = layout.id_column or labels.id_column or "id"
    test_csv = locate_csv(root, TEST_CSV)
    if test_csv.is_file():
        frame = read_text_csv(test_csv, "test ids", required=[])
        test_ids = frame[id_column if id_column in frame.columns else frame.columns[0]].tolist()
        check_unique(test_ids, test_csv, id_column)
    else:
        test_ids, test_csv = sorted(i for i, path in test_files.items() if path not in train_paths), test_dir
    targets = labels.targets
    columns = (list(targets.columns) if targets.shape[1] > 1
               else list(class_order(set(targets.iloc[:, 0].astype(str).str.strip()) - {""})))
    if not columns:
        raise KaggleTLError(f"{labels.where}: no labels to take the classes from")
    sample = pd.DataFrame({id_column: test_ids, **{c: f"{1 / len(columns):.6g}" for c in columns}}, dtype=str)
    return sample, test_ids, test_csv


def _note_unread_images(labels: Labels, train_paths: set[ImagePath], test_paths: set[ImagePath],
                        test_files: dict[str, ImagePath], shared: bool, train_dir: ImagePath, test_dir: ImagePath,
                        where: ImagePath, notes: list[str]) -> None:
    """Notes for images no row names: in the train folder (beside a labels CSV) and in the test folder (one
    ``shared`` images/ folder: an image is unread when neither names it)."""
    unlabelled = sorted(p.name for p in labels.pool.values()
                        if p not in train_paths and not (shared and p in test_paths))
    if unlabelled:
        nor = f" nor in {where.name}" if shared else ""
        notes.append(f"{len(unlabelled)} image(s) in {folder_label(train_dir)} have no row in {labels.csv}{nor}: "
                     f"ignored, e.g. {unlabelled[:3]}")
    if shared:
        return
    extra = sorted(p.name for p in test_files.values() if p not in test_paths)
    if extra:
        notes.append(f"{len(extra)} image(s) in {folder_label(test_dir)} are not in {where.name}: ignored, "
                     f"e.g. {extra[:3]}")


def _shown(folder: str) -> str:
    """A layout's image folder in a line: ``train/``, or ``train.zip``."""
    return folder if is_archive_name(folder) else f"{folder}/"


def _classes_without_images(task: Task, y: np.ndarray) -> list[str]:
    """A note for classes (or tags) the sample submits that no training image has: predicted near 0."""
    if not task.classes or y.dtype == np.float64:
        return []
    present = y.any(axis=0) if y.ndim == 2 else np.bincount(y, minlength=task.n_classes) > 0
    absent = [c for c, seen in zip(task.classes, present) if not seen]
    if not absent:
        return []
    what = "tag(s)" if y.ndim == 2 else "class(es)"
    return [f"{what} {absent[:5]} have no training image: their probabilities stay near 0"]
