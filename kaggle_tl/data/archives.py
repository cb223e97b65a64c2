"""Images read in place from a competition's archives: ``train.zip`` / ``test.zip``, a plain tar, a BSON of products.

An ``ArchiveMember`` names one entry of an archive (an image, or a folder inside it) the way a ``Path``
names a file: ``name``, ``stem``, ``suffix``, ``parent``, ``is_file``, ``read_bytes``, and a
``str`` that is the archive's path joined with the member's (``<root>/train.zip/abc.jpg``), which
``image_path`` reads back. It is a small frozen value (the archive's absolute path and the member's
name), so it hashes, compares and pickles: Dask workers and joblib processes open the archive
themselves. Each process opens an archive once; reads from threads take turns on it (a ``ZipFile``
is not safe for concurrent reads), while decoding, the costly part, runs outside the lock.

A tar (inaturalist-2019's ``train_val2019.tar.gz``, which MLE-bench writes uncompressed whatever its
name says) is read where its members lie, by offset. A compressed tar is refused with one line: its
members cannot be read in place without decompressing all that comes before them, so the user unpacks
it once (the folder then wins over the archive). Only regular files are members: a link inside a tar
is never followed. A BSON file of products (cdiscount's ``train.bson``, ``bson.read_products``) is an
archive of one image per product, ``<_id>.jpg`` (its first picture), read by offset as a tar's members
are; it holds its products' categories too (``archive_fields``). A JSON list of records holding image
arrays (statoil's ``train.json``, also as ``train.json.7z``: ``records``) is an archive of one ``<id>.npy``
per record, made in memory from its bands; its other fields (``is_iceberg``) are its fields.

``open_archive`` checks an archive as a competition's image folder (readable, no encrypted images,
at least one image) and enters a single top folder named like it (``train.zip`` holding
``train/``); ``list_archive`` lists one of its folders as ``folders.list_folder`` lists a folder.
"""
from __future__ import annotations

import io
import json
import math
import os
import tarfile
import threading
import zipfile
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import IO, TYPE_CHECKING, Iterator, NamedTuple, Union

import numpy as np

from kaggle_tl.data.bson import BsonError, read_products
from kaggle_tl.data.sevenzip import read_single_file
from kaggle_tl.errors import KaggleTLError

if TYPE_CHECKING:
    from kaggle_tl.data.folders import Ignored


