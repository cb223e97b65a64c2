"""Content digests of weights and model files, remembered by (path, size, mtime) between runs.

A weights file is named by its SHA-256 in the feature cache key. Hashing a 90 MB file takes
about a second, so each digest is kept in ``digests.json`` under ``$XDG_CACHE_HOME/kaggle_tl``
(default ``~/.cache/kaggle_tl``) and reused while the file's size and mtime stay the same.
"""
from __future__ import annotations

import hashlib
import json
import os
import time
from pathlib import Path

from kaggle_tl.cache import atomic_write_bytes

# A file modified within this many seconds of being hashed could change again within the same
# mtime tick (coarse on some filesystems) at the same size: its digest is not remembered.
_RACY_SECONDS = 2.0


def digest_cache_path() -> Path:
    root = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(root) / "kaggle_tl" / "digests.json"


def file_digest(path: str | os.PathLike) -> str:
    """SHA-256 hex digest of a file's content, from the digest cache when size and mtime match."""
    path = os.path.realpath(path)
    stat = os.stat(path)
    stamp = [stat.st_size, stat.st_mtime_ns]
    known = _read_cache()
    entry = known.get(path)
    if entry and entry.get("stamp") == stamp:
        return entry["sha256"]
    digest = _sha256(path)
    if time.time() - stat.st_mtime > _RACY_SECONDS:
        known[path] = {"stamp": stamp, "sha256": digest}
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
    except OSError:  # a read-only or full home only costs hashing again next time
        pass
