"""The one file inside a ``.7z`` archive, read into memory (statoil's ``train.json.7z``, ``sample_submission.csv.7z``).

7z archives are solid: a member cannot be read without decompressing what precedes it, so only an
archive of one file is read (in memory, bounded by ``MAX_MEMBER_BYTES`` as its header declares and as
py7zr decompresses), never one of many images; that is one line saying how to unpack it.
"""
from __future__ import annotations

import lzma
from pathlib import Path

from kaggle_tl.errors import KaggleTLError, one_line

MAX_MEMBER_BYTES = 4 * 2 ** 30  # statoil's train.json is ~0.2 GB; a larger declared size is refused before reading


def read_single_file(path: Path, what: str) -> bytes:
    """The bytes of the one file ``path`` holds, or one line: not a 7z, several files, too large, damaged."""
    import py7zr
    from py7zr.exceptions import ArchiveError
    from py7zr.io import BytesIOFactory

    try:
        with py7zr.SevenZipFile(path, "r") as archive:
            if archive.needs_password():
                raise KaggleTLError(f"{path}: a password-protected 7z archive; unpack it with its password")
            members = [info for info in archive.list() if not info.is_directory]
            if len(members) != 1:
                raise KaggleTLError(f"{path}: a 7z archive of {what} must hold exactly one file, found "
                                    f"{len(members)}; unpack it (python -m py7zr x {path.name})")
            if members[0].uncompressed > MAX_MEMBER_BYTES:
                raise KaggleTLError(f"{path}: declares {members[0].uncompressed / 2 ** 30:.1f} GiB unpacked, more than "
                                    f"kaggle_tl reads into memory ({MAX_MEMBER_BYTES / 2 ** 30:.0f} GiB); unpack it")
            factory = BytesIOFactory(limit=MAX_MEMBER_BYTES)
            archive.extract(targets=[members[0].filename], factory=factory)
    except KaggleTLError:
        raise
    except FileNotFoundError:
        raise KaggleTLError(f"{path}: {what} file not found") from None
    except (ArchiveError, lzma.LZMAError, EOFError, OSError, ValueError, KeyError) as exc:  # damaged: py7zr's own
        raise KaggleTLError(f"{path}: {what} is damaged or not the 7z archive its name says ({one_line(exc)})") \
            from None
    products = getattr(factory, "products", {})
    if members[0].filename not in products:
        raise KaggleTLError(f"{path}: {what}: {members[0].filename} could not be read from the archive")
    return products[members[0].filename].read()
