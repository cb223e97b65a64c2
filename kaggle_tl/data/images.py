"""Decode (OpenCV, BGR -> RGB), resize and batch images; decoding runs in threads."""
from __future__ import annotations

import collections
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Callable, Iterable, Iterator, Sequence

import cv2
import numpy as np

from kaggle_tl.data.archives import ArchiveMember, ImagePath
from kaggle_tl.data.arrays import NPY_HEAD_BYTES, NPY_MAGIC, array_image, npy_problem
from kaggle_tl.data.dicom import (DICOM_EXTENSIONS, dicom_image, dicom_problem, is_dicom, scan_image, scan_problem,
                                  scan_series)
from kaggle_tl.data.jpeg import JPEG_EOI, decode_jpeg, jpeg_data_problem, jpeg_main_scan, reduction
from kaggle_tl.data.png import PNG_SIGNATURE, without_ancillary_chunks
from kaggle_tl.errors import KaggleTLError

# .npy: data.arrays; .dcm: data.dicom
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".npy", *DICOM_EXTENSIONS)
PNG_END = b"IEND\xaeB`\x82"  # the IEND chunk's type and CRC: the last 8 bytes of a whole PNG
# The first bytes read of every file: the magic number and, but for JPEG, the declared size (DICOM's magic
# number follows a 128-byte preamble).
_HEAD_BYTES, _TAIL_BYTES = 132, 64
# Decoding allocates height x width x 3 bytes before reading a pixel: a 12 KB PNG may declare
# 50,000 x 50,000. Larger than any camera's photo (~200 MP), smaller than what OpenCV refuses (2^30).
MAX_PIXELS = 2**28
# Formats people meet in Kaggle folders that kaggle_tl does not read (named, so the user knows what to convert).
UNSUPPORTED_FORMATS = ("GIF", "HEIC", "AVIF", "JPEG 2000")
# A file ending in zero bytes is called a zero-filled interrupted download only when the zeros are
# this large a share of it: uncompressed BMP/TIFF pixels may legitimately be zero bytes (black
# top rows in a bottom-up BMP), and even compressed data does end in zeros: lossy WebP of a
# constant image ends in zero bytes making up 5.4% of the file (measured, 64 px to 8000 x 6000).
ZERO_TAIL_SHARE, ZERO_TAIL_SHARE_COMPRESSED = 1 / 3, 1 / 8
_JPEG_REDUCED = {8: cv2.IMREAD_REDUCED_COLOR_8, 4: cv2.IMREAD_REDUCED_COLOR_4, 2: cv2.IMREAD_REDUCED_COLOR_2}


class ImageError(KaggleTLError):
    """An image file whose bytes cannot be used (empty, truncated, not an image, undecodable)."""

    def __init__(self, path: str | ImagePath, problem: str):
        super().__init__(f"{path}: {problem}")
        self.path, self.problem = path if isinstance(path, ArchiveMember) else Path(path), problem


def image_format(head: bytes) -> str | None:
    """The format named by a file's first bytes (its magic number), or None.

    Also names the formats of ``UNSUPPORTED_FORMATS``, so a refusal can say what the file is.
    """
    if is_dicom(head):  # first: a DICOM preamble may itself start like a TIFF (dual-format files)
        return "DICOM"
    if head.startswith(b"\xff\xd8\xff"):
        return "JPEG"
    if head.startswith(PNG_SIGNATURE):
        return "PNG"
    if head.startswith(b"BM"):
        return "BMP"
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "WebP"
    if head[:4] in (b"II*\x00", b"MM\x00*"):
        return "TIFF"
    if head[:4] == b"GIF8":
        return "GIF"
    if head.startswith(NPY_MAGIC):
        return "NPY"
    if head[4:8] == b"ftyp":  # ISO base media file: the brand says which
        brand = head[8:12]
        if brand in (b"avif", b"avis"):
            return "AVIF"
        if brand in (b"heic", b"heix", b"hevc", b"heim", b"heis", b"mif1", b"msf1"):
            return "HEIC"
    if head.startswith(b"\x00\x00\x00\x0cjP  ") or head.startswith(b"\xff\x4f\xff\x51"):
        return "JPEG 2000"
    return None


