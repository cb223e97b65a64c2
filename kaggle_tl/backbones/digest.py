"""Content digests of weights and model files, remembered between runs while the file is unchanged.

A weights file is named by its SHA-256 in the feature cache key. Hashing a 90 MB file takes
about a second, so each digest is kept in ``digests.json`` under ``$XDG_CACHE_HOME/kaggle_tl``
(default ``~/.cache/kaggle_tl``) and reused while the file's stamp is the same. The stamp is
what git's index uses to trust a file: size, mtime, and also inode and ctime. Size and mtime
alone are not enough: unzipping a downloaded dataset replaces a file in place and sets its
mtime back to the archive's, so a file of the same size would pass for the old one. Replacing
or rewriting a file always changes its ctime (no tool can set it) and usually its inode.
"""
from __future__ import annotations

import hashlib
import json
import os
import time
from pathlib import Path

from kaggle_tl.errors import KaggleTLError
from kaggle_tl.files import atomic_write_bytes

# A file changed within this many seconds of being hashed could change again within the same
# timestamp tick (coarse on some filesystems) at the same size: its digest is not remembered.
_RACY_SECONDS = 2.0


def digest_cache_path() -> Path:
    root = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(root) / "kaggle_tl" / "digests.json"


def _stamp(stat: os.stat_result) -> list[int]:
    return [stat.st_size, stat.st_mtime_ns, stat.st_ctime_ns, stat.st_ino, stat.st_dev]


def file_digest(path: str | os.PathLike) -> str:
    """SHA-256 hex digest of a file's content, from the digest cache when its stamp matches."""
    path = os.path.realpath(path)
    stat = os.stat(path)
    known = _read_cache()
    entry = known.get(path)
    if entry and entry.get("stamp") == _stamp(stat):
        return entry["sha256"]
    digest = _sha256(path)
    if time.time() - max(stat.st_mtime, stat.st_ctime) > _RACY_SECONDS:
        known[path] = {"stamp": _stamp(stat), "sha256": digest}
        _write_cache(known)
    return digest


def _sha256(path: str) -> str:
    sha = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            sha.update(block)
    return sha.hexdigest()


def _read_cache() -> dict:
    try:
        data = json.loads(digest_cache_path().read_text(encoding="utf-8"))
    except (OSError, ValueError):  # missing or damaged: digests are recomputed, nothing is lost
        return {}
    return data if isinstance(data, dict) else {}


def _write_cache(known: dict) -> None:
    try:
        atomic_write_bytes(digest_cache_path(), json.dumps(known, indent=0, sort_keys=True).encode())
    except (OSError, KaggleTLError):  # a read-only or full home only costs hashing again next time
        pass
