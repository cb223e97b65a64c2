"""The cache folder: every keyed thing kaggle_tl computes once and reads again, and read-only layers.

Layout of a cache root (``--cache-dir``; a ``--cache-from`` layer has the same layout)::

    features/<key>/       one (N, D) float32 array: features.npy + meta.json (see FeatureEntry)
    predictions/<key>.npz one head's fold x view predictions (runs.Predictions' file), beside <key>.json
    fits/<key>.npz        one head's fitted fold x view models as arrays (frozen.FoldModels' file), beside <key>.json
    figures/<key>/        the figures drawn for one model's predictions (*.png, *.csv) + meta.json
    models/<key>/         a backbone converted for another runtime (OpenVINO's model.xml/.bin)

Every key comes from ``cache_key(**parts)``: the parts are everything that determines the
entry's content (the callers say which), hashed. Every entry stores the key it was written under
and the parts it was made from (``key_record``: meta.json's ``key`` and ``key_parts``; a <key>.json
beside an .npz, with the .npz's checksum), and reading one compares them with the key asked for: an
entry copied or swapped under another key, or one without a stored key (an older kaggle_tl's), is
named on one line ("damaged entry <path>: made for key X, asked for Y") and recomputed, never used.
Read-only layers (a Kaggle dataset made from an
earlier run's cache) are searched after the writable root: what they hold is used as it is,
verified by its checksum, and never written, locked or modified; a damaged entry there is named
on one line and recomputed into the writable root.

A feature entry while extraction runs::

    chunk_0000002048-0000003072_<sha1>.npy   rows [2048, 3072)
    features.npy             all rows, once complete (chunks are then removed)
    meta.json                shape, dtype, checksum of features.npy, its key and the key's parts, the rows
                             of undecodable images (all NaN), and what the key stands for
    .lock                    present while a run holds the entry (``FeatureEntry.locked``)

Every file appears by an atomic rename, so a run killed at any moment leaves either a whole
chunk or none; the next run resumes from the chunks that verify. A chunk's name holds its row
range and checksum: one that is truncated, of another shape or row range, or whose content does
not match its checksum is deleted and recomputed, never trusted; likewise features.npy against
meta.json. Two runs sharing a cache take turns on an entry (a file lock), so neither finalises
over the other's chunks nor writes a chunk twice.
"""
from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import json
import logging
import os
import re
import shutil
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np

from kaggle_tl.errors import KaggleTLError
from kaggle_tl.files import (atomic_save_npy, atomic_write_bytes, create_temp, ensure_writable, remove_stale_temps,
                             temp_path)

try:
    import fcntl
except ImportError:  # Windows: no flock, so two runs sharing a cache are not kept apart there
    fcntl = None

log = logging.getLogger(__name__)
_CHUNK = re.compile(r"chunk_(\d{10})-(\d{10})_([0-9a-f]{16})\.npy$")
_LOAD_ERRORS = (ValueError, OSError, EOFError)  # what np.load raises on a damaged .npy
KINDS = ("features", "predictions", "fits", "figures", "models")
FILE_KINDS = ("predictions", "fits")  # an entry is one <key>.npz file
KEY = re.compile(r"[0-9a-f]{20}")  # what cache_key returns: nothing else names an entry


def array_digest(array: np.ndarray) -> str:
    return _short(hashlib.sha1(np.ascontiguousarray(array).view(np.uint8).reshape(-1)))


def _short(sha1) -> str:
    """The digest as chunk names and meta.json hold it."""
    return sha1.hexdigest()[:16]


class CacheKey(str):
    """A key as ``cache_key`` makes it: the string itself, knowing the parts it was made from (as hashed)."""

    parts: dict[str, Any] | None = None


def cache_key(**parts: Any) -> CacheKey:
    """The one key function: a short stable key from named parts (backbone, weights, size, view, image set...)."""
    text = json.dumps(parts, sort_keys=True, default=str)
    key = CacheKey(hashlib.sha1(text.encode()).hexdigest()[:20])
    key.parts = json.loads(text)  # what was hashed: JSON types only, so it hashes to the key again
    return key