@dataclass(frozen=True, order=True)
class ArchiveMember:
    """One entry of a zip or tar file: an image, or a folder inside it ("" is the archive's root)."""

    archive: Path  # the zip or tar file, absolute
    member: str  # the entry's name inside it, "/"-separated, no trailing "/"
    top: bool = field(default=False, compare=False, repr=False)  # the archive as a folder: its root or top folder

    def __post_init__(self) -> None:
        object.__setattr__(self, "archive", Path(os.path.abspath(self.archive)))
        object.__setattr__(self, "member", self.member.strip("/"))

    def __str__(self) -> str:
        return str(self.archive) if self.top or not self.member else f"{self.archive}/{self.member}"

    @property
    def _pure(self) -> PurePosixPath:
        return PurePosixPath(self.member)

    @property
    def name(self) -> str:
        """The entry's name (``abc.jpg``); the archive's (``train.zip``) for the archive itself as a folder."""
        return self.archive.name if self.top or not self.member else self._pure.name

    @property
    def stem(self) -> str:
        return PurePosixPath(self.name).stem

    @property
    def suffix(self) -> str:
        return PurePosixPath(self.name).suffix

    @property
    def parent(self) -> Union["ArchiveMember", Path]:
        """The folder inside the archive holding the entry; the archive's own folder for its root."""
        if not self.member:
            return self.archive.parent
        parent = str(self._pure.parent)
        return ArchiveMember(self.archive, "" if parent == "." else parent)

    def __truediv__(self, name: str) -> "ArchiveMember":
        return ArchiveMember(self.archive, f"{self.member}/{name}" if self.member else name)

    def relative_to(self, other: Union["ArchiveMember", str, os.PathLike]) -> PurePosixPath:
        """The entry's path below a folder of the same archive, or below a folder holding the archive."""
        if isinstance(other, ArchiveMember):
            if other.archive != self.archive:
                raise ValueError(f"{self} is not in {other}")
            return self._pure.relative_to(other.member) if other.member else self._pure
        return PurePosixPath(self.archive.relative_to(os.path.abspath(other)).as_posix()) / self.member

    def is_file(self) -> bool:
        try:
            return self.member in _contents(self.archive).files
        except KaggleTLError:
            return False

    def is_dir(self) -> bool:
        try:
            return self.member in _contents(self.archive).folders
        except KaggleTLError:
            return False

    def exists(self) -> bool:
        return self.is_file() or self.is_dir()

    def rglob(self, pattern: str = "*") -> Iterator["ArchiveMember"]:
        """Every file and folder below this folder (``pattern`` matched against their names)."""
        contents = _contents(self.archive)
        prefix = f"{self.member}/" if self.member else ""
        for name in sorted(contents.files | contents.folders):
            if name and name.startswith(prefix) and PurePosixPath(name).match(pattern):
                yield ArchiveMember(self.archive, name)

    @property
    def size(self) -> int:
        """The member's size unpacked, in bytes (as the archive's directory states it)."""
        return _contents(self.archive).sizes[self.member]

    def read_bytes(self) -> bytes:
        """The member's bytes: from a zip unpacked and checked against its CRC, from a tar as its header spans them
        (OSError if they cannot be read)."""
        contents = _contents(self.archive)
        if self.member in contents.arrays:  # a record's image, as the .npy file it would be
            stream = io.BytesIO()
            np.save(stream, contents.arrays[self.member], allow_pickle=False)
            return stream.getvalue()
        if _kind(self.archive) != "zip":
            return self._read_span(contents)
        stored = contents.stored.get(self.member, self.member)
        with _lock(self.archive):
            handle = _handle(self.archive)
            try:
                return handle.read(stored)
            except KeyError:
                raise FileNotFoundError(f"no member {self.member!r} in the zip") from None
            except (zipfile.BadZipFile, zipfile.LargeZipFile, NotImplementedError, RuntimeError, EOFError,
                    ValueError) as exc:  # bad CRC, damaged entry, unsupported compression, encrypted
                raise OSError(f"damaged in the zip: {_one_line(exc)}") from None

    def _read_span(self, contents: "_Contents") -> bytes:
        if self.member not in contents.spans:
            raise FileNotFoundError(f"no member {self.member!r} in the {_kind(self.archive)}")
        offset, size = contents.spans[self.member]
        with _lock(self.archive):
            handle = _handle(self.archive)
            end = handle.seek(0, os.SEEK_END)
            if offset + size > end:  # a header declaring more than the file holds: never read (nor allocated)
                raise OSError(f"damaged in the {_kind(self.archive)}: its header declares {size} bytes at byte "
                              f"{offset}, past the file's end ({end} bytes)")
            handle.seek(offset)
            data = handle.read(size)
        if len(data) != size:  # the file was cut short after its listing was read
            raise OSError(f"damaged in the {_kind(self.archive)}: {len(data)} of its {size} bytes are there")
        return data


ImagePath = Union[Path, ArchiveMember]  # an image file, or an image inside an archive
ARCHIVE_SUFFIXES = (".zip", ".tar", ".tar.gz", ".tgz", ".tar.bz2", ".tar.xz", ".bson", ".json", ".json.7z")


def image_path(text: str | os.PathLike | ArchiveMember) -> ImagePath:
    """An image's path from its ``str`` (as a run record saves it): a file, or a member of an archive on the way."""
    if isinstance(text, ArchiveMember):
        return text
    path = Path(text)
    if path.exists():
        return path
    for folder in path.parents:
        if is_archive(folder):
            return ArchiveMember(folder, path.relative_to(folder).as_posix())
    return path


def absolute(path: ImagePath | str) -> ImagePath | str:
    """``path`` made absolute (an archive member already is), for workers that run in another folder."""
    return path if isinstance(path, ArchiveMember) else os.path.abspath(path)