def _zero_tail(data: bytes) -> int:
    return len(data) - len(data.rstrip(b"\x00"))


def _bytes_problem(head: bytes, tail: bytes, size: int, read_all: Callable[[], bytes]) -> str | None:
    """What is wrong with an image file, judged from its size, first and last bytes, without decoding.

    ``read_all`` is called only for a file that does not end the usual way (trailing bytes after
    the end marker are legal, and so is zero padding after it), so a whole scan reads a few
    dozen bytes per healthy file.
    """
    if size == 0:
        return "empty file (0 bytes)"
    kind = image_format(head)
    if kind is None:
        return f"not an image (unrecognised file header {head[:8]!r})"
    if kind in UNSUPPORTED_FORMATS:
        return f"{kind} is not supported; convert to PNG/JPEG"
    if kind == "NPY":  # the array's header, longer than the head of other formats: data.arrays
        return npy_problem(head if len(head) >= min(size, NPY_HEAD_BYTES) else read_all(), size, MAX_PIXELS)
    if kind == "DICOM":  # its header is read whole (pydicom): data.dicom
        return dicom_problem(read_all(), MAX_PIXELS)
    # Interrupted downloads are often zero-filled to their full size: ignore trailing NULs.
    end = tail.rstrip(b"\x00")
    if kind == "JPEG" and not end.endswith(JPEG_EOI):
        # Entropy-coded data never holds FF D9, so an end-of-image marker after the main image's
        # first scan means the file is whole and merely has trailing data.
        data = read_all()
        sos = jpeg_main_scan(data)
        if sos < 0 or data.find(JPEG_EOI, sos) < 0:
            return "truncated JPEG (no end-of-image marker)"
    if kind == "PNG" and not end.endswith(PNG_END) and PNG_END not in read_all():
        return "truncated PNG (no IEND chunk)"
    dims = _declared_size(kind, head)
    if dims is not None and dims[0] * dims[1] > MAX_PIXELS:
        return (f"declares {dims[1]} x {dims[0]} pixels ({dims[0] * dims[1] / 1e6:.0f} MP), more than kaggle_tl "
                f"decodes ({MAX_PIXELS / 1e6:.0f} MP); shrink it")
    declared = size
    if kind in ("BMP", "WebP") and len(head) >= 8:
        # BMP stores the file size at bytes 2-5, RIFF the size after byte 8 at bytes 4-7.
        declared = int.from_bytes(head[2:6], "little") if kind == "BMP" else int.from_bytes(head[4:8], "little") + 8
        if declared > size:
            return f"truncated {kind} ({size} of {declared} bytes)"
    if kind == "TIFF" and _tiff_directory(head) + 2 > size:
        return f"truncated TIFF (its directory is at byte {_tiff_directory(head)} of {size})"
    if kind in ("BMP", "WebP", "TIFF") and len(end) < len(tail):  # the file ends in zero bytes
        # Count them; only when the whole tail is zeros is the rest of the file read.
        data = b"" if end else read_all()
        padding = size - declared if 0 < declared <= size else 0  # zeros past a declared end are legal
        zeros = (len(tail) - len(end) if end else _zero_tail(data)) - padding
        if kind == "TIFF" and _tiff_directory(head) >= size - zeros:
            return (f"zero-filled TIFF (its directory at byte {_tiff_directory(head)} is in the last {zeros} "
                    f"bytes, all zeros)")
        if zeros >= size * ZERO_TAIL_SHARE_COMPRESSED:
            compressed = kind == "WebP" or (kind == "TIFF" and _tiff_compression(data or read_all()) != 1)
            if zeros >= size * (ZERO_TAIL_SHARE_COMPRESSED if compressed else ZERO_TAIL_SHARE):
                return f"zero-filled {kind} (its last {zeros} of {size} bytes are zeros: an interrupted download?)"
    return None


