"""PNG: its chunks, and the bytes OpenCV decodes, without the ancillary chunks libpng would warn about.

libpng prints a warning to the terminal for a damaged or odd ancillary chunk ("libpng warning: iCCP:
known incorrect sRGB profile", "tEXt: CRC error") and decodes the image all the same: those chunks
(colour profiles, text, time, gamma) never change the pixels OpenCV returns, which applies no colour
management. So the decode is given the critical chunks (IHDR, PLTE, IDAT, IEND) and tRNS alone:
the same pixels, and no library line. A file whose chunks do not hold together is passed as it is
(the decode then names it).
"""
from __future__ import annotations

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_KEPT_ANCILLARY = (b"tRNS",)  # transparency: part of the image data's meaning for palette and grey images


def without_ancillary_chunks(data: bytes | memoryview) -> bytes | memoryview:
    """``data`` with only the chunks the pixels are made of; ``data`` itself when it has no others (or its chunks
    cannot be walked)."""
    if bytes(data[:8]) != PNG_SIGNATURE:
        return data
    kept, dropped, offset = [bytes(data[:8])], False, 8
    while offset + 12 <= len(data):
        length = int.from_bytes(data[offset:offset + 4], "big")
        kind = bytes(data[offset + 4:offset + 8])
        end = offset + 12 + length
        if end > len(data):
            return data
        if kind[:1].isupper() or kind in _KEPT_ANCILLARY:
            kept.append(bytes(data[offset:end]))
        else:
            dropped = True
        offset = end
        if kind == b"IEND":
            break
    return b"".join(kept) if dropped else data