def saved(path: ImagePath | str) -> str:
    """An image's path as a run record saves it: resolved (``image_path`` reads it back)."""
    if isinstance(path, ArchiveMember):
        return str(ArchiveMember(path.archive.resolve(), path.member))
    return str(Path(path).resolve())


def on_disk(path: ImagePath | str) -> str:
    """The file on disk holding the image: itself, or its archive."""
    return str(path.archive) if isinstance(path, ArchiveMember) else os.path.abspath(path)


def folder_label(folder: Path | ArchiveMember, full: bool = False) -> str:
    """How lines name an image folder: ``train/``, or ``train.zip`` (a folder inside an archive: ``train.zip/cats/``);
    ``full``: its whole path (``/data/comp/train/``, ``/data/comp/train.zip``)."""
    if isinstance(folder, ArchiveMember) and folder.top:
        return str(folder) if full else folder.name
    if isinstance(folder, ArchiveMember):
        return f"{folder}/" if full else f"{folder.archive.name}/{folder.member}/"
    return f"{folder}/" if full else f"{folder.name}/"


def is_archive_name(name: str) -> bool:
    """Whether a file name is a zip's or a tar's (``train.zip``, ``train_val2019.tar.gz``)."""
    return name.lower().endswith(ARCHIVE_SUFFIXES)


def is_archive(path: Path) -> bool:
    return is_archive_name(path.name) and path.is_file()


def is_records(path: Path) -> bool:
    """A JSON of records holding image arrays (``train.json``, ``train.json.7z``), not a zip, tar or BSON."""
    return _kind(path) == "records"


def archive_stem(path: Path) -> str:
    """The archive's name without its suffix: the folder it stands for (``train_val2019.tar.gz``: train_val2019)."""
    name = path.name
    suffix = max((s for s in ARCHIVE_SUFFIXES if name.lower().endswith(s)), key=len, default="")
    return name[:len(name) - len(suffix)] if suffix else path.stem


def open_archive(path: Path) -> ArchiveMember:
    """An archive of images as a folder: its root, or its single top folder when that is named like the archive
    (``train.zip`` holding ``train/``). One line for an archive that cannot be read, encrypted images, a compressed
    tar, or no images."""
    from kaggle_tl.data.folders import ignored_kind
    from kaggle_tl.data.images import IMAGE_EXTENSIONS

    contents = _contents(path)
    if not contents.files:
        raise KaggleTLError(f"{path}: holds no images ({', '.join(IMAGE_EXTENSIONS)}); it is an empty "
                            f"{_kind(path)}")
    kept = [name for name in sorted(contents.files) if not any(ignored_kind(part) for part in name.split("/"))]
    images = [name for name in kept if PurePosixPath(name).suffix.lower() in IMAGE_EXTENSIONS]
    if not images:
        raise KaggleTLError(f"{path}: holds no images ({', '.join(IMAGE_EXTENSIONS)}); found e.g. "
                            f"{(kept or sorted(contents.files))[:3]}")
    encrypted = [name for name in images if name in contents.encrypted]
    if encrypted:
        raise KaggleTLError(f"{path}/{encrypted[0]}: encrypted ({len(encrypted)} of its {len(images)} images are); "
                            "kaggle_tl reads no password-protected zip: unzip it with its password")
    root = [name for name in contents.children.get("", ()) if not ignored_kind(name)]
    if len(root) == 1 and root[0] in contents.folders and root[0].lower() == archive_stem(path).lower():
        return ArchiveMember(path, root[0], top=True)
    return ArchiveMember(path, "", top=True)


def archive_fields(folder: ArchiveMember) -> dict[str, dict[str, str]]:
    """Field -> (image member -> its value as text), for an archive that holds fields beside its images (a BSON's
    ``category_id``, a records JSON's ``is_iceberg``); else {}."""
    return {name: dict(values) for name, values in _contents(folder.archive).fields.items()}


def archive_notes(folder: ArchiveMember) -> tuple[str, ...]:
    """What reading the archive left out (a BSON's extra pictures, products without one)."""
    return _contents(folder.archive).notes


