"""Where a competition folder keeps its parts, found without flags (docs/dev/competition-layouts.md).

Images: ``train/`` + ``test/``, ``train_images/`` + ``test_images/``, or one ``images/`` folder holding
both (told apart by the CSVs' ids). Labels: the CSV among train.csv, train_labels.csv and labels.csv
whose id column names the training images (imet's labels.csv maps attribute ids to names instead),
else a COCO-style JSON of the images and their categories (``coco``: herbarium, iwildcam-2020), else the
categories an archive holds beside its images (cdiscount's ``train.bson``), else class
sub-folders (``train/<label>/``), else labels in the file names (``train/cat.0.jpg``). Its
id column is the sample submission's (else its first), its label columns those named like the
sample's targets (else its one other column, or the one holding the sample's class columns as cells).
A non-empty ``Layout`` field overrides what is found.
"""
from __future__ import annotations

import os
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

import pandas as pd

from kaggle_tl.data.archives import (ARCHIVE_SUFFIXES, ArchiveMember, ImagePath, archive_fields, archive_notes,
                                     archive_stem, folder_label, is_archive, is_records, open_archive)
from kaggle_tl.data.coco import FOLDER_JSON, find_json, read_coco
from kaggle_tl.data.csvs import COMPRESSED_SUFFIXES, locate_csv, read_text_csv
from kaggle_tl.data.dicom import DICOM_EXTENSIONS, scan_series
from kaggle_tl.data.folders import (Ignored, check_unique, ignored_kind, image_of, images_by_id, list_folder,
                                    stop_on_missing)
from kaggle_tl.data.images import IMAGE_EXTENSIONS
from kaggle_tl.errors import KaggleTLError

TRAIN_DIRS = ("train", "train_images", "images")
TEST_DIRS = ("test", "test_images", "images")
LABEL_CSVS = ("train.csv", "train_labels.csv", "labels.csv")
SAMPLE_CSV = "sample_submission.csv"
TEST_CSV = "test.csv"
# Images that are pictures, not DICOM: where a competition ships both (siim-isic-melanoma's train/*.dcm and
# jpeg/train/*.jpg, the same images), the pictures are read: smaller, and decoded at reduced size.
PICTURE_EXTENSIONS = tuple(e for e in IMAGE_EXTENSIONS if e not in DICOM_EXTENSIONS)
# Labels in file names (dogs-vs-cats' cat.0.jpg): at most this many distinct prefixes, each on two files or more.
MAX_NAME_LABELS = 20


@dataclass(frozen=True)
class Layout:
    """Where a competition folder keeps its parts: sub-folders, CSV names and columns; "" means: find it."""

    train_dir: str = ""
    test_dir: str = ""
    labels_csv: str = ""
    sample_submission: str = ""
    id_column: str = ""
    label_column: str = ""  # one column, or several separated by commas


@dataclass
class Labels:
    """The training labels as found: ids as written, their images, and the label cells as text."""

    ids: list[str]
    paths: list[ImagePath]
    targets: pd.DataFrame  # one column per target, text, rows in file order, index: the ids
    where: ImagePath  # the labels CSV, or the train folder (or zip) for class-folder and file-name labels
    source: str  # for the task's one line: "labels from train.csv id/has_cactus, images in train/" (or train.zip)
    csv: str = ""  # the labels CSV's name; "" for a JSON, class folders and file names
    id_column: str = ""
    label_columns: tuple[str, ...] = ()  # the CSV's label columns
    coco: str = ""  # the COCO-style JSON's name, when the labels came from one (the test images' is read too)
    pool: dict[str, ImagePath] = field(default_factory=dict)  # images a CSV row could have named (unlabelled: a note)
    images: dict[str, ImagePath] = field(default_factory=dict)  # the train folder's own images, by id
    others: dict[str, ImagePath] = field(default_factory=dict)  # its files that are not images kaggle_tl reads


