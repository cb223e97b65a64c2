"""Labels and image files from a COCO-style JSON, as the herbarium and iwildcam-2020 competitions ship them.

``images`` lists {id (herbarium-2022: image_id), file_name}, ``annotations`` {image_id, category_id}: the
category id is an image's label and ``file_name`` its path inside the images folder (herbarium-2020's
``images/156/72/354106.jpg``). A test JSON has only ``images`` (herbarium-2022's is a bare list of them).
Found in the images folder (``metadata.json``, also inside ``train.zip``) or beside it, named for its split
(``train_metadata.json``, ``iwildcam2020_train_annotations.json``); docs/dev/competition-layouts.md has each layout.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from kaggle_tl.data.archives import ArchiveMember, ImagePath
from kaggle_tl.errors import KaggleTLError

FOLDER_JSON = "metadata.json"


@dataclass(frozen=True)
class CocoImages:
    path: ImagePath  # the JSON read: a file, or a member of the images' zip
    files: dict[str, str]  # image id (as text) -> file_name, relative to the images folder, in the JSON's order
    labels: dict[str, str]  # image id -> its category id (as text); {} for a test JSON
    notes: tuple[str, ...] = ()


def find_json(folder: ImagePath, split: str) -> ImagePath | None:
    """The ``split`` ("train", "test") images' JSON: ``metadata.json`` in their folder, else the one JSON beside the
    folder whose name holds the split (``train_metadata.json``); None when there is none (or two: not guessed)."""
    if (folder / FOLDER_JSON).is_file():
        return folder / FOLDER_JSON
    beside = folder.archive.parent if isinstance(folder, ArchiveMember) else folder.parent  # a zip: beside the zip
    own = folder.archive if isinstance(folder, ArchiveMember) else None  # statoil's train.json holds the images
    named = sorted(p for p in beside.glob("*.json") if p.is_file() and split in p.name.lower() and p != own)
    return named[0] if len(named) == 1 else None


def read_coco(path: ImagePath, labelled: bool) -> CocoImages:
    """The images (and, when ``labelled``, their categories) of a COCO-style JSON; one line when it is not one."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise KaggleTLError(f"{path}: cannot read ({exc.strerror or exc})") from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:  # herbarium-2020's metadata.json: Latin-1 in its category names, never in ids or paths
        text = data.decode("latin-1")
    try:
        content = json.loads(text)
    except json.JSONDecodeError as exc:
        raise KaggleTLError(f"{path}: not valid JSON ({exc.msg} at line {exc.lineno})") from None
    records = content.get("images") if isinstance(content, dict) else content
    if not isinstance(records, list):
        raise KaggleTLError(f"{path}: no 'images' list (a COCO-style JSON lists its images there)")
    files = {}
    for k, record in enumerate(records):
        image_id = record.get("id", record.get("image_id")) if isinstance(record, dict) else None
        name = record.get("file_name") if isinstance(record, dict) else None
        if image_id is None or not isinstance(name, str):
            raise KaggleTLError(f"{path}: images[{k}] has no id and file_name")
        if str(image_id) in files:
            raise KaggleTLError(f"{path}: images[{k}] repeats the id {str(image_id)!r} of an image before it")
        files[str(image_id)] = _inside(name, path, k)
    if not labelled:
        return CocoImages(path, files, {})
    annotations = content.get("annotations") if isinstance(content, dict) else None
    if not isinstance(annotations, list):
        raise KaggleTLError(f"{path}: no 'annotations' list: no labels for its images")
    return _with_labels(path, files, annotations)


def _inside(name: str, path: Path, k: int) -> str:
    """A file name that stays inside the images folder (never absolute, never up with '..')."""
    pure = PurePosixPath(name.replace("\\", "/"))
    if pure.is_absolute() or ".." in pure.parts or not pure.parts:
        raise KaggleTLError(f"{path}: images[{k}].file_name {name!r} is not a path inside the images folder")
    return pure.as_posix()


def _with_labels(path: Path, files: dict[str, str], annotations: list) -> CocoImages:
    labels: dict[str, str] = {}
    twice: list[str] = []  # images annotated with two categories: the first is kept, a note says how many
    strays: list[str] = []
    for k, annotation in enumerate(annotations):
        if not isinstance(annotation, dict) or "image_id" not in annotation or "category_id" not in annotation:
            raise KaggleTLError(f"{path}: annotations[{k}] has no image_id and category_id")
        image_id, category = str(annotation["image_id"]), str(annotation["category_id"])
        if image_id not in files:
            strays.append(image_id)
        elif image_id not in labels:
            labels[image_id] = category
        elif labels[image_id] != category:
            twice.append(image_id)
    notes = []
    if twice:
        notes.append(f"{path.name}: {len(twice)} image(s) are annotated with two categories, e.g. {twice[0]!r}: "
                     "the first annotation's read")
    if strays:
        notes.append(f"{path.name}: {len(strays)} annotation(s) name no image of its 'images', e.g. {strays[0]!r}: "
                     "ignored")
    unlabelled = [i for i in files if i not in labels]
    if unlabelled:
        notes.append(f"{path.name}: {len(unlabelled)} image(s) have no annotation, e.g. {unlabelled[0]!r}: ignored")
    return CocoImages(path, {i: name for i, name in files.items() if i in labels}, labels, tuple(notes))
