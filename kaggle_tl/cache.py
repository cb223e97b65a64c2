"""Keyed on-disk feature arrays: chunked atomic writes, checksummed, memory-mapped reads.

Layout of one entry (``<root>/<key>/``)::

    chunk_0000002048-0000003072_<sha1>.npy   rows [2048, 3072) while extraction runs
    features.npy             all rows, once complete (chunks are then removed)
    meta.json                shape, dtype, checksum of features.npy and what the key stands for
    .lock                    present while a run holds the entry (``CacheEntry.locked``)

Every file appears by an atomic rename, so a run killed at any moment leaves either a whole
chunk or none; the next run resumes from the chunks that verify. A chunk's name holds its row
range and checksum: one that is truncated, of another shape or row range, or whose content does
not match its checksum is deleted and recomputed, never trusted; likewise features.npy against
meta.json. Two runs sharing a cache take turns on an entry (a file lock), so neither finalises
over the other's chunks nor writes a chunk twice.
"""
from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import logging
import os
import re
import secrets
import shutil
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np

from kaggle_tl.errors import KaggleTLError

try:
    import fcntl
except ImportError:  # Windows: no flock, so two runs sharing a cache are not kept apart there
    fcntl = None

log = logging.getLogger(__name__)
_CHUNK = re.compile(r"chunk_(\d{10})-(\d{10})_([0-9a-f]{16})\.npy$")
_LOAD_ERRORS = (ValueError, OSError, EOFError)  # what np.load raises on a damaged .npy


def array_digest(array: np.ndarray) -> str:
    return _short(hashlib.sha1(np.ascontiguousarray(array).view(np.uint8).reshape(-1)))


def _short(sha1) -> str:
    """The digest as chunk names and meta.json hold it."""
    return sha1.hexdigest()[:16]


def cache_key(**parts: Any) -> str:
    """A short stable key from named parts (backbone, weights, size, view, image set...)."""
    text = json.dumps(parts, sort_keys=True, default=str)
    return hashlib.sha1(text.encode()).hexdigest()[:20]


def atomic_write_bytes(path: Path, data: bytes, overwrite: bool = True) -> None:
    """Write via a temp file in the same folder and rename; with overwrite=False never clobber.

    A full disk (or quota) is a KaggleTLError naming the folder; no temporary file is left behind.
    """
    with _full_disk_as_error(path):
        _atomic_write(path, lambda handle: handle.write(data), overwrite)


def _atomic_save_npy(path: Path, array: np.ndarray) -> None:
    """``np.save`` by the same atomic rename; OSError (ENOSPC included) reaches the caller, whose message knows more.

    FeatureCache.write_chunk says the chunks already written are kept and a re-run resumes.
    """
    _atomic_write(path, lambda handle: np.save(handle, array, allow_pickle=False), overwrite=True)


@contextlib.contextmanager
def _full_disk_as_error(path: Path) -> Iterator[None]:
    try:
        yield
    except OSError as exc:
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            what = "no space left on device" if exc.errno == errno.ENOSPC else "disk quota exceeded"
            raise KaggleTLError(f"{path.parent}: {what} while writing {path.name}") from None
        raise


def _atomic_write(path: Path, write: Callable[[Any], None], overwrite: bool) -> None:
    """Create a temp file beside ``path`` (and its folder), ``write(handle)``, fsync, rename it to ``path``."""
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = _create_temp(path)
        with os.fdopen(fd, "wb") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        if overwrite:
            os.replace(tmp, path)
        else:
            os.link(tmp, path)  # fails with FileExistsError instead of replacing
            os.unlink(tmp)
    except BaseException:
        if tmp is not None and os.path.exists(tmp):
            os.unlink(tmp)
        raise


def _create_temp(path: Path) -> tuple[int, str]:
    """A new, exclusively created hidden file beside ``path``: (descriptor, name).

    Unlike tempfile.mkstemp (always mode 0600), mode 0666 lets the umask decide, so outputs
    are as readable as any other file the user creates. 64 random bits make a name collision
    (FileExistsError, never an overwrite: O_EXCL) negligible.
    """
    tmp = str(path.parent / f".{path.name}.{secrets.token_hex(8)}.tmp")
    return os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666), tmp


class FeatureCache:
    """A folder of keyed (N, D) float32 feature arrays."""

    def __init__(self, root: str | Path):
        self.root = Path(root)

    def entry(self, key: str, n_rows: int, dim: int, chunk_rows: int, info: dict | None = None) -> "CacheEntry":
        return CacheEntry(self.root / key, n_rows, dim, chunk_rows, info or {})


class CacheEntry:
    def __init__(self, folder: Path, n_rows: int, dim: int, chunk_rows: int, info: dict):
        self.folder, self.n_rows, self.dim, self.chunk_rows, self.info = folder, n_rows, dim, chunk_rows, info

    @property
    def n_chunks(self) -> int:
        return max(1, -(-self.n_rows // self.chunk_rows))

    def chunk_slice(self, index: int) -> slice:
        return slice(index * self.chunk_rows, min(self.n_rows, (index + 1) * self.chunk_rows))

    @contextlib.contextmanager
    def locked(self, waiting_message: str = "") -> Iterator[None]:
        """Hold this entry exclusively (flock on ``.lock`` in its folder) while reading, computing and finalising.

        The lock file is removed on release, so a complete entry holds only its two files. A
        waiter may then hold a lock on that removed file, which guards nothing: it checks that
        the path still names the file it locked, and starts again if not. A killed holder's lock
        is released by the kernel; its stale ``.lock`` is reused.
        """
        self.folder.mkdir(parents=True, exist_ok=True)
        if fcntl is None:
            yield
            return
        path = self.folder / ".lock"
        while True:
            try:
                fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
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
            yield
        finally:
            path.unlink(missing_ok=True)  # before unlocking: a waiter then sees it and starts again
            os.close(fd)

    # -- complete arrays -------------------------------------------------------------------
    def load(self) -> np.ndarray | None:
        """The complete array (memory-mapped) if present and intact, else None.

        A truncated file, a wrong shape or a failed checksum is logged and removed so that it
        is recomputed, never trusted.
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
            return array
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
            _atomic_save_npy(self.folder / name, rows)
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
        fd, tmp = _create_temp(self.folder / "features.npy")  # not mkstemp: its 0600 would reach features.npy
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
        # Temp files of runs killed mid-write, and chunks named the pre-row-range way.
        for stale in [*self.folder.glob(".*.tmp"), *self.folder.glob("chunk_?????_*.npy")]:
            stale.unlink(missing_ok=True)
        return np.load(self.folder / "features.npy", mmap_mode="r")

    def clear(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)