def find_sample(root: Path, layout: Layout, notes: list[str]) -> Path | None:
    """The sample submission (sample_submission.csv, compressed, or a CSV named like one), or None."""
    path = locate_csv(root, layout.sample_submission or SAMPLE_CSV)
    if path.is_file() or layout.sample_submission:
        return path if path.is_file() else None
    named = sorted(p for p in root.iterdir() if p.is_file() and _is_sample_name(p.name))
    if len(named) > 1:
        notes.append(f"sample submissions {[p.name for p in named]}: {named[0].name} read "
                     "(--sample-submission decides)")
    return named[0] if named else None


def _is_sample_name(name: str) -> bool:
    """sampleSubmission.csv, kaggle_sample_submission.csv, sample_submission_v2.csv.zip ..."""
    name = name.lower()
    for suffix in COMPRESSED_SUFFIXES:
        name = name.removesuffix(suffix)
    return name.endswith(".csv") and "samplesubmission" in "".join(c for c in name if c.isalnum())


def find_folder(root: Path, given: str, candidates: tuple[str, ...], what: str, notes: list[str]) -> ImagePath:
    """The ``what`` images' folder: ``given``, else the first of ``candidates`` there, else the first of their
    archives (``train.zip``, ``train.tar``: read in place, ``archives.open_archive``), else the one folder or
    archive named for the split (inaturalist's ``train_val2019.tar.gz``), else the first candidate one folder down;
    one line when none is. A folder wins over its archive."""
    if given:
        if is_archive(root / given):
            return open_archive(root / given)
        if not (root / given).is_dir():
            raise KaggleTLError(f"{root / given}: {what} folder not found")
        return root / given
    found = [root / name for name in candidates if (root / name).is_dir()]
    if not found:
        packed = [root / f"{name}{suffix}" for name in candidates for suffix in ARCHIVE_SUFFIXES
                  if is_archive(root / f"{name}{suffix}")]
        if packed:
            if len(packed) > 1:
                notes.append(f"{what} images read from {packed[0].name}, not {packed[1].name} (--{what}-dir decides)")
            return open_archive(packed[0])
        named = _named_for(root, candidates[0])
        if len(named) == 1:
            notes.append(f"{what} images read from {_shown(named[0])}, the one entry named for {candidates[0]} "
                         f"(--{what}-dir decides)")
            return open_archive(named[0]) if named[0].is_file() else named[0]
        nested = _one_folder_down(root, candidates)
        if nested is not None:  # herbarium-2020: nybg2020/train/, nybg2020/test/ beside sample_submission.csv
            notes.append(f"{what} images read from {folder_in(root, nested)}/, one folder down (--{what}-dir decides)")
            return nested
        top = _class_folders_at_top(root) if what == "train" else []
        if top:  # alaska2: Cover/, JMiPOD/, JUNIWARD/, UERD/ beside Test/
            notes.append(f"train images read from the class folders at the top ({', '.join(f'{d.name}/' for d in top)}"
                         f"; a folder named for test is the test images') (--train-dir decides)")
            return root
        solid = [root / f"{name}.7z" for name in candidates if (root / f"{name}.7z").is_file()]
        if solid:  # invasive-species-monitoring's train.7z
            raise KaggleTLError(f"{solid[0]}: a 7z archive of images, which kaggle_tl cannot read in place (a solid "
                                f"archive gives no image without decompressing those before it); unpack it once "
                                f"(python -m py7zr x {solid[0].name} .) and its {solid[0].stem}/ folder is read")
        others = ", ".join(f"{name}/" for name in candidates[1:])
        several = f"; {', '.join(_shown(p) for p in named)} are all named for {candidates[0]}" if named else ""
        raise KaggleTLError(f"{root / candidates[0]}: {what} folder not found (nor {others}, nor an archive of them"
                            f"{several}); --{what}-dir names it")
    if not _holds_images(found[0], PICTURE_EXTENSIONS) and (nested := _one_folder_down(root, candidates)) is not None \
            and _holds_images(nested, PICTURE_EXTENSIONS):  # siim-isic-melanoma: train/*.dcm beside jpeg/train/*.jpg
        held = "only DICOM files" if _holds_images(found[0]) else "no image kaggle_tl reads"
        notes.append(f"{what} images read from {folder_in(root, nested)}/: {found[0].name}/ holds {held} "
                     f"(--{what}-dir decides)")
        return nested
    if len(found) > 1:
        notes.append(f"{what} images read from {found[0].name}/, not {found[1].name}/ (--{what}-dir decides)")
    packed = [root / f"{found[0].name}{suffix}" for suffix in ARCHIVE_SUFFIXES
              if is_archive(root / f"{found[0].name}{suffix}") and not is_records(root / f"{found[0].name}{suffix}")]
    if packed:
        notes.append(f"{what} images read from {found[0].name}/, not {packed[0].name} (a folder wins over its "
                     f"archive; --{what}-dir decides)")
    return found[0]


