"""Decode (OpenCV, BGR -> RGB), resize and batch images; decoding runs in threads."""
from __future__ import annotations

import collections
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Iterable, Iterator, Sequence

import cv2
import numpy as np

from kaggle_tl.errors import KaggleTLError

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")


class ImageError(KaggleTLError):
    """An image file that cannot be used (empty, truncated, not an image)."""


def read_image(path: str | Path) -> np.ndarray:
    """Decode an image file to an (H, W, 3) uint8 RGB array.

    Grayscale, RGBA, CMYK and 16-bit files all come out as 8-bit RGB. EXIF orientation is
    applied (OpenCV's default), so a phone photo is seen the way a viewer shows it.
    """
    path = Path(path)
    try:
        # np.fromfile + imdecode rather than imread: imread mishandles non-ASCII paths on Windows.
        data = np.fromfile(path, dtype=np.uint8)
    except OSError as exc:
        raise ImageError(f"{path}: cannot read ({exc.strerror or exc})") from None
    if data.size == 0:
        raise ImageError(f"{path}: empty file (0 bytes)")
    image = cv2.imdecode(data, cv2.IMREAD_COLOR)
    if image is None or image.size == 0:
        raise ImageError(f"{path}: not a decodable image")
    # OpenCV decodes to BGR while every Keras preprocess_input expects RGB; public kernels that
    # skip this swap feed the networks colour-swapped images.
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def resize_square(image: np.ndarray, size: int) -> np.ndarray:
    """Resize to size x size (aspect not kept, as Keras' load_img(target_size) does)."""
    h, w = image.shape[:2]
    if (h, w) == (size, size):
        return image
    # INTER_AREA avoids aliasing when shrinking; cubic keeps small images (CIFAR's 32 px) smoother.
    interpolation = cv2.INTER_AREA if h * w >= size * size else cv2.INTER_CUBIC
    return cv2.resize(image, (size, size), interpolation=interpolation)


def load_resized(path: str | Path, sizes: Sequence[int]) -> dict[int, np.ndarray]:
    """Decode once, resize to every requested size (one decode feeds all backbones and views)."""
    image = read_image(path)
    return {size: resize_square(image, size) for size in sizes}


def iter_image_batches(paths: Sequence[str | Path], sizes: Sequence[int], batch_size: int,
                       threads: int = 4, prefetch_batches: int = 2) -> Iterator[dict[int, np.ndarray]]:
    """Yield batches {size: (n, size, size, 3) uint8} in path order, decoding ahead in threads.

    At most ``prefetch_batches`` batches are in flight, so memory stays flat however many
    images there are.
    """
    sizes = tuple(sorted(set(sizes)))
    window = max(1, prefetch_batches) * batch_size
    with ThreadPoolExecutor(max_workers=max(1, threads), thread_name_prefix="decode") as pool:
        pending: collections.deque = collections.deque()
        queue = iter(paths)

        def top_up() -> None:
            for path in _take(queue, window - len(pending)):
                pending.append(pool.submit(load_resized, path, sizes))

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


def hflip(images: np.ndarray) -> np.ndarray:
    """Horizontal flip of an (N, H, W, C) batch (a view, not a copy)."""
    return images[:, :, ::-1, :]
