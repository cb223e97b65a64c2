"""Reading the CSVs a competition ships and a user submits: plain or compressed, header checked, ids as text."""
from __future__ import annotations

import bz2
import csv
import gzip
import io
import lzma
import zipfile
from pathlib import Path

import pandas as pd

from kaggle_tl.data.sevenzip import read_single_file
from kaggle_tl.errors import KaggleTLError, one_line

# Kaggle ships some CSVs compressed (sample_submission.csv.zip): read where the plain file is absent.
COMPRESSED_SUFFIXES = (".zip", ".gz", ".bz2", ".xz", ".7z")


def locate_csv(root: Path, name: str) -> Path:
    """``root/name``, or its compressed form (``name.zip``...) when only that exists."""
    path = root / name
    if not path.exists():
        for suffix in COMPRESSED_SUFFIXES:
            if (root / f"{name}{suffix}").is_file():
                return root / f"{name}{suffix}"
    return path


def read_text_csv(path: str | Path, what: str, required: list[str]) -> pd.DataFrame:
    """A CSV of strings with the ``required`` columns and at least one row, or one line naming ``what`` is wrong.

    Every CSV kaggle_tl reads (labels, sample submissions, submissions to score) comes through here,
    plain or compressed as Kaggle ships them (``.zip`` or ``.7z`` holding one CSV, ``.gz``, ``.bz2``, ``.xz``).
    """
    path = Path(path)
    text = _csv_text(path, what)
    try:
        # dtype=str: ids like "00123" must keep their zeros; keep_default_na: "NA" is a valid id.
        frame = pd.read_csv(io.StringIO(text), dtype=str, keep_default_na=False)
    except (pd.errors.ParserError, pd.errors.EmptyDataError) as exc:
        raise KaggleTLError(f"{path}: {what} is not a readable CSV ({one_line(exc)})") from None
    row_index = _is_written_index(text, frame)
    if row_index:  # iwildcam-2019's sample submission: ",Id,Category", then "0,<uuid>,0", "1,..."
        frame = frame.iloc[:, 1:]
        frame.attrs["row_index"] = True  # for the caller's note
    check_csv_header(path, text, frame, row_index)  # never a column the file does not have ("Unnamed: 4", "cat.1")
    missing = [c for c in required if c not in frame.columns]
    if missing:
        raise KaggleTLError(f"{path}: missing column(s) {missing} in the {what}; found {list(frame.columns)[:8]}")
    if frame.empty:
        raise KaggleTLError(f"{path}: no rows in the {what}")
    return frame


def _csv_text(path: Path, what: str) -> str:
    """The file's text, decompressed by its suffix; utf-8-sig: a CSV saved by Excel starts with a byte-order mark."""
    try:
        if path.suffix.lower() == ".zip":
            with zipfile.ZipFile(path) as archive:
                members = [m for m in archive.namelist() if not m.endswith("/") and not m.startswith("__MACOSX")]
                if len(members) != 1:
                    raise KaggleTLError(f"{path}: a zipped {what} must hold exactly one file, found {len(members)}")
                data = archive.read(members[0])
        elif path.suffix.lower() == ".7z":
            data = read_single_file(path, what)
        else:
            opener = {".gz": gzip.open, ".bz2": bz2.open, ".xz": lzma.open}.get(path.suffix.lower(), open)
            with opener(path, "rb") as handle:
                data = handle.read()
        return data.decode("utf-8-sig")
    except FileNotFoundError:
        raise KaggleTLError(f"{path}: {what} file not found") from None
    except IsADirectoryError:
        raise KaggleTLError(f"{path}: the {what} is a folder, not a CSV file") from None
    except UnicodeDecodeError as exc:
        raise KaggleTLError(f"{path}: {what} is not UTF-8 text (byte {exc.start}); save it as UTF-8") from None
    except (zipfile.BadZipFile, gzip.BadGzipFile, lzma.LZMAError, OSError, EOFError) as exc:
        if isinstance(exc, OSError) and exc.errno is not None:
            raise KaggleTLError(f"{path}: cannot read the {what} ({exc.strerror or exc})") from None
        raise KaggleTLError(f"{path}: {what} is damaged or not the compressed CSV its name says "
                            f"({one_line(exc)})") from None


def _is_written_index(text: str, frame: pd.DataFrame) -> bool:
    """Whether the file's first column is a row index pandas wrote (``to_csv`` without ``index=False``): an
    empty first header cell over the rows' positions 0, 1, 2, ... and at least one named column after it."""
    header = next((row for row in csv.reader(io.StringIO(text, newline="")) if row), [])
    return (len(header) > 1 and header[0] == "" and "" not in header[1:] and isinstance(frame.index, pd.RangeIndex)
            and frame.iloc[:, 0].tolist() == [str(i) for i in range(len(frame))])


def check_csv_header(path: Path, text: str, frame: pd.DataFrame, row_index: bool = False) -> None:
    """Stop unless ``frame`` (read from ``text``, the file's content, by pandas) has exactly the file's header
    (after its first column, with ``row_index``: a written row index, left out of ``frame``).

    pandas renames an empty header cell ("id,cat,dog,", a trailing comma) to "Unnamed: 3" and a
    repeated one to "cat.1", and makes the first column the index when rows have more fields
    than the header: each would invent a submission column or label that the file does not have.
    The header is read here with the csv module, which renames nothing.
    """
    rows = csv.reader(io.StringIO(text, newline=""))
    header = next((row for row in rows if row), [])[row_index:]  # pandas skips blank lines before the header
    first_position: dict[str, int] = {}
    for position, name in enumerate(header, start=1):
        if name == "":
            raise KaggleTLError(f"{path}: empty column name at position {position} of the header "
                                f"(a trailing comma?); name the column or remove it")
        if name in first_position:
            raise KaggleTLError(f"{path}: duplicated column {name!r} in the header (positions "
                                f"{first_position[name]} and {position}); rename or remove one")
        first_position[name] = position
    if not isinstance(frame.index, pd.RangeIndex):
        line = next((rows.line_num for row in rows if len(row) > len(header) + row_index), "?")
        raise KaggleTLError(f"{path}: line {line} has more fields than the {len(header)} of the header "
                            f"(a trailing comma?)")
    if list(frame.columns) != header:
        raise KaggleTLError(f"{path}: header {header[:8]} was read as {list(frame.columns)[:8]}")
