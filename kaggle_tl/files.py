"""Writing files safely: the bottom floor every module that writes a file stands on.

Every file kaggle_tl writes appears by an atomic rename of a temporary file beside it, so a run
killed at any moment leaves the old file or the new one, never half of one. Temporary files
carry the writing process's id, so the next run can remove those of processes that died
(a kill -9 runs no ``finally``).
"""
from __future__ import annotations

import contextlib
import errno
import io
import json
import math
import os
import re
import secrets
import shutil
import socket
import time
import zipfile
from pathlib import Path
from typing import Any, Callable, Iterator, TypeVar

import numpy as np

from kaggle_tl.errors import KaggleTLError

# ".<target name>.<host>-<pid>-<random>.tmp": a file, or a folder (figures drawn, a model converted).
_TEMP = re.compile(r"^\..+\.([A-Za-z0-9_]*)-(\d+)-[0-9a-f]{16}\.tmp$")
# A temp of another host (a Dask worker writing to shared storage) cannot be asked whether its
# process lives: it is stale once this old.
OTHER_HOST_STALE_S = 24 * 3600


def _host() -> str:
    return re.sub(r"[^A-Za-z0-9_]+", "_", socket.gethostname())[:40]


def temp_path(path: Path) -> Path:
    """A fresh hidden temporary name beside ``path``, owned by this process on this host."""
    return path.parent / f".{path.name}.{_host()}-{os.getpid()}-{secrets.token_hex(8)}.tmp"


def atomic_write_bytes(path: str | Path, data: bytes, overwrite: bool = True) -> None:
    """Write via a temp file in the same folder and rename; with overwrite=False never clobber.

    A full disk (or quota), or a read-only file system, is a KaggleTLError naming the folder;
    no temporary file is left behind.
    """
    path = Path(path)
    with disk_errors_as_one_line(path):
        atomic_write(path, lambda handle: handle.write(data), overwrite)


def atomic_save_npy(path: Path, array: np.ndarray) -> None:
    """``np.save`` by the same atomic rename; OSError (ENOSPC included) reaches the caller, whose message knows more."""
    atomic_write(path, lambda handle: np.save(handle, array, allow_pickle=False), overwrite=True)


@contextlib.contextmanager
def disk_errors_as_one_line(path: Path) -> Iterator[None]:
    """A full disk, an exceeded quota or a read-only file system as one KaggleTLError line naming the folder."""
    try:
        yield
    except OSError as exc:
        what = {errno.ENOSPC: "no space left on device", errno.EDQUOT: "disk quota exceeded",
                errno.EROFS: "read-only file system"}.get(exc.errno)
        if what:
            raise KaggleTLError(f"{path.parent}: {what} while writing {path.name}") from None
        raise


def atomic_write(path: Path, write: Callable[[Any], None], overwrite: bool) -> None:
    """Create a temp file beside ``path`` (and its folder), ``write(handle)``, fsync, rename it to ``path``."""
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = create_temp(path)
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


def create_temp(path: Path) -> tuple[int, Path]:
    """A new, exclusively created hidden file beside ``path``: (descriptor, name).

    Unlike tempfile.mkstemp (always mode 0600), mode 0666 lets the umask decide, so outputs
    are as readable as any other file the user creates. 64 random bits make a name collision
    (FileExistsError, never an overwrite: O_EXCL) negligible.
    """
    tmp = temp_path(path)
    return os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666), tmp


def remove_stale_temps(folder: str | Path) -> int:
    """Remove the temporary files and folders in ``folder`` left by processes that no longer exist.

    A temp of a live process (another run writing now) is left alone; one of another host is
    removed only when a day old. Returns how many were removed.
    """
    removed = 0
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return 0
    for entry in entries:
        match = _TEMP.match(entry.name)
        if not match:
            continue
        if match.group(1) == _host():
            if _process_alive(int(match.group(2))):
                continue
        else:
            with contextlib.suppress(OSError):
                if time.time() - entry.stat(follow_symlinks=False).st_mtime < OTHER_HOST_STALE_S:
                    continue
        with contextlib.suppress(OSError):
            if entry.is_dir(follow_symlinks=False):
                shutil.rmtree(entry.path)
            else:
                os.unlink(entry.path)
            removed += 1
    return removed


def _process_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # EPERM: alive, another user's
        return True
    return True


def ensure_writable(directory: str | Path, what: str) -> Path:
    """Fail now, with one line, rather than after hours of extraction; clean up stale temps there."""
    directory = Path(directory)
    if directory.exists() and not directory.is_dir():
        raise KaggleTLError(f"{directory}: {what} folder is a file, not a folder")
    try:
        directory.mkdir(parents=True, exist_ok=True)
        fd, probe = create_temp(directory / "write-test")
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise KaggleTLError(f"{directory}: {what} folder is not writable ({exc.strerror or exc})") from None
    remove_stale_temps(directory)
    return directory


def to_json(value: Any) -> bytes:
    return json.dumps(value, indent=1, default=str, ensure_ascii=False).encode("utf-8")


T = TypeVar("T")


def npz_bytes(arrays: dict[str, np.ndarray]) -> bytes:
    """The bytes of an .npz file of ``arrays`` (for ``atomic_write_bytes``); numbers and strings, never pickles."""
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    return buffer.getvalue()


def npz_nbytes(path: Path) -> int:
    """The bytes an .npz file's arrays declare in their .npy headers: read before any array is inflated."""
    total = 0
    with zipfile.ZipFile(path) as archive:
        for info in archive.infolist():
            with archive.open(info) as member:
                major, _ = np.lib.format.read_magic(member)
                read_header = np.lib.format.read_array_header_1_0 if major == 1 else np.lib.format.read_array_header_2_0
                shape, _, dtype = read_header(member)
                total += math.prod(shape) * dtype.itemsize
    return total


def read_npz(path: Path, what: str, build: Callable[[dict[str, np.ndarray]], T], max_bytes: int) -> T:
    """``build`` applied to every array of an .npz file, or one KaggleTLError line naming the file and
    ``what`` it should have held, missing or damaged (a failed zip CRC, an array ``build`` lacks...).

    Nothing is unpickled (``allow_pickle=False``): reading a file from an attached dataset runs no code.
    Its arrays may declare ``max_bytes`` at most (what the entry can hold for the run reading it): a
    small file declaring terabytes is refused before anything is allocated.
    """
    try:
        declared = npz_nbytes(path)
        if declared > max_bytes:
            raise KaggleTLError(f"{path}: {what} damaged (its arrays declare {declared:,} bytes; "
                                f"an entry for this run holds at most {max_bytes:,})")
        with np.load(path, allow_pickle=False) as data:
            arrays = {name: data[name] for name in data.files}
        return build(arrays)
    except FileNotFoundError:
        raise KaggleTLError(f"{path}: {what} missing") from None
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as exc:
        raise KaggleTLError(f"{path}: {what} damaged ({type(exc).__name__}: {exc})") from None


def read_json(path: Path, what: str) -> Any:
    """A JSON file's value, or one KaggleTLError line naming the file and what it should have been."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise KaggleTLError(f"{path}: {what} not found") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise KaggleTLError(f"{path}: damaged {what} ({exc})") from None