def _declared_size(kind: str, head: bytes) -> tuple[int, int] | None:
    """(height, width) as the file's header declares them, before any pixel is decoded; None if unknown.

    Not for JPEG: libjpeg decodes a large JPEG at a reduced size (``read_image``), and OpenCV's
    own refusal of a huge one becomes an ImageError at decode time.
    """
    if kind == "PNG" and len(head) >= 24:
        return int.from_bytes(head[20:24], "big"), int.from_bytes(head[16:20], "big")
    if kind == "BMP" and len(head) >= 26:
        width, height = (int.from_bytes(head[18:22], "little", signed=True),
                         int.from_bytes(head[22:26], "little", signed=True))
        return abs(height), abs(width)  # a negative height means top-down rows
    if kind == "WebP" and len(head) >= 30:
        chunk = head[12:16]
        if chunk == b"VP8X":
            return int.from_bytes(head[27:30], "little") + 1, int.from_bytes(head[24:27], "little") + 1
        if chunk == b"VP8 ":
            return int.from_bytes(head[28:30], "little") & 0x3FFF, int.from_bytes(head[26:28], "little") & 0x3FFF
        if chunk == b"VP8L":
            bits = int.from_bytes(head[21:25], "little")
            return ((bits >> 14) & 0x3FFF) + 1, (bits & 0x3FFF) + 1
    if kind == "TIFF":
        return _tiff_size(head) if _tiff_directory(head) + 2 < len(head) else None
    return None


def _tiff_size(data: bytes) -> tuple[int, int] | None:
    """ImageLength (257) and ImageWidth (256) of a TIFF's first directory."""
    order = "little" if data[:2] == b"II" else "big"
    offset = _tiff_directory(data)
    found = {}
    count = int.from_bytes(data[offset:offset + 2], order)
    for entry in range(offset + 2, min(len(data) - 11, offset + 2 + 12 * count), 12):
        tag, kind = int.from_bytes(data[entry:entry + 2], order), int.from_bytes(data[entry + 2:entry + 4], order)
        if tag in (256, 257):
            width = 2 if kind == 3 else 4  # SHORT or LONG
            found[tag] = int.from_bytes(data[entry + 8:entry + 8 + width], order)
    return (found[257], found[256]) if len(found) == 2 else None


def _tiff_directory(head: bytes) -> int:
    """Offset of a TIFF's first image directory (IFD), from bytes 4-7 of its header."""
    return int.from_bytes(head[4:8], "little" if head[:2] == b"II" else "big")


def _tiff_compression(data: bytes) -> int:
    """The Compression tag (259) of a TIFF's first directory; 1 (none) when absent, as the spec says."""
    order = "little" if data[:2] == b"II" else "big"
    offset = _tiff_directory(data)
    count = int.from_bytes(data[offset:offset + 2], order)
    for entry in range(offset + 2, offset + 2 + 12 * count, 12):
        if int.from_bytes(data[entry:entry + 2], order) == 259:
            return int.from_bytes(data[entry + 8:entry + 10], order)
    return 1


def image_problem(path: str | ImagePath) -> str | None:
    """A cheap check of one image file (magic number, size, end marker), or None if it looks whole.

    It catches empty, truncated, zero-filled, unsupported and non-image files without decoding;
    a file that passes can still fail to decode (corrupt data inside), which extraction then reports.
    An image inside a zip is read whole, which checks its bytes against the zip's CRC. A scan folder
    (``dicom.scan_series``) is checked by its middle slices.
    """
    if not isinstance(path, ArchiveMember) and os.path.isdir(path) and scan_series(Path(path)):
        return scan_problem(Path(path), image_problem)
    if isinstance(path, ArchiveMember):
        try:
            data = path.read_bytes()
        except OSError as exc:
            return f"cannot read ({exc.strerror or exc})"
        return _bytes_problem(data[:_HEAD_BYTES], data[-_TAIL_BYTES:], len(data), lambda: data)
    try:
        with open(path, "rb") as handle:
            head = handle.read(_HEAD_BYTES)
            if head.startswith(NPY_MAGIC):
                head += handle.read(NPY_HEAD_BYTES - len(head))
            size = handle.seek(0, 2)
            handle.seek(max(0, size - _TAIL_BYTES))
            tail = handle.read()
    except OSError as exc:
        return f"cannot read ({exc.strerror or exc})"
    return _bytes_problem(head, tail, size, lambda: Path(path).read_bytes())