def _class_folders_at_top(root: Path) -> list[Path]:
    """The folders at ``root`` holding images directly, but the test folder (named for test) and system folders;
    [] unless there are two or more (class folders of the whole competition)."""
    folders = [d for d in sorted(root.iterdir()) if d.is_dir() and not ignored_kind(d.name)
               and not d.name.lower().startswith("test")]
    holding = [d for d in folders if any(e.is_file() and Path(e.name).suffix.lower() in IMAGE_EXTENSIONS
                                         for e in os.scandir(d))]
    return holding if len(holding) >= 2 else []


def _named_for(root: Path, split: str) -> list[Path]:
    """The folders and archives of images at ``root`` whose names start with ``split`` (``train_val2019/``,
    ``test2019.tar.gz``), an archive left out where its unpacked folder is there; archives of a file
    (``train_labels.csv.zip``) are not image folders."""
    entries = [p for p in sorted(root.iterdir()) if p.name.lower().startswith(split) and not ignored_kind(p.name)]
    folders = [p for p in entries if p.is_dir()]
    archives = [p for p in entries if is_archive(p) and not is_records(p) and "." not in archive_stem(p)
                and not any(f.name == archive_stem(p) for f in folders)]
    return sorted(folders + archives)


def _shown(entry: Path) -> str:
    return f"{entry.name}/" if entry.is_dir() else entry.name


def _one_folder_down(root: Path, candidates: tuple[str, ...]) -> Path | None:
    """The first of ``candidates`` inside the one sub-folder of ``root`` that holds any (None: none, or several)."""
    holding = [d for d in sorted(root.iterdir()) if d.is_dir() and not ignored_kind(d.name)
               and any((d / name).is_dir() for name in candidates)]
    if len(holding) != 1:
        return None
    return next(holding[0] / name for name in candidates if (holding[0] / name).is_dir())


def _holds_images(folder: Path, extensions: tuple[str, ...] = IMAGE_EXTENSIONS) -> bool:
    """Whether ``folder`` has an image file of ``extensions``, in it or in a sub-folder (class folders); True when
    it cannot be listed (the listing then says why, in one line)."""
    try:
        for entry in os.scandir(folder):
            if ignored_kind(entry.name):
                continue
            if entry.is_file() and Path(entry.name).suffix.lower() in extensions:
                return True
            if entry.is_dir() and any(e.is_file() and Path(e.name).suffix.lower() in extensions
                                      for e in os.scandir(entry.path)):
                return True
    except OSError:
        return True
    return False


def folder_in(root: Path, folder: ImagePath) -> str:
    """An image folder as the layout names it: relative to ``root`` (``nybg2020/train``), or the archive's name."""
    return folder.name if isinstance(folder, ArchiveMember) else folder.relative_to(root).as_posix()


class _Reading(NamedTuple):
    hits: int  # training images its ids name
    path: Path
    frame: pd.DataFrame
    id_column: str | None  # None: it lacks the given --id-column


