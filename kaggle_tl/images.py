"""Decode (OpenCV, BGR -> RGB), resize and batch images; decoding runs in threads."""
from __future__ import annotations

import collections
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Callable, Iterable, Iterator, Sequence

import cv2
import numpy as np

from kaggle_tl.errors import KaggleTLError

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
PNG_END = b"IEND\xaeB`\x82"  # the IEND chunk's type and CRC: the last 8 bytes of a whole PNG
JPEG_SOS, JPEG_EOI = b"\xff\xda", b"\xff\xd9"
_HEAD_BYTES, _TAIL_BYTES = 16, 64


class ImageError(KaggleTLError):
    """An image file whose bytes cannot be used (empty, truncated, not an image, undecodable)."""

    def __init__(self, path: str | Path, problem: str):
        super().__init__(f"{path}: {problem}")
        self.path, self.problem = Path(path), problem


def image_format(head: bytes) -> str | None:
    """The format named by a file's first bytes (its magic number), or None."""
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
    return None


def _bytes_problem(head: bytes, tail: bytes, size: int, read_all: Callable[[], bytes]) -> str | None:
    """What is wrong with an image file, judged from its size, first and last bytes, without decoding.

    ``read_all`` is called only for a file that does not end the usual way (trailing bytes after
    the end marker are legal), so a whole scan reads a few dozen bytes per healthy file.
    """
    if size == 0:
        return "empty file (0 bytes)"
    kind = image_format(head)
    if kind is None:
        return f"not an image (unrecognised file header {head[:8]!r})"
    # Interrupted downloads are often zero-filled to their full size: ignore trailing NULs.
    end = tail.rstrip(b"\x00")
    if kind == "JPEG" and not end.endswith(JPEG_EOI):
        # Entropy-coded data never holds FF D9, so an end-of-image marker after the first scan
        # means the file is whole and merely has trailing data.
        data = read_all()
        sos = data.find(JPEG_SOS)
        if sos < 0 or data.find(JPEG_EOI, sos) < 0:
            return "truncated JPEG (no end-of-image marker)"
    if kind == "PNG" and not end.endswith(PNG_END) and PNG_END not in read_all():
        return "truncated PNG (no IEND chunk)"
    if kind in ("BMP", "WebP") and len(head) >= 8:
        # BMP stores the file size at bytes 2-5, RIFF the size after byte 8 at bytes 4-7.
        declared = int.from_bytes(head[2:6], "little") if kind == "BMP" else int.from_bytes(head[4:8], "little") + 8
        if declared > size:
            return f"truncated {kind} ({size} of {declared} bytes)"
    return None


def image_problem(path: str | Path) -> str | None:
    """A cheap check of one image file (magic number, size, end marker), or None if it looks whole.

    It catches empty, truncated and non-image files without decoding; a file that passes can
    still fail to decode (corrupt data inside), which extraction then reports.
    """
    try:
        with open(path, "rb") as handle:
            head = handle.read(_HEAD_BYTES)
            size = handle.seek(0, 2)
            handle.seek(max(0, size - _TAIL_BYTES))
            tail = handle.read()
    except OSError as exc:
        return f"cannot read ({exc.strerror or exc})"
    return _bytes_problem(head, tail, size, lambda: Path(path).read_bytes())


def find_bad_images(paths: Sequence[str | Path], threads: int = 8) -> dict[int, str]:
    """{position in ``paths``: problem} for every file that fails ``image_problem``."""
    with ThreadPoolExecutor(max_workers=max(1, threads), thread_name_prefix="scan") as pool:
        problems = list(pool.map(image_problem, paths))
    return {i: problem for i, problem in enumerate(problems) if problem is not None}


def read_image(path: str | Path) -> np.ndarray:
    """Decode an image file to an (H, W, 3) uint8 RGB array.

    Grayscale, RGBA (alpha dropped, not composited), CMYK and 16-bit files all come out as
    8-bit RGB. EXIF orientation is applied (OpenCV's default), so a phone photo is seen the way
    a viewer shows it. Raises ImageError for unusable bytes (the same checks as
    ``image_problem``, then the decode), KaggleTLError if the file cannot be read.
    """
    path = Path(path)
    try:
        # np.fromfile + imdecode rather than imread: imread mishandles non-ASCII paths on Windows.
        data = np.fromfile(path, dtype=np.uint8)
    except OSError as exc:
        raise KaggleTLError(f"{path}: cannot read ({exc.strerror or exc})") from None
    # Some OpenCV builds decode a truncated JPEG partially (grey bottom rows) without failing.
    problem = _bytes_problem(data[:_HEAD_BYTES].tobytes(), data[-_TAIL_BYTES:].tobytes(), data.size, data.tobytes)
    if problem:
        raise ImageError(path, problem)
    image = cv2.imdecode(data, cv2.IMREAD_COLOR)
    if image is None or image.size == 0:
        raise ImageError(path, "not a decodable image")
    # OpenCV decodes to BGR while every Keras preprocess_input expects RGB; public kernels that
    # skip this swap feed the networks colour-swapped images.
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


RESIZE_POLICIES = ("squash", "crop", "pad")
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
    """Shorter side to size / 0.875 (aspect kept), then the centre size x size (ImageNet-style)."""
    h, w = image.shape[:2]
    scale = size / CROP_FRACTION / min(h, w)
    # Never below size: a very thin image would otherwise leave less than size pixels to crop.
    width, height = max(size, round(w * scale)), max(size, round(h * scale))
    resized = _resize_to(image, width, height)
    top, left = (height - size) // 2, (width - size) // 2
    return resized[top:top + size, left:left + size]


def resize_pad(image: np.ndarray, size: int) -> np.ndarray:
    """Longer side to size (aspect kept), centred on a size x size square of ``PAD_RGB``."""
    h, w = image.shape[:2]
    scale = size / max(h, w)
    width, height = max(1, min(size, round(w * scale))), max(1, min(size, round(h * scale)))
    out = np.empty((size, size, 3), np.uint8)
    out[:] = PAD_RGB
    top, left = (size - height) // 2, (size - width) // 2
    out[top:top + height, left:left + width] = _resize_to(image, width, height)
    return out


RESIZERS: dict[str, Callable[[np.ndarray, int], np.ndarray]] = {
    "squash": resize_square, "crop": resize_crop, "pad": resize_pad}


def resize_image(image: np.ndarray, size: int, resize: str = DEFAULT_RESIZE) -> np.ndarray:
    """(H, W, 3) -> (size, size, 3) by the ``resize`` policy: squash, crop or pad."""
    if resize not in RESIZERS:
        raise KaggleTLError(f"resize: unknown policy {resize!r}; choose from {', '.join(RESIZE_POLICIES)}")
    return RESIZERS[resize](image, size)


def load_resized(path: str | Path, sizes: Sequence[int], resize: str = DEFAULT_RESIZE) -> dict[int, np.ndarray]:
    """Decode once, resize to every requested size (one decode feeds all backbones and views)."""
    image = read_image(path)
    return {size: resize_image(image, size, resize) for size in sizes}


def iter_image_batches(paths: Sequence[str | Path], sizes: Sequence[int], batch_size: int,
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

    def load(position: int, path: str | Path) -> dict[int, np.ndarray]:
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