def list_archive(folder: ArchiveMember, ignored: Ignored) -> tuple[list[ArchiveMember], list[ArchiveMember]]:
    """(files, sub-folders) directly in a folder of an archive, by name, hidden and system entries (``__MACOSX``)
    left out and recorded, as ``folders.list_folder`` does; the archive's own folder also records its root's."""
    from kaggle_tl.data.folders import ignored_kind

    contents = _contents(folder.archive)
    levels = [folder.member] + ([""] if folder.top and folder.member else [])
    files, folders = [], []
    for level in levels:
        for name in contents.children.get(level, ()):
            entry = ArchiveMember(folder.archive, f"{level}/{name}" if level else name)
            kind = ignored_kind(name)
            if kind:
                ignored[kind].append(entry)
            elif level != folder.member:
                continue  # the archive's root beside its top folder: only what is never data is recorded
            elif entry.member in contents.folders:
                folders.append(entry)
            else:
                files.append(entry)
    return files, folders


@dataclass
class _Contents:
    """An archive's directory, read once per process."""

    files: frozenset[str]
    folders: frozenset[str]  # every folder a member's name implies ("" is the root), listed or not
    children: dict[str, list[str]]  # folder -> the names directly in it, sorted
    sizes: dict[str, int]
    encrypted: frozenset[str]
    stored: dict[str, str]  # file -> its name as the zip stores it, where that differs ("/abc.jpg", "a\\b.jpg")
    spans: dict[str, tuple[int, int]] = field(default_factory=dict)  # a tar's or BSON's file -> (offset, size)
    fields: dict[str, dict[str, str]] = field(default_factory=dict)  # field -> file -> value (BSON, records)
    arrays: dict[str, np.ndarray] = field(default_factory=dict)  # a records JSON's file -> its image array
    notes: tuple[str, ...] = ()
    stamp: tuple[int, int] | None = None  # the file's (size, mtime) when read: another file there is read again


_CONTENTS: dict[tuple[int, Path], _Contents] = {}
_HANDLES: dict[tuple[int, Path], zipfile.ZipFile | IO[bytes]] = {}
_LOCKS: dict[tuple[int, Path], threading.Lock] = {}
_GUARD = threading.Lock()  # around the three caches


def _forget() -> None:
    """In a forked child: open the archives again (the parent's handles share its file offsets), new locks."""
    global _GUARD
    _GUARD = threading.Lock()
    _HANDLES.clear()
    _LOCKS.clear()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget)


def _key(archive: Path) -> tuple[int, Path]:
    # By process: a forked child must not share its parent's file offset.
    return os.getpid(), archive


def _lock(archive: Path) -> threading.Lock:
    with _GUARD:
        return _LOCKS.setdefault(_key(archive), threading.Lock())


def _handle(archive: Path) -> zipfile.ZipFile | IO[bytes]:
    """The process's open ZipFile of a zip, or file of a tar or BSON (callers hold its lock)."""
    key = _key(archive)
    handle = _HANDLES.get(key)
    if handle is None:
        handle = _HANDLES[key] = _open(archive)
    return handle


def _open(archive: Path) -> zipfile.ZipFile | IO[bytes]:
    if _kind(archive) in ("tar", "bson"):
        try:
            return open(archive, "rb")
        except OSError as exc:
            raise KaggleTLError(f"{archive}: cannot read ({exc.strerror or exc})") from None
    try:
        return zipfile.ZipFile(archive)
    except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, ValueError) as exc:
        raise KaggleTLError(f"{archive}: not a readable zip file ({_one_line(exc)})") from None
    except OSError as exc:
        raise KaggleTLError(f"{archive}: cannot read ({exc.strerror or exc})") from None


def _kind(archive: Path) -> str:
    """"zip", "bson" (cdiscount's products), "records" (a JSON of records with image arrays) or "tar"."""
    name = archive.name.lower()
    if name.endswith(".zip"):
        return "zip"
    if name.endswith(".bson"):
        return "bson"
    return "records" if name.endswith((".json", ".json.7z")) else "tar"


# The first bytes of a compressed stream: a tar inside one cannot be read in place.
_COMPRESSED = {b"\x1f\x8b": "gzip", b"BZh": "bzip2", b"\xfd7zXZ\x00": "xz", b"(\xb5/\xfd": "zstd"}