def find_bad_images(paths: Sequence[str | ImagePath], threads: int = 8) -> dict[int, str]:
    """{position in ``paths``: problem} for every file that fails ``image_problem``."""
    with ThreadPoolExecutor(max_workers=max(1, threads), thread_name_prefix="scan") as pool:
        problems = list(pool.map(image_problem, paths))
    return {i: problem for i, problem in enumerate(problems) if problem is not None}


def read_image(path: str | ImagePath, min_side: int | None = None) -> np.ndarray:
    """Decode an image file to an (H, W, 3) uint8 RGB array.

    Grayscale, RGBA (alpha dropped, not composited), CMYK and 16-bit files all come out as
    8-bit RGB. EXIF orientation is applied (OpenCV's default), so a phone photo is seen the way
    a viewer shows it. Raises ImageError for unusable bytes (the same checks as
    ``image_problem``, then the decode), KaggleTLError if the file cannot be read.

    With ``min_side``, a JPEG may be decoded at 1/2, 1/4 or 1/8 scale (libjpeg's DCT scaling,
    several times faster on large photos): the largest reduction whose shorter side is still at
    least ``min_side`` pixels, so a later resize to at most ``min_side`` only shrinks.
    """
    path = path if isinstance(path, ArchiveMember) else Path(path)
    if isinstance(path, Path) and path.is_dir() and scan_series(path):  # a scan folder: its series' middle slices
        return scan_image(path, read_image)
    try:
        # np.fromfile + imdecode rather than imread: imread mishandles non-ASCII paths on Windows.
        data = (np.frombuffer(path.read_bytes(), dtype=np.uint8) if isinstance(path, ArchiveMember)
                else np.fromfile(path, dtype=np.uint8))
    except FileNotFoundError as exc:
        raise KaggleTLError(f"{path}: cannot read ({exc.strerror or exc})") from None
    except OSError as exc:
        if isinstance(path, ArchiveMember):  # the member's bytes fail the zip's CRC: the image's fault, as a bad file's
            raise ImageError(path, f"cannot read ({exc})") from None
        raise KaggleTLError(f"{path}: cannot read ({exc.strerror or exc})") from None
    # Some OpenCV builds decode a truncated JPEG partially (grey bottom rows) without failing.
    problem = _bytes_problem(data[:_HEAD_BYTES].tobytes(), data[-_TAIL_BYTES:].tobytes(), data.size, data.tobytes)
    if problem is None and image_format(data[:_HEAD_BYTES].tobytes()) == "JPEG":
        problem = jpeg_data_problem(memoryview(data))
    if problem:
        raise ImageError(path, problem)
    kind = image_format(data[:_HEAD_BYTES].tobytes())
    if kind == "NPY":
        image, problem = array_image(data.tobytes())
        if problem:
            raise ImageError(path, problem)
        return image
    if kind == "DICOM":
        image, problem = dicom_image(data.tobytes())
        if problem:
            raise ImageError(path, problem)
        return image
    if kind == "JPEG":  # libjpeg-turbo, strict (data.jpeg); a CMYK one, checked there, is decoded by OpenCV below
        image, problem = decode_jpeg(data, reduction(memoryview(data), min_side), MAX_PIXELS)
        if problem:
            raise ImageError(path, problem)
        if image is not None:
            return image
    if kind == "PNG":  # libpng's warnings about colour profiles and text, which change no pixel, never print
        data = np.frombuffer(without_ancillary_chunks(memoryview(data)), dtype=np.uint8)
    try:
        image = cv2.imdecode(data, _decode_flags(data, min_side))
    except cv2.error as exc:  # OpenCV raises rather than returning None for some damage and for huge images
        raise ImageError(path, f"not a decodable image ({' '.join(str(exc).split())[-200:]})") from None
    if image is None or image.size == 0:
        raise ImageError(path, "not a decodable image")
    # OpenCV decodes to BGR while every Keras preprocess_input expects RGB; public kernels that
    # skip this swap feed the networks colour-swapped images.
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def _decode_flags(data: np.ndarray, min_side: int | None) -> int:
    """IMREAD_COLOR, or the reduced-size JPEG decode ``jpeg.reduction`` allows (for the CMYK JPEGs OpenCV decodes).

    The reduced flags include IMREAD_COLOR, so EXIF orientation and CMYK handling are the same.
    """
    if image_format(data[:_HEAD_BYTES].tobytes()) != "JPEG":
        return cv2.IMREAD_COLOR
    return _JPEG_REDUCED.get(reduction(memoryview(data), min_side), cv2.IMREAD_COLOR)


