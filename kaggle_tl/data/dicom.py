"""Medical images in DICOM (``.dcm``), as the RSNA and SIIM competitions ship them, and scan folders of them.

A DICOM file becomes an 8-bit RGB image by one rule, the same for every file:

- grey pixels (MONOCHROME1/2) get the file's modality rescale (slope, intercept), are clipped to the
  file's first VOI window when it has one (the view a radiologist is shown), then scaled linearly from
  their minimum to their maximum onto 0..255 (a constant slice is black); MONOCHROME1 (white is 0) is
  inverted; the grey plane is repeated into three channels;
- colour pixels (RGB, YBR: pydicom converts YBR to RGB) are kept, scaled the same way when not 8-bit;
- a file of several frames gives its middle frame.

Compressed pixel data (JPEG, JPEG-LS, JPEG 2000, RLE) is decoded by pydicom's plugins (pylibjpeg); a file
pydicom cannot read, one whose pixel data is shorter than its header declares, or one declaring more pixels
than kaggle_tl decodes is a bad image, named like any other. pydicom's own warnings (odd header values that
change no pixel) never reach the terminal.

A **scan folder** is one id's folder of DICOM series: rsna-miccai-brain-tumor-radiogenomic-classification's
``train/<id>/{FLAIR,T1w,T1wCE,T2w}/Image-<n>.dcm``, or one series' slices directly in ``<id>/``. Its image
is the middle slice of each series (slices in the natural order of their file names: ``Image-9`` before
``Image-10``), each scaled on its own and fitted into a ``TILE`` x ``TILE`` cell, the cells side by side
on a near-square grid, series in name order: one picture showing every sequence of the scan. Its digest
covers what the picture is made of: each series' name, slice count and middle slice's bytes.
"""
from __future__ import annotations

import hashlib
import io
import logging
import math
import os
import re
import warnings
from pathlib import Path

import cv2
import numpy as np

DICOM_EXTENSIONS = (".dcm", ".dicom")
DICOM_MAGIC_AT = 128  # "DICM" follows a 128-byte preamble in every DICOM file (PS3.10 7.1)
DICOM_MAGIC = b"DICM"
TILE = 256  # a scan folder's cell: 4 series make a 512 x 512 picture, about what the backbones take
SCAN_DIGEST_VERSION = 1  # bump when the picture a scan folder makes changes


def is_dicom(head: bytes) -> bool:
    return head[DICOM_MAGIC_AT:DICOM_MAGIC_AT + 4] == DICOM_MAGIC


def _quiet_pydicom():
    """pydicom, its warnings kept off the terminal (they name header values, never a pixel)."""
    import pydicom
    logging.getLogger("pydicom").setLevel(logging.ERROR)
    return pydicom


def dicom_problem(data: bytes, max_pixels: int) -> str | None:
    """What keeps a DICOM file's bytes from being an image, from its header and the length of its pixel data
    (uncompressed: shorter than the header declares is a truncated file); None when nothing does."""
    pydicom = _quiet_pydicom()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            dataset = pydicom.dcmread(io.BytesIO(data))
            rows, columns = int(dataset.get("Rows", 0) or 0), int(dataset.get("Columns", 0) or 0)
            planes = int(dataset.get("SamplesPerPixel", 1) or 1) * int(dataset.get("NumberOfFrames", 1) or 1)
            bits = int(dataset.get("BitsAllocated", 8) or 8)
            if str(dataset.get("PhotometricInterpretation", "")) == "YBR_FULL_422":  # chroma halved: 2 samples a pixel
                planes = planes * 2 // 3
            pixel_bytes = len(dataset.PixelData) if "PixelData" in dataset else 0
    except Exception as exc:  # pydicom raises many kinds for damaged headers (and values such as '1A')
        return f"damaged DICOM header ({' '.join(str(exc).split())[:120]})"
    if not rows or not columns or not pixel_bytes:
        return "a DICOM file without pixel data (no Rows/Columns/PixelData: a report or a structure set?)"
    if rows * columns > max_pixels:
        return f"a DICOM image of {columns} x {rows} pixels, more than kaggle_tl decodes ({max_pixels / 1e6:.0f} MP)"
    syntax = getattr(dataset, "file_meta", {}).get("TransferSyntaxUID")
    needed = (rows * columns * planes * bits + 7) // 8
    if syntax is not None and not syntax.is_compressed and pixel_bytes < needed:
        return f"truncated DICOM ({pixel_bytes} of {needed} bytes of pixel data)"
    return None