def read_labels(root: Path, train_dir: ImagePath, layout: Layout, sample: pd.DataFrame | None, notes: list[str],
                ignored: Ignored) -> Labels:
    """The training labels: a labels CSV naming the training images, else class folders, else file names."""
    files, folders = list_folder(train_dir, ignored)
    if train_dir == root:  # class folders at the top (alaska2): not the test folder, nor the root's CSVs
        folders = [f for f in folders if not f.name.lower().startswith("test")]
        files = [f for f in files if f.suffix.lower() in IMAGE_EXTENSIONS]
    images, others = images_by_id(files, ignored)
    id_name = layout.id_column or (sample.columns[0] if sample is not None else "")
    names = [layout.labels_csv] if layout.labels_csv else LABEL_CSVS
    readings = [_reading(path, id_name, bool(layout.id_column), images)
                for path in (locate_csv(root, name) for name in names) if path.is_file()]
    pool, pool_others = images, others
    if folders and readings and not any(r.hits for r in readings):
        # Images one folder down that a CSV names: folders that are not the labels (hotel chains) or agree with them.
        probe = images_one_folder_down(folders, defaultdict(list))[0]
        readings = [_reading(r.path, id_name, bool(layout.id_column), probe, r.frame) for r in readings]
        if any(r.hits for r in readings):
            pool, pool_others = images_one_folder_down(folders, ignored)
            notes.append(f"{folder_label(train_dir)} has sub-folders ({folders[0].name}, ...): their images are named "
                         "by a labels CSV, whose columns are the labels, not the folder names")
    if folders and readings and not any(r.hits for r in readings):
        # Scan folders a CSV names (rsna-miccai-brain-tumor's train/<id>/<series>/*.dcm): each folder is one image.
        scans = scan_folders(folders)
        readings = [_reading(r.path, id_name, bool(layout.id_column), scans, r.frame) for r in readings]
        if any(r.hits for r in readings):
            pool, pool_others = scans, {}
            notes.append(scan_note(train_dir, folders))
    named = [r for r in readings if r.hits]
    if named:
        chosen = max(named, key=lambda r: r.hits)  # the first of equals
        if len(named) > 1:
            notes.append(f"{' and '.join(r.path.name for r in named)} both name training images: {chosen.path.name} "
                         "read as the labels (--labels-csv decides)")
        notes.extend(_not_the_labels(r, train_dir) for r in readings if not r.hits)
        labels = _labels_from_csv(chosen, train_dir, layout, sample, pool, pool_others, ignored, notes)
    elif layout.labels_csv and readings:  # given: read it, and say which ids have no image
        labels = _labels_from_csv(readings[0], train_dir, layout, sample, images, others, ignored, notes)
    elif not layout.labels_csv and train_dir != root and \
            (coco := _labels_from_coco(root, train_dir, sample, notes, ignored)) is not None:
        labels = coco
        notes.extend(_not_the_labels(r, train_dir) for r in readings)
    elif not layout.labels_csv and (inside := _labels_in_archive(train_dir, images, sample, notes)) is not None:
        labels = inside
        notes.extend(_not_the_labels(r, train_dir) for r in readings)
    else:
        labels = (_labels_from_folders(train_dir, files, folders, sample, notes, ignored)
                  or _labels_from_file_names(train_dir, images, sample))
        if labels is not None:
            notes.extend(_not_the_labels(r, train_dir) for r in readings)
        elif readings:  # a CSV whose ids have no image: say which (stop_on_missing)
            labels = _labels_from_csv(readings[0], train_dir, layout, sample, images, others, ignored, notes)
        elif layout.labels_csv:
            raise KaggleTLError(f"{root / layout.labels_csv}: not found, and {folder_label(train_dir, full=True)} "
                                "has no class sub-folders of images")
        else:
            raise KaggleTLError(f"{root}: no labels found: none of {', '.join(LABEL_CSVS)}, no COCO-style "
                                f"{FOLDER_JSON}, no class sub-folders of images in {folder_label(train_dir)}, no file "
                                "names <label>.<n> (pass --labels-csv)")
    labels.images, labels.others = images, others
    return labels


def _reading(path: Path, id_name: str, given: bool, images: dict[str, ImagePath],
             frame: pd.DataFrame | None = None) -> _Reading:
    frame = read_text_csv(path, "labels", required=[]) if frame is None else frame
    id_column = _labels_id_column(frame, id_name, given)
    hits = 0 if id_column is None else sum(image_of(images, i) is not None for i in frame[id_column])
    return _Reading(hits, path, frame, id_column)


def _labels_id_column(frame: pd.DataFrame, id_name: str, given: bool) -> str | None:
    """The labels CSV's id column: the sample's (or the given) name, else the one column that is that name but for
    case (iwildcam-2019's "id" for the sample's "Id"), else its first; None if a given one is absent."""
    if id_name in frame.columns:
        return id_name
    if given:
        return None
    same = [c for c in frame.columns if c.casefold() == id_name.casefold()]
    return same[0] if len(same) == 1 else frame.columns[0]