def key_record(key: str) -> dict[str, Any]:
    """What an entry stores of the key it is written under: the key and, where known, the parts it was made from."""
    return {"key": str(key), "key_parts": getattr(key, "parts", None)}


def key_problem(stored: Any, key: str) -> str | None:
    """Why an entry whose stored ``key_record`` is ``stored`` is not provably ``key``'s; None when it is.

    Its stored key must be ``key``, and its stored parts (when there are any) must hash to it: a
    key edited to pass for another is caught by the parts it no longer matches.
    """
    made = stored.get("key") if isinstance(stored, dict) else None
    if not isinstance(made, str):
        return f"no stored key (an older kaggle_tl's entry, or not kaggle_tl's), asked for {key}"
    parts = stored.get("key_parts")
    if made != key:
        asked = getattr(key, "parts", None)
        differ = (sorted(name for name in {*parts, *asked} if parts.get(name) != asked.get(name))
                  if isinstance(parts, dict) and isinstance(asked, dict) else [])
        return f"made for key {made}, asked for {key}" + (f" (they differ in {', '.join(differ)})" if differ else "")
    if parts is not None and not (isinstance(parts, dict) and cache_key(**parts) == made):
        return f"its stored key {made} is not what its stored parts hash to (edited)"
    return None


class Cache:
    """A writable cache root and the read-only layers searched after it."""

    def __init__(self, root: str | Path, read_only: Sequence[str | Path] = ()):
        self.root = Path(os.path.abspath(root))  # workers may run in another folder
        self.layers = [Path(os.path.abspath(layer)) for layer in read_only]
        for layer in self.layers:
            check_layer(layer)
        for kind in ("predictions", "fits", "figures", "models"):  # feature entries clean theirs when locked
            remove_stale_temps(self.root / kind)

    # -- features ------------------------------------------------------------------------------
    def features(self, key: str, n_rows: int, dim: int, chunk_rows: int, info: dict | None = None) -> "FeatureEntry":
        """The writable entry ``key`` (chunks are computed into it); ``key`` as ``cache_key`` made it."""
        return FeatureEntry(self.root / "features" / key, n_rows, dim, chunk_rows, info or {},
                            key_parts=getattr(key, "parts", None))

    def read_only_features(self, entry: "FeatureEntry") -> list["FeatureEntry"]:
        """``entry`` as each read-only layer would hold it, in order (``load`` says whether one does, intact)."""
        return [FeatureEntry(layer / "features" / entry.key, entry.n_rows, entry.dim, entry.chunk_rows, entry.info,
                             read_only=True, key_parts=entry.key_parts) for layer in self.layers]

    # -- predictions and fitted fold models: one .npz file an entry --------------------------------
    def file_path(self, kind: str, key: str) -> Path:
        """Where the ``kind`` entry ``key`` (predictions or fits) is written."""
        assert kind in FILE_KINDS, kind
        return self.root / kind / f"{key}.npz"

    def find_files(self, kind: str, key: str) -> list[Path]:
        """Existing ``kind`` files provably written for ``key``: the writable root's first, then each layer's.

        A file whose <key>.json is missing (an older kaggle_tl's), names another key, or whose checksum
        does not match (a file copied or swapped under this name) is named on one line and left out.
        """
        found = []
        for path in [self.file_path(kind, key), *(layer / kind / f"{key}.npz" for layer in self.layers)]:
            if not path.is_file():
                continue
            problem = _file_key_problem(path, key)
            if problem is None:
                found.append(path)
            else:
                log.warning("damaged entry %s: %s; not used", path, problem)
        return found

    def source(self, path: Path) -> str:
        """Where an entry found at ``path`` came from, as a run records it: "cache" or the read-only layer."""
        if path.is_relative_to(self.root):
            return "cache"
        return str(next(layer for layer in self.layers if path.is_relative_to(layer)))

    def write_file(self, kind: str, key: str, data: bytes) -> Path:
        """Write the ``kind`` entry ``key``: ``data`` as <key>.npz, and its key and checksum as <key>.json.

        The .json first: a run killed between the two leaves a key file that names no .npz (or an
        older one, whose checksum it does not match), never an .npz that passes for another key's.
        """
        path = self.file_path(kind, key)
        stamp = {**key_record(key), "sha1": hashlib.sha1(data).hexdigest()}
        atomic_write_bytes(key_file(path), json.dumps(stamp, indent=1, default=str).encode())
        atomic_write_bytes(path, data)
        return path

    # -- figures and converted models ----------------------------------------------------------
    def read_figures(self, key: str) -> tuple[dict[str, bytes], Path] | None:
        """The figures drawn for ``key`` ({file name: content}) and the folder they came from: the writable
        root's first, then each layer's; None when no folder holds them intact.

        Every file is the one its folder's meta.json names with its checksum, read without following a
        link; a folder that is a link, holds a link or an unlisted file, misses one, or fails a checksum
        is named on one line and not used (a figure linked to a private file never reaches a run's plots).
        """
        for folder in [self.root / "figures" / key, *(layer / "figures" / key for layer in self.layers)]:
            if not (folder.exists() or folder.is_symlink()):
                continue
            files, problem = _read_figures(folder, key)
            if problem is None:
                return files, folder
            log.warning("damaged entry %s: %s; redrawing", folder, problem)
        return None

    def write_figures(self, key: str, files: dict[str, bytes]) -> Path:
        """Write the figures entry ``key`` ({file name: content}, as drawn) with its meta.json; returns its folder.

        Written whole into a temporary folder and renamed into place: a run killed while drawing leaves
        no entry. A damaged entry of the writable root is replaced; one another run wrote meanwhile is kept.
        """
        folder = self.root / "figures" / key
        folder.parent.mkdir(parents=True, exist_ok=True)
        drawing = temp_path(folder)
        drawing.mkdir()
        try:
            for name, data in files.items():
                (drawing / name).write_bytes(data)
            meta = {**key_record(key), "files": {name: hashlib.sha1(data).hexdigest() for name, data in files.items()}}
            (drawing / FIGURES_META).write_text(json.dumps(meta, indent=1, default=str), encoding="utf-8")
            if folder.is_symlink() or (folder.exists() and _read_figures(folder, key)[1] is not None):
                _remove_path(folder)  # damaged (named when read): the root's own, never a layer's
            with contextlib.suppress(OSError):  # another run wrote the same figures first: keep theirs
                os.replace(drawing, folder)
        finally:
            shutil.rmtree(drawing, ignore_errors=True)
        return folder

    def model_dirs(self, key: str) -> tuple[Path, list[Path]]:
        """Where a converted backbone ``key`` is kept: the writable root's folder (converted into, when
        none verifies), and the read-only layers' folders holding it (read, never written)."""
        return self.root / "models" / key, [f for f in (layer / "models" / key for layer in self.layers) if f.is_dir()]

    # -- what the cache holds (kaggle-tl clean, kaggle-tl cache export) -------------------------
    def entries(self) -> list["Entry"]:
        """Every entry of the writable root, with its size, last use and what it holds.

        Only what is provably kaggle_tl's: a key's name (a ``<key>.npz`` file for fits and predictions,
        a ``<key>/`` folder otherwise), never a link. A user's own files in a folder named like a kind
        (``models/best/model.h5``) are not entries, so `kaggle-tl clean` never lists or removes them.
        """
        found = []
        for kind in KINDS:
            folder = self.root / kind
            if not folder.is_dir():
                continue
            for path in sorted(folder.iterdir()):
                key = path.stem if kind in FILE_KINDS else path.name
                shaped = (path.suffix == ".npz" and path.is_file()) if kind in FILE_KINDS else path.is_dir()
                if KEY.fullmatch(key) and shaped and not path.is_symlink():
                    found.append(Entry(kind, key, path))
        return found

    def export(self, keys: dict[str, Sequence[str]], destination: str | Path) -> list[Path]:
        """Copy the entries ``{kind: [key, ...]}`` (from the root or a layer) into ``destination`` as a cache.

        What a Kaggle notebook attaches as a dataset and reads with ``--cache-from``. Features are
        copied complete only (features.npy + meta.json), never half-computed chunks.
        """
        destination = ensure_writable(destination, "cache export")
        for kind, wanted in keys.items():  # a record is read from a run folder, maybe someone else's
            bad = next((key for key in wanted if not (isinstance(key, str) and KEY.fullmatch(key))), None)
            if kind not in KINDS or bad is not None:
                raise KaggleTLError(f"cache export: the run names {kind}/{bad if kind in KINDS else ''}, which is no "
                                    f"kaggle_tl cache entry (kinds {', '.join(KINDS)}; keys of 20 hex digits); "
                                    "its record is damaged or was edited")
        copied = []
        for kind, wanted in keys.items():
            for key in wanted:
                source = self._find(kind, key)
                if source is None:
                    raise KaggleTLError(f"{self.root}: no {kind} entry {key} in the cache or its layers; "
                                        "re-run to compute it, then export")
                target = destination / kind / source.name
                if target.exists():
                    continue
                target.parent.mkdir(parents=True, exist_ok=True)
                tmp = temp_path(target)
                files = ((["features.npy", "meta.json"] if kind == "features"
                          else [p.name for p in source.iterdir() if not p.name.startswith(".")])
                         if source.is_dir() and not source.is_symlink() else [])
                linkable = [source, *(source / name for name in files)]
                link = next((p for p in [*linkable, key_file(source)] if p.is_symlink()), None)
                if link is not None:  # it could point anywhere: the folder a user uploads gets no link's target
                    raise KaggleTLError(f"cache export: {link} is a link; kaggle_tl never exports one "
                                        "(replace it with the file, or re-run to compute the entry)")
                if source.is_dir():
                    tmp.mkdir()
                    for name in files:
                        shutil.copyfile(source / name, tmp / name)
                else:  # its key file first, as write_file does
                    atomic_write_bytes(key_file(target), key_file(source).read_bytes())
                    shutil.copyfile(source, tmp)
                os.replace(tmp, target)
                copied.append(target)
        return copied

    def _find(self, kind: str, key: str) -> Path | None:
        if kind in FILE_KINDS:
            return next(iter(self.find_files(kind, key)), None)
        for root in (self.root, *self.layers):
            path = root / kind / key
            if kind == "features" and not (path / "features.npy").is_file():
                continue
            if path.exists():
                return path
        return None


