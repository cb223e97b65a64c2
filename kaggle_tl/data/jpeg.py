"""JPEG's own structure: its marker segments, declared size and main scan, read without decoding a pixel."""
from __future__ import annotations

from typing import Iterator

JPEG_EOI = b"\xff\xd9"


def jpeg_segments(data: bytes | memoryview) -> Iterator[tuple[int, int]]:
    """(marker, offset) of each marker segment of a JPEG's header, up to and including the first scan.

    Segments are skipped by their declared lengths, so a whole JPEG embedded in one (the EXIF
    thumbnail in APP1, with its own scan and end marker) is passed over, never mistaken for
    the main image. Stops early at bytes that are not a marker (a damaged header).
    """
    offset = 2  # after the start-of-image marker
    while offset + 4 <= len(data) and data[offset] == 0xFF:
        marker = data[offset + 1]
        if marker == 0xFF:  # fill byte before a marker
            offset += 1
            continue
        yield marker, offset
        if marker == 0xDA:
            return
        if marker == 0x01 or 0xD0 <= marker <= 0xD7:  # no length field
            offset += 2
        else:
            offset += 2 + int.from_bytes(data[offset + 2:offset + 4], "big")


def jpeg_main_scan(data: bytes) -> int:
    """Offset of the main image's first start-of-scan marker, or -1."""
    return next((offset for marker, offset in jpeg_segments(data) if marker == 0xDA), -1)


def jpeg_size(data: bytes | memoryview) -> tuple[int, int] | None:
    """(height, width) as stored in a JPEG's frame header (before EXIF orientation), or None."""
    for marker, offset in jpeg_segments(data):
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):  # SOFn; C4/C8/CC are not frames
            frame = data[offset + 5:offset + 9]
            return int.from_bytes(frame[:2], "big"), int.from_bytes(frame[2:], "big")
    return None


# Huffman-coded frames (baseline, extended, progressive, lossless): every 8 x 8 block of every component
# costs at least one bit (its DC difference's code) in its first scan. Arithmetic-coded frames
# (SOF9-SOF15) have no such floor.
_HUFFMAN_FRAMES = (0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7)


def jpeg_data_problem(data: bytes | memoryview) -> str | None:
    """Why a JPEG cannot hold the pixels its frame header declares, or None.

    A header edited or damaged to declare more pixels than the data codes makes libjpeg print
    "Corrupt JPEG data: premature end of data segment" on the terminal and decode the rest grey,
    without failing. The data of a Huffman-coded frame is at least one bit per 8 x 8 block of its
    first component (a constant 4000 x 3000 photo at quality 5 takes 3.0 times that floor), so a file
    with less is named here, before libjpeg sees it.
    """
    frame = next(((marker, offset) for marker, offset in jpeg_segments(data) if 0xC0 <= marker <= 0xCF
                  and marker not in (0xC4, 0xC8, 0xCC)), None)
    scan = jpeg_main_scan(data)
    if frame is None or scan < 0 or frame[0] not in _HUFFMAN_FRAMES:
        return None
    height, width = jpeg_size(data)
    needed = -(-height // 8) * -(-width // 8) // 8  # bytes: one bit a block
    if len(data) - scan < needed:
        return (f"damaged JPEG (its header declares {width} x {height} pixels, which need at least {needed} bytes "
                f"of image data; the file holds {len(data) - scan})")
    return None