def _not_the_labels(reading: _Reading, train_dir: ImagePath) -> str:
    return (f"{reading.path.name} ({', '.join(list(reading.frame.columns)[:4])}) names no image of "
            f"{folder_label(train_dir)}: "
            "not read as the labels")


def images_one_folder_down(folders: list[ImagePath],
                           ignored: Ignored) -> tuple[dict[str, ImagePath], dict[str, ImagePath]]:
    """``images_by_id`` over the files one folder down (hotel-id's chains, seti's ``<id[0]>/``): an id with images in
    two folders names neither."""
    images: dict[str, ImagePath] = {}
    others: dict[str, ImagePath] = {}
    twice: set[str] = set()
    for folder in folders:
        found, other = images_by_id(list_folder(folder, ignored)[0], ignored)
        twice.update(set(found) & set(images))
        images.update({i: p for i, p in found.items() if i not in images})
        others.update(other)
    return {i: p for i, p in images.items() if i not in twice}, others


def scan_folders(folders: list[ImagePath]) -> dict[str, ImagePath]:
    """{folder name: folder} for the ``folders`` holding a DICOM series: scan folders, one image each (data.dicom)."""
    return {f.name: f for f in folders if isinstance(f, Path) and scan_series(f)}


def scan_note(folder: ImagePath, folders: list[ImagePath]) -> str:
    return (f"{folder_label(folder)} holds scan folders ({folders[0].name}/, ...) of DICOM series: each id's image "
            f"is the middle slice of each series, side by side")


def _labels_from_csv(reading: _Reading, train_dir: ImagePath, layout: Layout, sample: pd.DataFrame | None,
                     images: dict[str, ImagePath], others: dict[str, ImagePath], ignored: Ignored,
                     notes: list[str]) -> Labels:
    path, frame, id_column = reading.path, reading.frame, reading.id_column
    if id_column is None:
        raise KaggleTLError(f"{path}: missing column(s) {[layout.id_column]} in the labels; found "
                            f"{list(frame.columns)[:8]}")
    ids = frame[id_column].tolist()
    check_unique(ids, path, id_column)
    missing = [i for i in ids if image_of(images, i) is None]
    stop_on_missing(missing, others, ignored["hidden"], path, train_dir)
    if sample is not None and id_column != sample.columns[0] and not layout.id_column:
        which = "its column" if id_column.casefold() == sample.columns[0].casefold() else "its first column"
        notes.append(f"{path.name} has no column {sample.columns[0]!r} (the sample's ids): {which} "
                     f"{id_column!r} read as the ids")
    columns = _label_columns(frame, path, id_column, layout, sample, notes)
    targets = frame[list(columns)].set_axis(pd.Index(ids, name=id_column))
    source = f"labels from {path.name} {id_column}/{_names(columns)}, images in {folder_label(train_dir)}"
    return Labels(ids, [image_of(images, i) for i in ids], targets, path, source, path.name, id_column, columns,
                  pool=images)


def _names(columns: tuple[str, ...]) -> str:
    return ",".join(columns) if len(columns) <= 4 else f"{','.join(columns[:3])},... ({len(columns)} columns)"