def dicom_image(data: bytes) -> tuple[np.ndarray | None, str | None]:
    """(the (H, W, 3) uint8 RGB image of a DICOM file's bytes that passed ``dicom_problem``, None), or (None, why
    not)."""
    pydicom = _quiet_pydicom()
    from pydicom.pixels import apply_modality_lut
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            dataset = pydicom.dcmread(io.BytesIO(data))
            pixels = dataset.pixel_array
            frames = int(dataset.get("NumberOfFrames", 1) or 1)
            if frames > 1:
                pixels = pixels[frames // 2]
            colour = int(dataset.get("SamplesPerPixel", 1) or 1) > 1
            if not colour:
                pixels = apply_modality_lut(pixels, dataset)
    except Exception as exc:  # a missing decoder plugin, pixel data shorter than declared, a damaged stream
        return None, f"DICOM pixel data not decodable ({' '.join(str(exc).split())[:160]})"
    values = pixels.astype(np.float64)
    if not np.isfinite(values).all():
        return None, "DICOM pixel data holding NaN or infinite values"
    if not colour:
        window = _first_window(dataset)
        if window is not None:
            center, width = window
            values = np.clip(values, center - width / 2, center + width / 2)
    if colour and pixels.dtype == np.uint8:
        return np.ascontiguousarray(pixels[..., :3]), None
    image = _to_uint8(values)
    if not colour:
        if str(dataset.get("PhotometricInterpretation", "")) == "MONOCHROME1":
            image = 255 - image
        image = np.repeat(image[..., None], 3, axis=2)
    return np.ascontiguousarray(image[..., :3]), None


def _first_window(dataset) -> tuple[float, float] | None:
    """The (center, width) of the file's first VOI window, None when it has none (or a width that is no window)."""
    from pydicom.multival import MultiValue
    center, width = dataset.get("WindowCenter"), dataset.get("WindowWidth")
    if center is None or width is None:
        return None
    try:
        center = float(center[0] if isinstance(center, MultiValue) else center)
        width = float(width[0] if isinstance(width, MultiValue) else width)
    except (TypeError, ValueError, IndexError):
        return None
    return (center, width) if width > 1 and math.isfinite(center) and math.isfinite(width) else None


def _to_uint8(values: np.ndarray) -> np.ndarray:
    low, high = values.min(), values.max()
    if high == low:
        return np.zeros(values.shape, np.uint8)
    return np.round((values - low) * (255.0 / (high - low))).astype(np.uint8)


def _natural(name: str) -> list:
    return [int(part) if part.isdigit() else part.lower() for part in re.split(r"(\d+)", name)]


def _entries(folder: Path) -> list[os.DirEntry]:
    try:
        return [e for e in os.scandir(folder) if not e.name.startswith(".")]
    except OSError:  # unreadable: no series (the listing of the competition says why)
        return []


def _dicom_files(folder: Path) -> list[Path]:
    return sorted((Path(e.path) for e in _entries(folder) if e.is_file()
                   and Path(e.name).suffix.lower() in DICOM_EXTENSIONS), key=lambda p: _natural(p.name))


def scan_series(folder: Path) -> list[tuple[str, list[Path]]]:
    """(name, slices in natural name order) of each DICOM series of a scan folder: its own .dcm files (named ".")
    first, then each sub-folder holding .dcm files, by name; [] when it holds none."""
    found = [(".", _dicom_files(folder))]
    found += [(e.name, _dicom_files(Path(e.path))) for e in sorted(_entries(folder), key=lambda e: e.name)
              if e.is_dir()]
    return [(name, slices) for name, slices in found if slices]


def middle_slices(folder: Path) -> list[tuple[str, int, Path]]:
    """(series name, slice count, middle slice) of each series of a scan folder."""
    return [(name, len(slices), slices[len(slices) // 2]) for name, slices in scan_series(folder)]


def scan_problem(folder: Path, problem_of) -> str | None:
    """What keeps a scan folder from being an image: the first middle slice that is a bad image
    (``problem_of(path)``, images.image_problem), named by its path inside the folder."""
    for _, _, path in middle_slices(folder):
        problem = problem_of(path)
        if problem is not None:
            return f"{path.relative_to(folder).as_posix()}: {problem}"
    return None


def scan_image(folder: Path, read_slice) -> np.ndarray:
    """The picture of a scan folder (see the module's docstring); ``read_slice(path)`` decodes one slice
    (images.read_image, which raises ImageError for a bad one)."""
    chosen = middle_slices(folder)
    cells = [_fit(read_slice(path)) for _, _, path in chosen]
    columns = math.ceil(math.sqrt(len(cells)))
    rows = math.ceil(len(cells) / columns)
    picture = np.zeros((rows * TILE, columns * TILE, 3), np.uint8)
    for i, cell in enumerate(cells):
        top, left = (i // columns) * TILE, (i % columns) * TILE
        picture[top:top + TILE, left:left + TILE] = cell
    return picture


def _fit(image: np.ndarray) -> np.ndarray:
    """``image`` scaled to fit a TILE x TILE cell, aspect kept, centred on black (a scan's background)."""
    h, w = image.shape[:2]
    scale = TILE / max(h, w)
    height, width = max(1, round(h * scale)), max(1, round(w * scale))
    interpolation = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
    resized = cv2.resize(image, (width, height), interpolation=interpolation)
    cell = np.zeros((TILE, TILE, 3), np.uint8)
    top, left = (TILE - height) // 2, (TILE - width) // 2
    cell[top:top + height, left:left + width] = resized
    return cell


def scan_digest(folder: Path) -> str:
    """SHA-1 of what a scan folder's picture is made of: each series' name, slice count and middle slice's bytes."""
    h = hashlib.sha1(f"scan v{SCAN_DIGEST_VERSION} tile {TILE}".encode())
    for name, count, path in middle_slices(folder):
        with open(path, "rb") as handle:
            h.update(f"\n{name}\n{count}\n{path.name}\n".encode())
            h.update(hashlib.file_digest(handle, "sha1").digest())
    return h.hexdigest()
