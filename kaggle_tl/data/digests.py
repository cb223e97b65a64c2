"""Content hashes of a competition's data: files, ordered image lists, and the data set's identity."""
from __future__ import annotations

import hashlib
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING

from kaggle_tl.data.archives import ArchiveMember, ImagePath
from kaggle_tl.data.dicom import scan_digest
from kaggle_tl.errors import KaggleTLError

if TYPE_CHECKING:
    from kaggle_tl.data.competition import Competition


def file_digest(path: str | ImagePath) -> str:
    """SHA-1 of a file's bytes; of an image inside a zip, of its unpacked bytes (the same as the unzipped file's);
    of a scan folder, of what its picture is made of (``dicom.scan_digest``)."""
    try:
        if isinstance(path, ArchiveMember):
            return hashlib.sha1(path.read_bytes()).hexdigest()
        if os.path.isdir(path):
            return scan_digest(Path(path))
        with open(path, "rb") as handle:
            return hashlib.file_digest(handle, "sha1").hexdigest()
    except OSError as exc:
        raise KaggleTLError(f"{path}: cannot read ({exc.strerror or exc})") from None


def image_set_key(paths: list[ImagePath], threads: int = 8) -> str:
    """Content hash of an ordered image list: a changed, added or reordered image changes it."""
    with ThreadPoolExecutor(max_workers=threads) as pool:
        digests = list(pool.map(file_digest, paths))
    return hashlib.sha1("\n".join(digests).encode()).hexdigest()


def data_fingerprint(competition: Competition, train_key: str, test_key: str) -> str:
    """Identity of a competition's data: runs are comparable only when this matches."""
    h = hashlib.sha1()
    side = competition.side
    for part in (competition.classes, competition.train_ids, competition.y.tolist(),
                 competition.test_ids, [train_key, test_key],
                 [side.digest("train"), side.digest("test")] if side is not None else []):
        h.update(repr(part).encode())
    return h.hexdigest()[:16]
