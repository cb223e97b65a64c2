"""The products of a BSON file as cdiscount ships them (``train.bson``, ``test.bson``), read without a BSON library.

Such a file is BSON documents one after another, each a product: ``{_id: int, category_id: int (train
only), imgs: [{picture: <JPEG bytes>}, ...]}``. ``read_products`` walks them once and keeps, per
product, its id, its category and where its pictures' bytes lie in the file (offset, size), so the
pictures are then read in place as a tar's members are (``archives``). Only the element types a
document can hold are understood; anything else, a length that leaves the document or the file, or a
document larger than ``MAX_DOCUMENT`` is a ``BsonError`` naming the document and byte, never a read of
unbounded size.
"""
from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Iterator

MAX_DOCUMENT = 64 * 2 ** 20  # a product's pictures are ~10-100 KB each; a length beyond this is a damaged file

# Element type -> the fixed size of its value (None: sized by a leading int32, handled below).
_FIXED = {0x01: 8, 0x07: 12, 0x08: 1, 0x09: 8, 0x0A: 0, 0x10: 4, 0x11: 8, 0x12: 8, 0x13: 16, 0xFF: 0, 0x7F: 0}
_STRING, _DOCUMENT, _ARRAY, _BINARY = 0x02, 0x03, 0x04, 0x05


class BsonError(ValueError):
    """A BSON file that is not what cdiscount's files are: where, and what."""


@dataclass(frozen=True)
class Product:
    id: str  # _id, as text
    category: str | None  # category_id, as text; None in a test file
    pictures: tuple[tuple[int, int], ...]  # (offset in the file, size) of each picture's bytes, in order


def read_products(path: Path) -> Iterator[Product]:
    """The products of ``path``, in file order (BsonError for a damaged or foreign file)."""
    with open(path, "rb") as handle:
        offset = 0
        for number, document in enumerate(_documents(handle)):
            try:
                yield _product(document, offset)
            except (BsonError, struct.error, IndexError) as exc:
                raise BsonError(f"document {number} at byte {offset}: {exc or 'cut short'}") from None
            offset += len(document)


def _documents(handle: BinaryIO) -> Iterator[bytes]:
    offset = 0
    while head := handle.read(4):
        (length,) = struct.unpack("<i", head.ljust(4, b"\0"))
        if len(head) < 4 or not 5 <= length <= MAX_DOCUMENT:
            raise BsonError(f"byte {offset}: a document of {length} bytes, not a BSON document")
        body = handle.read(length - 4)
        if len(body) != length - 4:
            raise BsonError(f"byte {offset}: the file ends inside a document ({len(body) + 4} of {length} bytes)")
        yield head + body
        offset += length


def _product(document: bytes, offset: int) -> Product:
    fields = dict(_elements(document, 0, len(document)))
    if "_id" not in fields:
        raise BsonError("no _id")
    product_id = _scalar(document, *fields["_id"])
    category = _scalar(document, *fields["category_id"]) if "category_id" in fields else None
    pictures = []
    if "imgs" in fields:
        kind, start, end = fields["imgs"]
        if kind != _ARRAY:
            raise BsonError("imgs is not an array")
        for _, (image_kind, image_start, image_end) in _elements(document, start, end):
            picture = dict(_elements(document, image_start, image_end)) if image_kind == _DOCUMENT else {}
            if picture.get("picture", (None,))[0] != _BINARY:
                raise BsonError("an imgs entry without a binary picture")
            _, data_start, data_end = picture["picture"]
            pictures.append((offset + data_start + 5, data_end - data_start - 5))  # past int32 size + subtype
    return Product(product_id, category, tuple(pictures))


def _elements(document: bytes, start: int, end: int) -> Iterator[tuple[str, tuple[int, int, int]]]:
    """(name, (type, value start, value end)) of the document spanning [start, end): its int32 length, its
    elements, its closing zero."""
    (length,) = struct.unpack_from("<i", document, start)
    if length < 5 or start + length > end or document[start + length - 1] != 0:
        raise BsonError(f"a document length of {length} at byte {start} leaves its container")
    position, stop = start + 4, start + length - 1
    while position < stop:
        kind = document[position]
        name_end = document.index(b"\0", position + 1, stop)
        name = document[position + 1:name_end].decode("utf-8", "replace")
        value = name_end + 1
        if kind in _FIXED:
            size = _FIXED[kind]
        elif kind in (_STRING, _BINARY):
            (size,) = struct.unpack_from("<i", document, value)
            size += 4 + (kind == _BINARY)
        elif kind in (_DOCUMENT, _ARRAY):
            (size,) = struct.unpack_from("<i", document, value)
        else:
            raise BsonError(f"element {name!r} has BSON type {kind:#x}, which a product never holds")
        if size < 0 or value + size > stop:
            raise BsonError(f"element {name!r} leaves its document")
        yield name, (kind, value, value + size)
        position = value + size


def _scalar(document: bytes, kind: int, start: int, end: int) -> str:
    if kind == 0x10:
        return str(struct.unpack_from("<i", document, start)[0])
    if kind == 0x12:
        return str(struct.unpack_from("<q", document, start)[0])
    if kind == _STRING:
        return document[start + 4:end - 1].decode("utf-8")
    raise BsonError(f"an id of BSON type {kind:#x}, not an integer or a string")
