"""JPEG: its marker segments, declared size and main scan, read without decoding a pixel; and its decode.

Decoding is libjpeg-turbo's through simplejpeg rather than OpenCV's: the same pixels, but a warning
comes back as an error to name, where OpenCV's libjpeg prints it to the terminal and returns the image
(``decode_jpeg``).
"""
from __future__ import annotations

import re
from typing import Iterator

import numpy as np
import simplejpeg

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


# libjpeg's warnings that its entropy-coded data is damaged, so that pixels are missing or wrong (libjpeg-turbo's
# jerror.h): premature end of a segment or of the file, a bad Huffman or arithmetic code, a lost restart marker,
# junk before a marker inside the image (before the end marker 0xd9, after the last scan, it costs no pixel), a
# broken progression. Its other warnings are about a file that breaks a rule but decodes whole ("Invalid SOS
# parameters for sequential JPEG", an unknown JFIF revision or Adobe transform, a bad ICC marker): decoded.
_DAMAGED_DATA = re.compile(r"premature end of data segment|Premature end of JPEG file|bad Huffman code|"
                           r"bad arithmetic code|instead of RST|extraneous bytes before marker 0x(?!d9\b)|"
                           r"Inconsistent progression sequence")
_CMYK = ("CMYK", "YCCK")


def reduction(data: bytes | memoryview, min_side: int | None) -> int:
    """The DCT scaling (1, 2, 4 or 8) a decode may use: the largest whose shorter side is still at least
    ``min_side`` pixels (libjpeg rounds scaled sizes up), so a later resize to at most ``min_side`` only shrinks."""
    size = jpeg_size(data) if min_side else None
    if size is None:
        return 1
    return next((factor for factor in (8, 4, 2) if -(-min(size) // factor) >= min_side), 1)


def decode_jpeg(data: bytes | memoryview, factor: int, max_pixels: int) -> tuple[np.ndarray | None, str | None]:
    """(the (H, W, 3) uint8 RGB pixels, None), or (None, what is wrong), or (None, None) for a CMYK JPEG, whose data
    this checked and which OpenCV then decodes (its inverted-CMYK conversion).

    libjpeg-turbo through simplejpeg, strict: a decode libjpeg warns is of damaged data (``_DAMAGED_DATA``:
    premature end, bad Huffman code, ...) is a problem named here, never a grey image; one it warns about
    otherwise (a rule broken by a file that decodes whole) is decoded; neither prints a line on the terminal
    (OpenCV's libjpeg prints its warnings to stderr). The pixels are OpenCV's
    ``imdecode(IMREAD_COLOR)`` ones (the same library, islow DCT, fancy upsampling; the reduced sizes of
    its ``IMREAD_REDUCED_COLOR_*``; EXIF orientation applied as it applies it): identical on the 1,000
    ImageNet sample photos at every factor (BENCHMARKS.md).
    """
    try:
        height, width, colorspace, _ = simplejpeg.decode_jpeg_header(data)
    except ValueError:  # TurboJPEG's reason ("tjDecompressHeader3(): ...") says less than this
        return None, "not a decodable image"
    out_height, out_width = -(-height // factor), -(-width // factor)
    if out_height * out_width > max_pixels:
        return None, (f"declares {width} x {height} pixels ({height * width / 1e6:.0f} MP), more than kaggle_tl "
                      f"decodes ({max_pixels / 1e6:.0f} MP); shrink it")
    settings = dict(colorspace="CMYK" if colorspace in _CMYK else "RGB", min_factor=factor, min_height=out_height,
                    min_width=out_width)
    try:
        pixels = simplejpeg.decode_jpeg(data, strict=True, **settings)
    except ValueError as exc:  # libjpeg's first warning (strict), or an error
        warning = _one_line(exc)
        if _DAMAGED_DATA.search(warning):
            return None, f"damaged JPEG (libjpeg: {warning})"
        try:
            pixels = simplejpeg.decode_jpeg(data, strict=False, **settings)
        except ValueError:  # not a warning but an error: no image at all
            return None, f"damaged JPEG (libjpeg: {warning})"
    if colorspace in _CMYK:
        return None, None
    return _oriented(pixels, exif_orientation(data)), None


def exif_orientation(data: bytes | memoryview) -> int:
    """The Orientation tag (274) of the JPEG's EXIF block, 1 (as stored) when it has none or it cannot be read."""
    for marker, offset in jpeg_segments(data):
        if marker != 0xE1 or bytes(data[offset + 4:offset + 10]) != b"Exif\0\0":
            continue
        tiff = bytes(data[offset + 10:offset + 2 + int.from_bytes(data[offset + 2:offset + 4], "big")])
        if tiff[:4] not in (b"II*\0", b"MM\0*"):
            return 1
        order = "little" if tiff[:2] == b"II" else "big"
        directory = int.from_bytes(tiff[4:8], order)
        count = int.from_bytes(tiff[directory:directory + 2], order)
        for entry in range(directory + 2, min(len(tiff) - 11, directory + 2 + 12 * count), 12):
            if int.from_bytes(tiff[entry:entry + 2], order) == 274:
                value = int.from_bytes(tiff[entry + 8:entry + 10], order)
                return value if 1 <= value <= 8 else 1
        return 1
    return 1


def _oriented(pixels: np.ndarray, orientation: int) -> np.ndarray:
    """The pixels as a viewer shows them: OpenCV's ExifTransform (loadsave.cpp) for orientations 2-8."""
    if orientation >= 5:
        pixels = pixels.transpose(1, 0, 2)
    flips = {2: (slice(None), slice(None, None, -1)), 3: (slice(None, None, -1), slice(None, None, -1)),
             4: (slice(None, None, -1), slice(None)), 6: (slice(None), slice(None, None, -1)),
             7: (slice(None, None, -1), slice(None, None, -1)), 8: (slice(None, None, -1), slice(None))}
    if orientation in flips:
        pixels = pixels[flips[orientation]]
    return np.ascontiguousarray(pixels)


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__
