"""Listing a competition's folders: image files by id, hidden and system entries left out and counted,
and one line for ids that have no image."""
from __future__ import annotations

import os
from pathlib import Path

from kaggle_tl.data.archives import ArchiveMember, ImagePath, folder_label, list_archive
from kaggle_tl.data.images import IMAGE_EXTENSIONS, image_problem
from kaggle_tl.errors import KaggleTLError

# Left in data folders by tools, never images: Windows' thumbnail caches and folder settings.
SYSTEM_FILES = ("thumbs.db", "ehthumbs.db", "ehthumbs_vista.db", "desktop.ini")
Ignored = dict[str, list[ImagePath]]  # kind -> paths left out of every listing


def ignored_kind(name: str) -> str | None:
    """Why a file or folder name is never data (a hidden or system entry), or None."""
    if name.startswith("."):
        return "hidden"  # .ipynb_checkpoints, .DS_Store, ._photo.jpg (macOS resource forks)
    if name == "__MACOSX":
        return "__MACOSX"  # the resource forks macOS' zip adds
    if name.lower() in SYSTEM_FILES or name == "Icon\r":
        return "system"
    return None


def ignored_notes(ignored: Ignored, root: Path) -> list[str]:
    what = {"hidden": "hidden file(s)/folder(s) (name starting with '.')",
            "__MACOSX": "__MACOSX folder(s) (macOS zip metadata)",
            "system": "system file(s) (Thumbs.db, desktop.ini, Icon)",
            "other": "file(s) that are not images kaggle_tl reads",
            "broken": "link(s) that lead nowhere (dangling, or a loop)"}
    return [f"{len(paths)} {what[kind]} ignored, e.g. {paths[0].relative_to(root)}"
            for kind, paths in ignored.items() if paths]


def list_folder(folder: ImagePath, ignored: Ignored) -> tuple[list[ImagePath], list[ImagePath]]:
    """(files, sub-folders) directly in ``folder``, by name, hidden and system entries left out (and recorded).

    A folder inside a zip (``archives.ArchiveMember``) is listed from the zip's directory."""
    if isinstance(folder, ArchiveMember):
        return list_archive(folder, ignored)
    try:
        entries = sorted(os.scandir(folder), key=lambda entry: entry.name)
        files, folders = [], []
        for entry in entries:
            kind = ignored_kind(entry.name)
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


def images_by_id(files: list[ImagePath], ignored: Ignored) -> tuple[dict[str, ImagePath], dict[str, ImagePath]]:
    """Map id -> path for the image ``files`` (of one folder), and id -> path for its other files.

    An id is the file name minus extension. Other files are recorded in ``ignored["other"]``;
    they are returned so that an id with only, say, a GIF can be refused naming the format.
    """
    images: dict[str, ImagePath] = {}
    others: dict[str, ImagePath] = {}
    for path in files:
        if path.suffix.lower() not in IMAGE_EXTENSIONS:
            others.setdefault(path.stem, path)
            ignored["other"].append(path)
        elif path.stem in images:
            raise KaggleTLError(f"{path}: two images share the id {path.stem!r} ({images[path.stem].name})")
        else:
            images[path.stem] = path
    return images, others


def strip_extension(value: str) -> str:
    """An id without an image extension ("2de8f.jpg" -> "2de8f"); other dots stay ("1.2.826.0.1")."""
    suffix = Path(value).suffix.lower()
    return value[: -len(suffix)] if suffix in IMAGE_EXTENSIONS else value


def image_of(images: dict[str, ImagePath], image_id: str) -> ImagePath | None:
    """The image an id names, written with or without its extension ("2de8f.jpg" or "2de8f")."""
    return images.get(image_id) or images.get(strip_extension(image_id))


def check_unique(ids: list[str], path: Path, column: str) -> None:
    """Stop at the first id written twice (with or without its extension: "a" and "a.jpg" are one image)."""
    seen: set[str] = set()
    for row, value in enumerate(ids, start=2):  # row 1 is the header
        if strip_extension(value) in seen:
            raise KaggleTLError(f"{path}: duplicate {column} {value!r} at row {row}")
        seen.add(strip_extension(value))


def stop_on_missing(missing: list[str], others: dict[str, ImagePath], hidden: list[ImagePath], csv_path: Path,
                    folder: ImagePath) -> None:
    """One line for ids of ``csv_path`` without an image in ``folder``: unsupported files, hidden ones, or none."""
    if not missing:
        return
    _stop_on_unsupported(missing, others, csv_path)
    _stop_on_hidden(missing, hidden, csv_path)
    raise KaggleTLError(f"{csv_path}: {len(missing)} id(s) have no image in {folder_label(folder, full=True)}, "
                        f"e.g. {missing[:3]}")


def _stop_on_unsupported(missing: list[str], others: dict[str, ImagePath], csv_path: Path) -> None:
    """Name the format when an id lacks an image but has a file kaggle_tl does not read (a GIF, say)."""
    found = [others.get(i) or others.get(strip_extension(i)) for i in missing]
    found = [path for path in found if path is not None]
    if found:
        problem = image_problem(found[0])
        if problem is None:  # a readable image under a foreign extension
            problem = f"the {found[0].suffix} extension is not one kaggle_tl reads ({', '.join(IMAGE_EXTENSIONS)})"
        raise KaggleTLError(f"{found[0]}: {problem} ({len(found)} id(s) of {csv_path.name} have only such a file)")


def _stop_on_hidden(missing: list[str], hidden: list[ImagePath], csv_path: Path) -> None:
    """Say so when an id's only image is a hidden file (its name starts with "."), which is never read."""
    by_id = {strip_extension(p.name): p for p in hidden if p.is_file()}
    found = [by_id[strip_extension(i)] for i in missing if strip_extension(i) in by_id]
    if found:
        raise KaggleTLError(f"{found[0]}: {len(found)} id(s) of {csv_path.name} (e.g. {found[0].name!r}) name "
                            "hidden files (starting with '.'), which kaggle_tl ignores as system files; rename "
                            "the images and their ids")