def _tar_entries(archive: Path) -> list[tarfile.TarInfo]:
    """The members of an uncompressed tar, its headers read once; one line for a compressed or unreadable one."""
    try:
        with open(archive, "rb") as handle:
            head = handle.read(6)
            compressed = next((kind for magic, kind in _COMPRESSED.items() if head.startswith(magic)), None)
            if compressed:
                folder = archive.parent / archive_stem(archive)
                raise KaggleTLError(f"{archive}: a {compressed}-compressed tar, whose images cannot be read in place; "
                                    f"unpack it once (mkdir {folder.name} && tar xf {archive.name} -C {folder.name}) "
                                    f"and {folder.name}/ is read instead")
            handle.seek(0)
            with tarfile.open(fileobj=handle, mode="r:") as tar:
                return tar.getmembers()
    except tarfile.TarError as exc:
        raise KaggleTLError(f"{archive}: not a readable tar file ({_one_line(exc)})") from None
    except OSError as exc:
        raise KaggleTLError(f"{archive}: cannot read ({exc.strerror or exc})") from None


class _Entry(NamedTuple):
    name: str  # as the archive stores it
    is_dir: bool
    size: int
    encrypted: bool = False
    span: tuple[int, int] | None = None  # a tar's or BSON's file: (offset, size) of its bytes in the archive
    fields: dict[str, str] | None = None  # a BSON product's category_id, a record's scalar fields
    array: np.ndarray | None = None  # a record's image, made from its bands


def _entries(archive: Path) -> tuple[list[_Entry], tuple[str, ...]]:
    """The entries worth listing, and notes on what was left out."""
    kind = _kind(archive)
    if kind == "tar":
        # Links, devices and FIFOs are never members: a link would read a file the archive does not hold.
        return [_Entry(info.name, info.isdir(), info.size, span=(info.offset_data, info.size) if info.isreg() else None)
                for info in _tar_entries(archive) if info.isdir() or info.isreg()], ()
    if kind == "bson":
        return _bson_entries(archive)
    if kind == "records":
        return _record_entries(archive)
    with _lock(archive):
        infos = _handle(archive).infolist()
    return [_Entry(info.filename, info.is_dir(), info.file_size, bool(info.flag_bits & 0x1)) for info in infos], ()


def _bson_entries(archive: Path) -> tuple[list[_Entry], tuple[str, ...]]:
    """One image per product, ``<_id>.jpg``: its first picture (cdiscount's products have 1-4 views of one item)."""
    entries, more, without, seen = [], 0, [], set()
    try:
        for product in read_products(archive):
            if "/" in product.id or product.id in ("", ".", ".."):
                raise BsonError(f"_id {product.id!r} cannot name an image")
            if product.id in seen:
                raise BsonError(f"_id {product.id!r} names two products")
            seen.add(product.id)
            if not product.pictures:
                without.append(product.id)
                continue
            more += len(product.pictures) > 1
            offset, size = product.pictures[0]
            fields = {} if product.category is None else {"category_id": product.category}
            entries.append(_Entry(f"{product.id}.jpg", False, size, span=(offset, size), fields=fields))
    except BsonError as exc:
        raise KaggleTLError(f"{archive}: not a readable BSON file of products ({exc})") from None
    except OSError as exc:
        raise KaggleTLError(f"{archive}: cannot read ({exc.strerror or exc})") from None
    notes = []
    if more:
        notes.append(f"{archive.name}: {more} of its {len(entries)} products have more than one picture: the first is "
                     "read")
    if without:
        notes.append(f"{archive.name}: {len(without)} product(s) have no picture, e.g. {without[0]!r}: not images")
    return entries, tuple(notes)


