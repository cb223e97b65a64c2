"""Images stored as NumPy arrays (``.npy``), as seti-breakthrough-listen ships its cadence snippets.

An array becomes an 8-bit RGB image by one rule, the same for every file:

- shape (H, W): one grey plane; (H, W, C) with C of 1, 3 or 4: channels last (the 4th, alpha, dropped);
  (C, H, W) with C of at most ``MAX_PLANES`` and more than 4 columns: the C planes stacked top to
  bottom as one grey plane (seti's (6, 273, 256) float16 cadences: 1638 x 256);
- uint8 values are the pixels; any other number type is scaled linearly from the file's own minimum to
  its maximum onto 0..255 (a constant array is black), so each file uses the whole range.

The header is read before the data (``npy_problem``): a damaged or foreign header, Python objects
(never unpickled), a non-numeric type, a shape that is no image, more pixels than kaggle_tl decodes,
or data shorter than the header declares is a bad image, named like any other; so is a NaN or an
infinite value.
"""
from __future__ import annotations

import io
import math

import numpy as np

NPY_MAGIC = b"\x93NUMPY"
MAX_PLANES = 16  # (C, H, W) with more planes than this is a volume or a batch, not one image


NPY_HEAD_BYTES = 4096  # numpy writes headers of 64-128 bytes; more than this is a damaged file


def npy_problem(head: bytes, size: int, max_pixels: int) -> str | None:
    """What keeps an .npy file of ``size`` bytes from being an image, from its header alone (in ``head``, the
    file's first bytes); None when nothing does."""
    try:
        shape, dtype, offset = _header(head[:NPY_HEAD_BYTES])
    except ValueError as exc:
        return f"damaged NPY header ({' '.join(str(exc).split())[:120]})"
    if dtype.hasobject or dtype.kind not in "biuf":
        return f"an NPY array of {dtype} is not an image (numbers only)"
    height, width = _image_size(shape)
    if height == 0:
        return f"an NPY array of shape {shape} is not an image ((H, W), (H, W, 1|3|4) or (C <= {MAX_PLANES}, H, W))"
    if height * width > max_pixels:
        return f"an NPY array of {width} x {height} pixels, more than kaggle_tl decodes ({max_pixels / 1e6:.0f} MP)"
    needed = offset + math.prod(shape) * dtype.itemsize
    if size < needed:
        return f"truncated NPY ({size} of {needed} bytes)"
    return None


def array_image(data: bytes) -> tuple[np.ndarray | None, str | None]:
    """(the (H, W, 3) uint8 RGB image of an .npy file's bytes that passed ``npy_problem``, None), or (None, why not)."""
    array = np.load(io.BytesIO(data), allow_pickle=False)
    if array.dtype.kind == "b":
        array = array.astype(np.uint8) * 255
    if array.ndim == 3 and array.shape[-1] not in (1, 3, 4):
        array = array.reshape(-1, array.shape[-1])  # (C, H, W): the planes one below the other
    elif array.ndim == 3:
        array = array[..., :3]
    if array.dtype != np.uint8:
        values = array.astype(np.float64)
        if not np.isfinite(values).all():
            return None, "an NPY array holding NaN or infinite values"
        low, high = values.min(), values.max()
        array = np.zeros(values.shape, np.uint8) if high == low else \
            np.round((values - low) * (255.0 / (high - low))).astype(np.uint8)
    if array.ndim == 2 or array.shape[-1] == 1:
        array = np.repeat(array.reshape(array.shape[0], array.shape[1], 1), 3, axis=2)
    return np.ascontiguousarray(array), None


def _header(data: bytes) -> tuple[tuple[int, ...], np.dtype, int]:
    stream = io.BytesIO(data)
    major, _ = np.lib.format.read_magic(stream)
    reader = np.lib.format.read_array_header_1_0 if major == 1 else np.lib.format.read_array_header_2_0
    shape, _, dtype = reader(stream)  # numpy bounds the header's size (max_header_size) and evaluates no code
    return tuple(shape), dtype, stream.tell()


def _image_size(shape: tuple[int, ...]) -> tuple[int, int]:
    """(height, width) of the image an array of ``shape`` becomes; (0, 0) when it is none."""
    if len(shape) == 2 and min(shape) > 0:
        return shape
    if len(shape) == 3 and min(shape) > 0:
        if shape[2] in (1, 3, 4):
            return shape[0], shape[1]
        if shape[0] <= MAX_PLANES and shape[2] > 4:
            return shape[0] * shape[1], shape[2]
    return 0, 0