def key_file(path: Path) -> Path:
    """The <key>.json beside a <key>.npz entry: its key record and checksum."""
    return path.with_suffix(".json")


def _file_key_problem(path: Path, key: str) -> str | None:
    """Why the .npz entry at ``path`` is not provably ``key``'s (its <key>.json against the key and the file)."""
    try:
        stamp = json.loads(key_file(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        return f"no stored key ({key_file(path).name} missing: an older kaggle_tl's entry), asked for {key}"
    except (OSError, ValueError) as exc:  # UnicodeDecodeError and JSONDecodeError are ValueErrors
        return f"its key file {key_file(path).name} is unreadable ({type(exc).__name__}: {exc})"
    problem = key_problem(stamp, key)
    if problem is not None:
        return problem
    try:
        with open(path, "rb") as handle:
            digest = hashlib.file_digest(handle, "sha1").hexdigest()
    except OSError as exc:
        return f"unreadable ({exc.strerror or exc})"
    if digest != stamp.get("sha1"):
        return f"its content is not what was written under key {key} (checksum mismatch: copied or swapped)"
    return None


FIGURES_META = "meta.json"  # a figures entry's key record and {file name: sha1} of its figures


def _read_figures(folder: Path, key: str) -> tuple[dict[str, bytes], str | None]:
    """({name: content}, None) of the figures entry in ``folder`` when it is provably ``key``'s; else ({}, why not)."""
    if folder.is_symlink():
        return {}, "it is a link (kaggle_tl never follows one out of a cache)"
    try:
        meta = json.loads(_read_no_link(folder / FIGURES_META))
    except FileNotFoundError:
        return {}, f"no stored key ({FIGURES_META} missing: an older kaggle_tl's entry), asked for {key}"
    except (OSError, ValueError) as exc:  # a link (ELOOP), unreadable, not JSON
        return {}, f"its {FIGURES_META} is unreadable ({type(exc).__name__}: {exc})"
    problem = key_problem(meta, key)
    if problem is not None:
        return {}, problem
    listed = meta.get("files")
    if not (isinstance(listed, dict) and all(isinstance(v, str) for v in listed.values())):
        return {}, f"its {FIGURES_META} lists no files"
    try:
        present = {p.name for p in folder.iterdir()} - {FIGURES_META}
    except OSError as exc:
        return {}, f"unreadable ({exc.strerror or exc})"
    if present != set(listed):
        extra, missing = sorted(present - set(listed)), sorted(set(listed) - present)
        return {}, ("holds files it does not list: " + ", ".join(extra) if extra
                    else "misses the files it lists: " + ", ".join(missing))
    files = {}
    for name, digest in sorted(listed.items()):
        try:
            data = _read_no_link(folder / name)
        except OSError as exc:
            return {}, f"{name} is a link or unreadable ({exc.strerror or exc})"
        if hashlib.sha1(data).hexdigest() != digest:
            return {}, f"{name} is not what was drawn under key {key} (checksum mismatch)"
        files[name] = data
    return files, None


def _read_no_link(path: Path) -> bytes:
    """The content of the regular file ``path``; OSError when it is a link (ELOOP) or not a regular file."""
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
    with os.fdopen(fd, "rb") as handle:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise OSError(f"{path.name} is not a regular file")
        return handle.read()


def _remove_path(path: Path) -> None:
    """Remove a file, a link (never what it points to) or a folder."""
    if path.is_symlink() or not path.is_dir():
        path.unlink(missing_ok=True)
    else:
        shutil.rmtree(path)


def check_layer(layer: Path) -> None:
    """One line unless ``layer`` is a kaggle_tl cache folder (``--cache-from``)."""
    if not layer.is_dir():
        raise KaggleTLError(f"{layer}: --cache-from folder not found")
    if not any((layer / kind).is_dir() for kind in KINDS):
        raise KaggleTLError(f"{layer}: not a kaggle_tl cache (no {', '.join(f'{k}/' for k in KINDS)} folder); "
                            "--cache-from takes a --cache-dir of an earlier run, or a `kaggle-tl cache export`")


@dataclass(frozen=True)
class Entry:
    """One cache entry as ``kaggle-tl clean`` lists it."""

    kind: str
    key: str
    path: Path

    @property
    def size(self) -> int:
        if self.path.is_file():
            return sum(p.stat().st_size for p in (self.path, key_file(self.path)) if p.is_file())
        return sum(p.stat().st_size for p in self.path.rglob("*") if p.is_file())

    @property
    def last_used(self) -> dt.datetime:
        """When a run last read or wrote it (reads touch meta.json)."""
        stamp = self.path / "meta.json" if (self.path / "meta.json").is_file() else self.path
        return dt.datetime.fromtimestamp(stamp.stat().st_mtime)

    @property
    def info(self) -> dict[str, Any]:
        """What a feature entry stands for (backbone, view, data set...), from its meta.json."""
        try:
            meta = json.loads((self.path / "meta.json").read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return {}
        return meta if isinstance(meta, dict) else {}

    def remove(self) -> bool:
        """Delete the entry; False (and nothing deleted) when a running run holds it (a feature entry's lock)."""
        if self.kind == "features" and fcntl is not None:
            try:
                fd = os.open(self.path / ".lock", os.O_RDWR | os.O_CREAT, 0o666)
            except FileNotFoundError:
                return True  # removed meanwhile
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                return False
            try:  # deleted while held: a run waiting for it finds its lock file gone and starts again
                shutil.rmtree(self.path)
            finally:
                os.close(fd)
            return True
        if self.path.is_dir():
            shutil.rmtree(self.path)
        else:
            self.path.unlink(missing_ok=True)
            if self.kind in FILE_KINDS:
                key_file(self.path).unlink(missing_ok=True)
        return True


class FeatureEntry:
    """One keyed (N, dim) float32 array, computed in chunks; read-only when it lies in a --cache-from layer.

    Its rows of images that could not be decoded are NaN, and listed in meta.json with why
    (``bad_rows``, known once loaded or finalised): any other row that is not finite is the entry's
    damage, not an image's.
    """

    def __init__(self, folder: Path, n_rows: int, dim: int, chunk_rows: int, info: dict, read_only: bool = False,
                 key_parts: dict[str, Any] | None = None):
        self.folder, self.n_rows, self.dim, self.chunk_rows, self.info = folder, n_rows, dim, chunk_rows, info
        self.read_only, self.key_parts = read_only, key_parts
        self.bad_rows: dict[int, str] = {}

    @property
    def key(self) -> CacheKey:
        key = CacheKey(self.folder.name)
        key.parts = self.key_parts
        return key

    @property
    def n_chunks(self) -> int:
        return max(1, -(-self.n_rows // self.chunk_rows))

    def chunk_slice(self, index: int) -> slice:
        return slice(index * self.chunk_rows, min(self.n_rows, (index + 1) * self.chunk_rows))

    def is_complete(self) -> bool:
        return (self.folder / "features.npy").is_file() and (self.folder / "meta.json").is_file()

    @contextlib.contextmanager
    def locked(self, waiting_message: str = "") -> Iterator[None]:
        """Hold this entry exclusively (flock on ``.lock`` in its folder) while reading, computing and finalising.

        The lock file is removed on release, and the folder too when it is left empty (a run
        that failed before writing anything leaves nothing behind). A waiter may then hold a
        lock on that removed file, which guards nothing: it checks that the path still names
        the file it locked, and starts again if not. A killed holder's lock is released by the
        kernel; its stale ``.lock`` is reused.
        """
        assert not self.read_only, "a read-only layer is never locked"
        self.folder.mkdir(parents=True, exist_ok=True)
        if fcntl is None:
            yield
            return
        path = self.folder / ".lock"
        while True:
            self.folder.mkdir(parents=True, exist_ok=True)
            try:
                fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
            except FileNotFoundError:
                continue  # the holder before us left the folder empty and removed it
            except OSError as exc:
                raise KaggleTLError(f"{path}: cannot lock the feature cache entry ({exc.strerror or exc})") from None
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                if waiting_message:
                    log.info("%s: %s", self.folder, waiting_message)
                fcntl.flock(fd, fcntl.LOCK_EX)
            try:
                if os.stat(path).st_ino == os.fstat(fd).st_ino:
                    break
            except FileNotFoundError:
                pass
            os.close(fd)
        try:
            remove_stale_temps(self.folder)  # of runs killed mid-write: no live process writes here now
            yield
        finally:
            path.unlink(missing_ok=True)  # before unlocking: a waiter then sees it and starts again
            os.close(fd)
            with contextlib.suppress(OSError):
                self.folder.rmdir()  # only when empty: nothing was computed into it

    # -- complete arrays -------------------------------------------------------------------
    def load(self) -> np.ndarray | None:
        """The complete array (memory-mapped) if present and intact, else None.

        A truncated file, a wrong shape or a failed checksum is named on one line, and so is an
        entry whose stored key is not this one's (``key_problem``) or whose rows that are not
        finite are not exactly the undecodable images it lists. In the writable root it is
        removed so that it is recomputed, in a read-only layer it is left as it is and passed over.
        """
        meta_path, data_path = self.folder / "meta.json", self.folder / "features.npy"
        if not meta_path.exists() or not data_path.exists():
            return None
        try:
            meta = json.loads(meta_path.read_text())
            array = np.load(data_path, mmap_mode="r", allow_pickle=False)
            problem = None
            if tuple(array.shape) != (self.n_rows, self.dim) or array.dtype != np.float32:
                problem = f"shape {array.shape} {array.dtype}, expected {(self.n_rows, self.dim)} float32"
            else:
                digest, not_finite = _scan(array)
                if not isinstance(meta, dict) or meta.get("sha1") != digest:
                    problem = "checksum mismatch"
        except _LOAD_ERRORS as exc:  # json.JSONDecodeError is a ValueError
            problem = f"unreadable ({type(exc).__name__}: {exc})"
        if problem is not None:
            if self.read_only:
                log.warning("read-only cache %s: %s; skipped, computing it into the writable cache", data_path,
                            problem)
                return None
            log.warning("feature cache %s: %s; recomputing", data_path, problem)
            self._remove()
            return None
        problem = key_problem(meta, self.key) or self._bad_rows_problem(meta.get("bad_rows"), array, not_finite)
        if problem is not None:
            self.reject(problem)
            return None
        if not self.read_only:
            with contextlib.suppress(OSError):
                os.utime(meta_path)  # "last used", for kaggle-tl clean
        return array

    def _bad_rows_problem(self, recorded: Any, array: np.ndarray, not_finite: np.ndarray) -> str | None:
        """Why the rows listed as undecodable images (meta.json's ``bad_rows``) are not exactly the NaN rows."""
        try:
            bad_rows = {int(row): str(problem) for row, problem in recorded.items()}
        except (AttributeError, TypeError, ValueError):
            return "no list of its undecodable images (an older kaggle_tl's entry)"
        unexplained = sorted(set(not_finite.tolist()) - set(bad_rows))
        if unexplained:
            return (f"{_rows(unexplained)} NaN or infinite, which no undecodable image explains "
                    "(they are the entry's damage, not the images')")
        listed = sorted(bad_rows)
        if listed and not (0 <= listed[0] and listed[-1] < self.n_rows and np.isnan(array[listed]).all()):
            return f"{_rows(listed)} listed as undecodable images but not all NaN"
        self.bad_rows = bad_rows
        return None

    def reject(self, problem: str) -> None:
        """Name the damage on one line; in the writable root, remove the entry so that it is recomputed."""
        log.warning("damaged entry %s: %s; recomputed", self.folder, problem)
        if not self.read_only:
            self._remove()

    def _remove(self) -> None:
        (self.folder / "meta.json").unlink(missing_ok=True)
        (self.folder / "features.npy").unlink(missing_ok=True)

    # -- chunks during extraction ------------------------------------------------------------
    def _chunks_on_disk(self) -> dict[int, tuple[Path, str]]:
        """{index: (path, checksum in the name)} for chunk files of this entry's row layout.

        A chunk of another layout (another chunk_rows) is removed: its rows are not this index's.
        """
        found: dict[int, tuple[Path, str]] = {}
        if not self.folder.is_dir():
            return found
        for path in sorted(self.folder.iterdir()):
            match = _CHUNK.match(path.name)
            if not match:
                continue
            start, stop = int(match.group(1)), int(match.group(2))
            index = start // self.chunk_rows
            if index < self.n_chunks and self.chunk_slice(index) == slice(start, stop) and index not in found:
                found[index] = (path, match.group(3))
            else:
                log.warning("feature cache %s: duplicate chunk or one of another row layout, removed", path)
                path.unlink(missing_ok=True)
        return found

    def _load_chunk(self, index: int, path: Path, digest: str) -> np.ndarray | None:
        """The chunk's rows if the file loads, has the expected shape and matches its checksum."""
        expected = self.chunk_slice(index)
        try:
            array = np.load(path, allow_pickle=False)
        except _LOAD_ERRORS:
            return None
        if array.shape != (expected.stop - expected.start, self.dim) or array.dtype != np.float32:
            return None
        return array if array_digest(array) == digest else None

    def done_chunks(self) -> set[int]:
        """Indices of chunks already on disk that load, have the right shape and checksum.

        A chunk that fails is logged and deleted, so that it is recomputed.
        """
        done: set[int] = set()
        for index, (path, digest) in self._chunks_on_disk().items():
            if self._load_chunk(index, path, digest) is not None:
                done.add(index)
            else:
                log.warning("feature cache %s: damaged chunk (truncated, wrong shape or checksum), recomputing it",
                            path)
                path.unlink(missing_ok=True)
        return done

    def missing_chunks(self) -> list[int]:
        done = self.done_chunks()
        return [i for i in range(self.n_chunks) if i not in done]

    def write_chunk(self, index: int, rows: np.ndarray) -> None:
        rows = np.ascontiguousarray(rows, dtype=np.float32)
        expected = self.chunk_slice(index)
        if rows.shape != (expected.stop - expected.start, self.dim):
            raise ValueError(f"chunk {index}: got {rows.shape}, expected {(expected.stop - expected.start, self.dim)}")
        name = f"chunk_{expected.start:010d}-{expected.stop:010d}_{array_digest(rows)}.npy"
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            atomic_save_npy(self.folder / name, rows)
        except OSError as exc:
            raise KaggleTLError(f"{self.folder / name}: cannot write features ({exc.strerror or exc}); "
                                f"the chunks already written are kept and a re-run resumes from them") from None

    def finalize(self, problems: dict[int, str] | None = None) -> np.ndarray:
        """Join the chunks into features.npy, checking each again; its NaN rows are listed as undecodable
        images, with ``problems``' reason (what this run's decoder said) where there is one.

        Streamed with plain writes, one chunk in memory at a time: a memory map of the output
        would count every written page in this process's RSS, and a Dask driver finalising 1M
        images must stay as small as one finalising 1,000.
        """
        chunks = self._chunks_on_disk()
        if sorted(chunks) != list(range(self.n_chunks)):
            raise KaggleTLError(f"{self.folder}: cannot finalise, chunks missing")
        fd, tmp = create_temp(self.folder / "features.npy")  # not mkstemp: its 0600 would reach features.npy
        bad_rows: dict[int, str] = {}
        try:
            whole = hashlib.sha1()  # array_digest of the joined array, computed as it is written
            with os.fdopen(fd, "wb") as out:
                np.lib.format.write_array_header_1_0(out, {"descr": np.lib.format.dtype_to_descr(np.dtype(np.float32)),
                                                           "fortran_order": False, "shape": (self.n_rows, self.dim)})
                for index, (path, digest) in sorted(chunks.items()):
                    rows = self._load_chunk(index, path, digest)
                    if rows is None:
                        path.unlink(missing_ok=True)
                        raise KaggleTLError(f"{path}: feature chunk changed on disk during the run; "
                                            "re-run to recompute it")
                    data = memoryview(np.ascontiguousarray(rows, dtype=np.float32)).cast("B")  # no copy
                    whole.update(data)
                    out.write(data)
                    # compute_chunk writes whole NaN rows for undecodable images, and nothing else not finite
                    start = self.chunk_slice(index).start
                    bad_rows.update({start + int(i): (problems or {}).get(start + int(i), "could not be decoded")
                                     for i in np.flatnonzero(~np.isfinite(rows).all(axis=1))})
            digest = _short(whole)
            os.replace(tmp, self.folder / "features.npy")
            meta = {"shape": [self.n_rows, self.dim], "dtype": "float32", "sha1": digest, **self.info,
                    **key_record(self.key), "bad_rows": {str(row): why for row, why in sorted(bad_rows.items())}}
            atomic_write_bytes(self.folder / "meta.json", json.dumps(meta, indent=1, default=str).encode())
        except OSError as exc:
            raise KaggleTLError(f"{self.folder}: cannot write features.npy ({exc.strerror or exc}); "
                                f"the chunks are kept and a re-run resumes from them") from None
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
        for path, _ in chunks.values():
            path.unlink(missing_ok=True)
        self.bad_rows = bad_rows
        return np.load(self.folder / "features.npy", mmap_mode="r")


SCAN_BYTES = 64 << 20  # rows read at a time when checking a complete array: memory stays flat for any size


def _scan(array: np.ndarray) -> tuple[str, np.ndarray]:
    """``array_digest`` of a (memory-mapped) 2-d array, and the rows holding a NaN or infinite value, in one pass."""
    whole, not_finite = hashlib.sha1(), []
    step = max(1, SCAN_BYTES // max(1, array[:1].nbytes))
    for start in range(0, len(array), step):
        block = np.ascontiguousarray(array[start:start + step])
        whole.update(block.view(np.uint8).reshape(-1))
        not_finite.append(start + np.flatnonzero(~np.isfinite(block).all(axis=1)))
    return _short(whole), np.concatenate([np.zeros(0, np.int64), *not_finite])


def _rows(rows: Sequence[int]) -> str:
    """"row 3" or "rows 3, 7, 9, ... (12 in all)", for one line."""
    shown = ", ".join(map(str, rows[:5])) + (f", ... ({len(rows)} in all)" if len(rows) > 5 else "")
    return f"row{'s' if len(rows) > 1 else ''} {shown}"