def _label_columns(frame: pd.DataFrame, path: Path, id_column: str, layout: Layout, sample: pd.DataFrame | None,
                   notes: list[str]) -> tuple[str, ...]:
    """The labels CSV's target columns: given, named like the sample's targets, or its one other column."""
    others = [c for c in frame.columns if c != id_column]
    if layout.label_column:
        given = [layout.label_column] if layout.label_column in frame.columns else layout.label_column.split(",")
        missing = [c for c in given if c not in frame.columns]
        if missing:
            raise KaggleTLError(f"{path}: missing column(s) {missing} in the labels; found {list(frame.columns)[:8]}")
        return tuple(given)
    if sample is None:
        if len(others) == 1 or "label" in others:
            return (others[0] if len(others) == 1 else "label",)
        if len(others) > 1 and all(frame[c].isin(["0", "1"]).all() for c in others):
            return tuple(others)  # one-hot (plant-pathology-2020's healthy,multiple_diseases,rust,scab)
        raise KaggleTLError(f"{path}: which column holds the labels? Its columns are {list(frame.columns)[:8]} and "
                            "there is no sample submission to name them; pass --label-column")
    targets = list(sample.columns[1:])
    named = [c for c in targets if c in others]
    if named and len(named) == len(targets):
        return tuple(named)
    if not named and len(others) == 1:
        if len(targets) == 1:
            notes.append(f"{path.name}: its one label column {others[0]!r} read as the sample's {targets[0]!r} "
                         "(--label-column decides)")
        return (others[0],)
    # One sample column per class: the column whose cells are those classes (leaf-classification's species
    # beside 192 numeric features).
    holding = [c for c in others if len(targets) > 1 and set(frame[c]) <= set(targets)]
    if not named and len(holding) == 1:
        return (holding[0],)
    what = (f"has {named} but not {[c for c in targets if c not in others][:4]} of the sample's targets" if named
            else f"has none of the sample's target columns {targets[:4]}")
    raise KaggleTLError(f"{path}: {what}; its columns are {list(frame.columns)[:8]}: name the label column(s) "
                        "with --label-column")


def _labels_from_coco(root: Path, train_dir: ImagePath, sample: pd.DataFrame | None, notes: list[str],
                      ignored: Ignored) -> Labels | None:
    """The images and categories of the train folder's (or zip's) COCO-style JSON (``coco``), or None without one."""
    path = find_json(train_dir, "train")
    if path is None:
        return None
    coco = read_coco(path, labelled=True)
    _read_not_ignored(path, ignored)
    notes.extend(coco.notes)
    ids = list(coco.files)
    paths = [_image_in(train_dir, coco.files[i]) for i in ids]
    stop_on_missing([i for i, p in zip(ids, paths) if not p.is_file()], {}, [], path, train_dir)
    targets = pd.DataFrame({_target_name(sample): [coco.labels[i] for i in ids]}, index=pd.Index(ids, name="id"))
    shown = folder_label(train_dir) if isinstance(train_dir, ArchiveMember) else f"{folder_in(root, train_dir)}/"
    source = f"labels from {path.name} (images' category_id), images in {shown}"
    return Labels(ids, paths, targets, path, source, coco=path.name)


def _labels_in_archive(train_dir: ImagePath, images: dict[str, ImagePath], sample: pd.DataFrame | None,
                       notes: list[str]) -> Labels | None:
    """The labels an archive holds beside its images (cdiscount's train.bson: category_id; statoil's train.json:
    is_iceberg), the field named like the sample's target (or its one field); None for any other folder."""
    if not isinstance(train_dir, ArchiveMember):
        return None
    fields = archive_fields(train_dir)
    target = _target_name(sample)
    name = target if target in fields else next(iter(fields)) if len(fields) == 1 else None
    if name is None:
        return None
    notes.extend(archive_notes(train_dir))
    if len(fields) > 1:
        notes.append(f"{train_dir.name}: its field(s) {[f for f in fields if f != name][:4]} are not used (only "
                     f"{name!r}, the labels)")
    values = fields[name]
    ids = [i for i, path in images.items() if path.member in values]
    unlabelled = [i for i in images if images[i].member not in values]
    if unlabelled:
        notes.append(f"{train_dir.name}: {len(unlabelled)} image(s) have no {name}, e.g. {unlabelled[0]!r}: not "
                     "training images")
    targets = pd.DataFrame({target: [values[images[i].member] for i in ids]}, index=pd.Index(ids, name="id"))
    source = f"labels from {train_dir.name} (its {name}), images in {train_dir.name}"
    return Labels(ids, [images[i] for i in ids], targets, train_dir, source)


def images_in_test_json(test_dir: ImagePath, ignored: Ignored) -> dict[str, ImagePath]:
    """id -> image of the test folder's COCO-style JSON (herbarium's test/images/000/0.jpg), those whose file is
    there ({} without one): a sample id whose image is missing is named as in every layout (``stop_on_missing``)."""
    path = find_json(test_dir, "test")
    if path is None:
        return {}
    _read_not_ignored(path, ignored)
    images = {i: _image_in(test_dir, name) for i, name in read_coco(path, labelled=False).files.items()}
    return {i: image for i, image in images.items() if image.is_file()}