# By measurement (EfficientNet-Lite0, logistic regression, 5-fold CV; README "Resize policy"): pad
# beat squash and crop on the non-square demo (log loss 0.238 vs 0.289 vs 0.340) and equals squash
# on square images such as CIFAR-10, where crop did worse (0.695 vs 0.649).
DEFAULT_RESIZE = "pad"
CROP_FRACTION = 0.875  # ImageNet evaluation: shorter side to size / 0.875, then the centre size x size
# Letterbox colour: the ImageNet mean RGB, which every preprocessing convention (caffe, torch, tf,
# in-model normalisation) maps to about 0, so the bars add the least signal a network can see.
PAD_RGB = (124, 116, 104)


def _resize_to(image: np.ndarray, width: int, height: int) -> np.ndarray:
    h, w = image.shape[:2]
    if (h, w) == (height, width):
        return image
    # INTER_AREA avoids aliasing when shrinking. Enlarging is bilinear: cubic's overshoot cost
    # 5 points of CV accuracy on CIFAR's 32 px images with EfficientNet-Lite0 (0.629 vs 0.678).
    interpolation = cv2.INTER_AREA if h * w >= width * height else cv2.INTER_LINEAR
    return cv2.resize(image, (width, height), interpolation=interpolation)


def resize_square(image: np.ndarray, size: int) -> np.ndarray:
    """Resize to size x size (aspect not kept, as Keras' load_img(target_size) does)."""
    return _resize_to(image, size, size)


def resize_crop(image: np.ndarray, size: int) -> np.ndarray:
    """The centre square of the shorter side x 0.875, resized to size x size (ImageNet evaluation style).

    The same pixels as resizing the shorter side to size / 0.875 and cropping the centre, but
    cropped in source pixels first, so nothing larger than the source or the output is ever
    allocated (a 1 x 200,000 strip resized first would ask for gigabytes).
    """
    h, w = image.shape[:2]
    side = max(1, round(min(h, w) * CROP_FRACTION))
    top, left = (h - side) // 2, (w - side) // 2
    return _resize_to(image[top:top + side, left:left + side], size, size)


def resize_pad(image: np.ndarray, size: int) -> np.ndarray:
    """Longer side to size (aspect kept), centred on a size x size square of ``PAD_RGB``."""
    h, w = image.shape[:2]
    scale = size / max(h, w)
    width, height = max(1, min(size, round(w * scale))), max(1, min(size, round(h * scale)))
    top, left = (size - height) // 2, (size - width) // 2
    # Only the borders are filled: filling the whole square first cost 0.2 ms an image at 224 px,
    # most of the resize time of a square image (benchmarks/runtimes.py).
    return cv2.copyMakeBorder(_resize_to(image, width, height), top, size - height - top, left, size - width - left,
                              cv2.BORDER_CONSTANT, value=PAD_RGB)


