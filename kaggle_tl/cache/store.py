"""The cache folder: every keyed thing kaggle_tl computes once and reads again, and read-only layers.

Layout of a cache root (``--cache-dir``; a ``--cache-from`` layer has the same layout)::

    features/<key>/       one (N, D) float32 array: features.npy + meta.json (see FeatureEntry)
    predictions/<key>.npz one head's fold x view predictions (runs.Predictions' file)
    fits/<key>.npz        one head's fitted fold x view models as arrays (frozen.FoldModels' file)
    figures/<key>/*.png   the figures drawn for one model's predictions
    models/<key>/         a backbone converted for another runtime (OpenVINO's model.xml/.bin)

Every key comes from ``cache_key(**parts)``: the parts are everything that determines the
entry's content (the callers say which), hashed. Read-only layers (a Kaggle dataset made from an
earlier run's cache) are searched after the writable root: what they hold is used as it is,
verified by its checksum, and never written, locked or modified; a damaged entry there is named
on one line and recomputed into the writable root.

A feature entry while extraction runs::

    chunk_0000002048-0000003072_<sha1>.npy   rows [2048, 3072)
    features.npy             all rows, once complete (chunks are then removed)
    meta.json                shape, dtype, checksum of features.npy and what the key stands for
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


def cache_key(**parts: Any) -> str:
    """The one key function: a short stable key from named parts (backbone, weights, size, view, image set...)."""
    text = json.dumps(parts, sort_keys=True, default=str)
    return hashlib.sha1(text.encode()).hexdigest()[:20]


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
        """The writable entry ``key`` (chunks are computed into it)."""
        return FeatureEntry(self.root / "features" / key, n_rows, dim, chunk_rows, info or {})

    def read_only_features(self, entry: "FeatureEntry") -> tuple[np.ndarray, Path] | None:
        """``entry``'s array from the first read-only layer holding it intact, and that layer; else None."""
        for layer in self.layers:
            found = FeatureEntry(layer / "features" / entry.folder.name, entry.n_rows, entry.dim, entry.chunk_rows,
                                 entry.info, read_only=True)
            array = found.load()
            if array is not None:
                return array, layer
        return None

    # -- predictions and fitted fold models: one .npz file an entry --------------------------------
    def file_path(self, kind: str, key: str) -> Path:
        """Where the ``kind`` entry ``key`` (predictions or fits) is written."""
        assert kind in FILE_KINDS, kind
        return self.root / kind / f"{key}.npz"

    def find_files(self, kind: str, key: str) -> list[Path]:
        """Existing ``kind`` files for ``key``: the writable root's first, then each layer's."""
        return [p for p in [self.file_path(kind, key), *(layer / kind / f"{key}.npz" for layer in self.layers)]
                if p.is_file()]

    def source(self, path: Path) -> str:
        """Where an entry found at ``path`` came from, as a run records it: "cache" or the read-only layer."""
        if path.is_relative_to(self.root):
            return "cache"
        return str(next(layer for layer in self.layers if path.is_relative_to(layer)))

    def write_file(self, kind: str, key: str, data: bytes) -> Path:
        path = self.file_path(kind, key)
        atomic_write_bytes(path, data)
        return path

    # -- figures and converted models ----------------------------------------------------------
    def figures(self, key: str) -> Path:
        """The folder of figures for ``key`` (drawn there once; see ``publish_folder``)."""
        for folder in [self.root / "figures" / key, *(layer / "figures" / key for layer in self.layers)]:
            if folder.is_dir():
                return folder
        return self.root / "figures" / key

    def model_dir(self, key: str) -> Path:
        """The folder of a converted backbone ``key``: a layer's when it holds one, else the writable root's."""
        for folder in [self.root / "models" / key, *(layer / "models" / key for layer in self.layers)]:
            if folder.is_dir():
                return folder
        return self.root / "models" / key

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
                link = next((p for p in [source, *(source / name for name in files)] if p.is_symlink()), None)
                if link is not None:  # it could point anywhere: the folder a user uploads gets no link's target
                    raise KaggleTLError(f"cache export: {link} is a link; kaggle_tl never exports one "
                                        "(replace it with the file, or re-run to compute the entry)")
                if source.is_dir():
                    tmp.mkdir()
                    for name in files:
                        shutil.copyfile(source / name, tmp / name)
                else:
                    shutil.copyfile(source, tmp)
                os.replace(tmp, target)
                copied.append(target)
        return copied

    def _find(self, kind: str, key: str) -> Path | None:
        name = f"{key}.npz" if kind in FILE_KINDS else key
        for root in (self.root, *self.layers):
            path = root / kind / name
            if kind == "features" and not (path / "features.npy").is_file():
                continue
            if path.exists():
                return path
        return None


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
            return self.path.stat().st_size
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

    def remove(self) -> None:
        if self.path.is_dir():
            shutil.rmtree(self.path)
        else:
            self.path.unlink(missing_ok=True)


class FeatureEntry:
    """One keyed (N, dim) float32 array, computed in chunks; read-only when it lies in a --cache-from layer."""

    def __init__(self, folder: Path, n_rows: int, dim: int, chunk_rows: int, info: dict, read_only: bool = False):
        self.folder, self.n_rows, self.dim, self.chunk_rows, self.info = folder, n_rows, dim, chunk_rows, info
        self.read_only = read_only

    @property
    def key(self) -> str:
        return self.folder.name

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

        A truncated file, a wrong shape or a failed checksum is named on one line; in the
        writable root it is removed so that it is recomputed, in a read-only layer it is left
        as it is and passed over.
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
            elif not isinstance(meta, dict) or meta.get("sha1") != array_digest(array):
                problem = "checksum mismatch"
        except _LOAD_ERRORS as exc:  # json.JSONDecodeError is a ValueError
            problem = f"unreadable ({type(exc).__name__}: {exc})"
        if problem is None:
            if not self.read_only:
                with contextlib.suppress(OSError):
                    os.utime(meta_path)  # "last used", for kaggle-tl clean
            return array
        if self.read_only:
            log.warning("read-only cache %s: %s; skipped, computing it into the writable cache", data_path, problem)
            return None
        log.warning("feature cache %s: %s; recomputing", data_path, problem)
        meta_path.unlink(missing_ok=True)
        data_path.unlink(missing_ok=True)
        return None

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

    def finalize(self) -> np.ndarray:
        """Join the chunks into features.npy, checking each again.

        Streamed with plain writes, one chunk in memory at a time: a memory map of the output
        would count every written page in this process's RSS, and a Dask driver finalising 1M
        images must stay as small as one finalising 1,000.
        """
        chunks = self._chunks_on_disk()
        if sorted(chunks) != list(range(self.n_chunks)):
            raise KaggleTLError(f"{self.folder}: cannot finalise, chunks missing")
        fd, tmp = create_temp(self.folder / "features.npy")  # not mkstemp: its 0600 would reach features.npy
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
            digest = _short(whole)
            os.replace(tmp, self.folder / "features.npy")
            meta = {"shape": [self.n_rows, self.dim], "dtype": "float32", "sha1": digest, **self.info}
            atomic_write_bytes(self.folder / "meta.json", json.dumps(meta, indent=1, default=str).encode())
        except OSError as exc:
            raise KaggleTLError(f"{self.folder}: cannot write features.npy ({exc.strerror or exc}); "
                                f"the chunks are kept and a re-run resumes from them") from None
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
        for path, _ in chunks.values():
            path.unlink(missing_ok=True)
        return np.load(self.folder / "features.npy", mmap_mode="r")