def _record_entries(archive: Path) -> tuple[list[_Entry], tuple[str, ...]]:
    """One image per record of a JSON list (statoil's {id, band_1, band_2, inc_angle, is_iceberg}), ``<id>.npy``:
    its bands, lists of H x H numbers, as channels (two bands: band_1, band_2 and their mean, as a colour image
    needs three); its other fields, as text."""
    try:
        data = read_single_file(archive, "records") if archive.name.lower().endswith(".7z") else archive.read_bytes()
        records = json.loads(data)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise KaggleTLError(f"{archive}: not a readable JSON of records ({_one_line(exc)})") from None
    if not isinstance(records, list) or not records or not all(isinstance(r, dict) and "id" in r for r in records):
        raise KaggleTLError(f"{archive}: not a JSON list of records, each with an 'id'")
    bands = [name for name, value in records[0].items() if isinstance(value, list)]
    if not 1 <= len(bands) <= 3:
        raise KaggleTLError(f"{archive}: its records hold {len(bands)} array fields ({bands[:4]}); an image is 1 to 3 "
                            "bands of H x H numbers")
    entries, seen = [], set()
    for k, record in enumerate(records):
        image_id = str(record["id"])
        if "/" in image_id or image_id in ("", ".", ".."):
            raise KaggleTLError(f"{archive}: record {k}'s id {image_id!r} cannot name an image")
        if image_id in seen:
            raise KaggleTLError(f"{archive}: record {k} repeats the id {image_id!r} of a record before it")
        seen.add(image_id)
        try:
            planes = np.asarray([record[band] for band in bands], dtype=np.float32)
        except (KeyError, TypeError, ValueError):
            raise KaggleTLError(f"{archive}: record {k} (id {image_id!r}) lacks one of the bands {bands} or holds "
                                "something other than numbers in it") from None
        side = math.isqrt(planes.shape[1]) if planes.ndim == 2 else 0
        if side == 0 or side * side != planes.shape[1]:
            raise KaggleTLError(f"{archive}: record {k} (id {image_id!r}): its bands {bands} are not H x H numbers "
                                f"each (shape {planes.shape})")
        if len(bands) == 2:
            planes = np.concatenate([planes, planes.mean(axis=0, keepdims=True)])
        image = planes.reshape(len(planes), side, side).transpose(1, 2, 0)
        fields = {name: str(value) for name, value in record.items() if name != "id" and name not in bands}
        entries.append(_Entry(f"{image_id}.npy", False, image.nbytes, fields=fields, array=image))
    return entries, ()


def _stamp(archive: Path) -> tuple[int, int] | None:
    try:
        status = archive.stat()
    except OSError:
        return None
    return status.st_size, status.st_mtime_ns


def _contents(archive: Path) -> _Contents:
    key, stamp = _key(archive), _stamp(archive)
    found = _CONTENTS.get(key)
    if found is not None and found.stamp == stamp:
        return found
    if found is not None:  # rewritten since it was listed (a notebook that made it again): list and open it anew
        with _GUARD:
            handle = _HANDLES.pop(key, None)
        if handle is not None:
            handle.close()
    files, sizes, encrypted, stored, spans, fields, arrays = set(), {}, set(), {}, {}, {}, {}
    folders = {""}
    entries, notes = _entries(archive)
    for entry in entries:
        # Zips made by some Windows tools separate folders with "\\" (against the format; unzip converts them too);
        # tars made with `tar cf x.tar .` start every name with "./".
        name = "/".join(part for part in entry.name.replace("\\", "/").split("/") if part not in ("", "."))
        if not name:
            continue
        parts = name.split("/")
        folders.update("/".join(parts[:k]) for k in range(1, len(parts)))
        if entry.is_dir:
            folders.add(name)
        else:
            files.add(name)
            sizes[name] = entry.size
            if entry.span is not None:
                spans[name] = entry.span
            for field_name, value in (entry.fields or {}).items():
                fields.setdefault(field_name, {})[name] = value
            if entry.array is not None:
                arrays[name] = entry.array
            if name != entry.name:
                stored[name] = entry.name
            if entry.encrypted:
                encrypted.add(name)
    files -= folders  # a name both a file and a folder's prefix: read as the folder
    children: dict[str, list[str]] = {}
    for name in sorted(files | folders - {""}):
        parent, _, base = name.rpartition("/")
        children.setdefault(parent, []).append(base)
    found = _Contents(frozenset(files), frozenset(folders), children, sizes, frozenset(encrypted), stored, spans,
                      fields, arrays, notes, stamp)
    with _GUARD:
        _CONTENTS[key] = found
    return found


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__