RESIZERS: dict[str, Callable[[np.ndarray, int], np.ndarray]] = {
    "squash": resize_square, "crop": resize_crop, "pad": resize_pad}
RESIZE_POLICIES = tuple(RESIZERS)


def check_resize(resize: str) -> str:
    """``resize`` if it names a policy, else the one-line refusal."""
    if resize not in RESIZERS:
        raise KaggleTLError(f"resize: unknown policy {resize!r}; choose from {', '.join(RESIZE_POLICIES)}")
    return resize


def resize_image(image: np.ndarray, size: int, resize: str = DEFAULT_RESIZE) -> np.ndarray:
    """(H, W, 3) -> (size, size, 3) by the ``resize`` policy: squash, crop or pad."""
    return RESIZERS[check_resize(resize)](image, size)


# A JPEG much larger than the target is decoded at 1/2, 1/4 or 1/8 size by libjpeg, keeping the
# shorter side at least this many times the largest target: 2.9x less CPU on 3000x4000 photos,
# mean pixel difference after resizing 0.38/255 (BENCHMARKS.md "Reduced-resolution JPEG decode").
REDUCED_DECODE_MARGIN = 2


def load_resized(path: str | ImagePath, sizes: Sequence[int], resize: str = DEFAULT_RESIZE) -> dict[int, np.ndarray]:
    """Decode once, resize to every requested size (one decode feeds all backbones and views)."""
    image = read_image(path, min_side=REDUCED_DECODE_MARGIN * max(sizes))
    return {size: resize_image(image, size, resize) for size in sizes}


def iter_image_batches(paths: Sequence[str | ImagePath], sizes: Sequence[int], batch_size: int,
                       threads: int = 4, prefetch_batches: int = 2,
                       on_error: Callable[[int, ImageError], None] | None = None,
                       resize: str = DEFAULT_RESIZE) -> Iterator[dict[int, np.ndarray]]:
    """Yield batches {size: (n, size, size, 3) uint8} in path order, decoding ahead in threads.

    At most ``prefetch_batches`` batches are in flight, so memory stays flat however many
    images there are. An ImageError stops the iteration, unless ``on_error(position, error)``
    is given: then the image is replaced by zeros, and ``on_error`` has been called before the
    batch holding it is yielded. ``resize`` is the policy of ``resize_image``.
    """
    sizes = tuple(sorted(set(sizes)))
    window = max(1, prefetch_batches) * batch_size

    def load(position: int, path: str | ImagePath) -> dict[int, np.ndarray]:
        try:
            return load_resized(path, sizes, resize)
        except ImageError as exc:
            if on_error is None:
                raise
            on_error(position, exc)
            return {size: np.zeros((size, size, 3), np.uint8) for size in sizes}

    with ThreadPoolExecutor(max_workers=max(1, threads), thread_name_prefix="decode") as pool:
        pending: collections.deque = collections.deque()
        queue = enumerate(paths)

        def top_up() -> None:
            for position, path in _take(queue, window - len(pending)):
                pending.append(pool.submit(load, position, path))

        top_up()
        while pending:
            batch = [pending.popleft().result() for _ in range(min(batch_size, len(pending)))]
            top_up()
            yield {s: np.stack([item[s] for item in batch]) for s in sizes}


def _take(iterator: Iterator, n: int) -> Iterable:
    for _ in range(max(0, n)):
        try:
            yield next(iterator)
        except StopIteration:
            return


# Test-time views of an (N, H, W, C) batch: numpy views, not copies (Backbone.features copies
# before preprocessing). Rotations are counter-clockwise and keep the shape of square images.
VIEW_TRANSFORMS: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "original": lambda images: images,
    "hflip": lambda images: images[:, :, ::-1],
    "vflip": lambda images: images[:, ::-1],
    "rot90": lambda images: np.rot90(images, 1, axes=(1, 2)),
    "rot180": lambda images: np.rot90(images, 2, axes=(1, 2)),
    "rot270": lambda images: np.rot90(images, 3, axes=(1, 2)),
}