def _image_in(folder: ImagePath, file_name: str) -> ImagePath:
    """A JSON's ``file_name``: inside the images folder, or inside the folder holding it, where it starts with the
    images folder's own name (inaturalist's ``train_val2019/Plants/400/x.jpg`` for train_val2019.tar.gz, whose
    members are ``Plants/400/x.jpg``)."""
    path = folder / file_name
    first, _, rest = file_name.partition("/")
    own = archive_stem(folder.archive) if isinstance(folder, ArchiveMember) and folder.top else folder.name
    if rest and first == own and not path.is_file():
        return folder / rest
    return path


def _read_not_ignored(path: Path, ignored: Ignored) -> None:
    """``path``, listed among the image folder's other files, is read: no note counts it as ignored."""
    ignored["other"] = [p for p in ignored["other"] if p != path]


def _target_name(sample: pd.DataFrame | None) -> str:
    """The label cells' column name for class-folder and file-name labels: the sample's one target, or 'label'."""
    return sample.columns[1] if sample is not None and len(sample.columns) == 2 else "label"


def _labels_from_folders(train_dir: ImagePath, loose: list[ImagePath], class_dirs: list[ImagePath],
                         sample: pd.DataFrame | None, notes: list[str], ignored: Ignored) -> Labels | None:
    """train/<class>/<image>: one level of class folders, or None when there are none with images. Loose files
    beside them and deeper folders are not read; they are counted in a note, since a user who put them there
    expected them to count."""
    ids, paths, labels = [], [], []
    deeper: list[ImagePath] = []
    found: Ignored = defaultdict(list)  # recorded only if these are the labels
    for class_dir in class_dirs:
        files, folders = list_folder(class_dir, found)
        images, _ = images_by_id(files, found)
        deeper.extend(folders)
        for image_id, path in images.items():
            ids.append(f"{class_dir.name}/{image_id}")
            paths.append(path)
            labels.append(class_dir.name)
    if not ids:
        return None
    for kind, entries in found.items():
        ignored[kind].extend(entries)
    here = folder_label(train_dir)
    inside = here if here.endswith("/") else f"{here}/"  # train/<class>/, train.zip/<class>/
    if loose:
        notes.append(f"{len(loose)} file(s) directly in {here} have no class folder: ignored, "
                     f"e.g. {loose[0].name} (labels come from {inside}<class>/ folders when no labels CSV "
                     "names the images)")
    if deeper:
        count = sum(1 for folder in deeper for p in folder.rglob("*") if p.is_file())
        notes.append(f"{len(deeper)} folder(s) inside class folders ({count} file(s)) are not read: only "
                     f"{inside}<class>/<image> counts, e.g. {deeper[0].relative_to(train_dir)}")
    targets = pd.DataFrame({_target_name(sample): labels}, index=pd.Index(ids, name="id"))
    return Labels(ids, paths, targets, train_dir, f"labels from the class folders of {here}")


def _labels_from_file_names(train_dir: ImagePath, images: dict[str, ImagePath],
                            sample: pd.DataFrame | None) -> Labels | None:
    """Labels in the file names, <label>.<rest> (dogs-vs-cats' cat.0.jpg, dog.1.jpg), or None when they are not."""
    prefixes = {image_id: image_id.split(".", 1)[0] for image_id in images if "." in image_id.strip(".")}
    labels = set(prefixes.values())
    if not images or len(prefixes) != len(images) or not 2 <= len(labels) <= min(MAX_NAME_LABELS, len(images) // 2):
        return None
    ids = list(images)
    targets = pd.DataFrame({_target_name(sample): [prefixes[i] for i in ids]}, index=pd.Index(ids, name="id"))
    source = f"labels from the file names in {folder_label(train_dir)} (<label>.<n>: {', '.join(sorted(labels)[:5])})"
    return Labels(ids, [images[i] for i in ids], targets, train_dir, source)
