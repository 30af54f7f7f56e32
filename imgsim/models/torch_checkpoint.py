"""Read a torch legacy (non-zip) state dict into NumPy arrays, without torch and without running pickled code.

The legacy format (``torch.save(..., _use_new_zipfile_serialization=False)``) is five pickles in a row
(magic number, protocol version, system info, the object with persistent storage ids, the sorted storage
keys) followed by each storage's bytes: an 8-byte little-endian element count, then the elements. Every
pickle is read with an unpickler that resolves only the tensor-rebuild and storage globals; any other
global (``os.system``, ``builtins.eval``...) is refused before it is looked up, so nothing is executed.
"""

from __future__ import annotations

import collections
import os
import pickle
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from imgsim.errors import ImgsimError

MAGIC_NUMBER = 0x1950A86A20F9469CFC6C
PROTOCOL_VERSION = 1001
#: torch storage type names and their element types (little-endian, as torch writes them on any host).
STORAGE_DTYPES = {
    "DoubleStorage": "<f8", "FloatStorage": "<f4", "HalfStorage": "<f2", "LongStorage": "<i8",
    "IntStorage": "<i4", "ShortStorage": "<i2", "CharStorage": "i1", "ByteStorage": "u1", "BoolStorage": "?",
}


class CheckpointError(ImgsimError):
    """A file that is not a readable torch legacy state dict, or one that asks for code to run."""


@dataclass(frozen=True)
class _StorageType:
    name: str


@dataclass
class _Storage:
    dtype: np.dtype
    numel: int
    data: np.ndarray | None = None


@dataclass(frozen=True)
class _Tensor:
    storage: _Storage
    offset: int
    size: tuple
    stride: tuple


def _rebuild_tensor_v2(storage: Any, offset: Any, size: Any, stride: Any, *_ignored: Any) -> _Tensor:
    """Stands in for ``torch._utils._rebuild_tensor_v2``: records where the tensor lies in its storage."""
    if not isinstance(storage, _Storage):
        raise CheckpointError("a tensor is not backed by a storage")
    return _Tensor(storage, offset, tuple(size), tuple(stride))


def _rebuild_parameter(data: Any, *_ignored: Any) -> Any:
    """Stands in for ``torch._utils._rebuild_parameter``: a parameter is its tensor."""
    return data


_ALLOWED = {("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor_v2,
            ("torch._utils", "_rebuild_parameter"): _rebuild_parameter}


class _Unpickler(pickle.Unpickler):
    """Resolves only tensor, storage and OrderedDict globals; storages come from persistent ids."""

    def __init__(self, fh: BinaryIO, path: Path):
        super().__init__(fh)
        self.path = path
        self.storages: dict[str, _Storage] = {}

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in _ALLOWED:
            return _ALLOWED[module, name]
        if module == "collections" and name == "OrderedDict":
            return collections.OrderedDict  # a state dict, and its _metadata (set as an attribute)
        if module == "torch" and name in STORAGE_DTYPES:
            return _StorageType(name)
        raise CheckpointError(f"Refused to read {self.path}: its pickle asks for {module}.{name}, which is not "
                              "a tensor or storage type (loading it with torch could run code).")

    def persistent_load(self, pid: Any) -> _Storage:
        # ("storage", storage type, key, location, element count, view metadata)
        if not (isinstance(pid, tuple) and len(pid) == 6 and pid[0] == "storage"
                and isinstance(pid[1], _StorageType) and isinstance(pid[4], int) and pid[4] >= 0):
            raise CheckpointError(f"{self.path} has a persistent id that is not a storage: {pid!r:.80}")
        _, kind, key, _location, numel, view = pid
        if view is not None:
            raise CheckpointError(f"{self.path} uses storage views (torch < 0.4), which are not supported.")
        return self.storages.setdefault(str(key), _Storage(np.dtype(STORAGE_DTYPES[kind.name]), numel))


def read_state_dict(path: str | Path) -> dict[str, np.ndarray]:
    """The tensors of a torch legacy state dict, by name in file order, as NumPy arrays (copies)."""
    path = Path(path)
    with open(path, "rb") as fh:
        if fh.read(4) == b"PK\x03\x04":
            raise CheckpointError(f"{path} is a zip-format torch checkpoint (torch >= 1.6); only the legacy "
                                  "format is read here (torch.save(..., _use_new_zipfile_serialization=False)).")
        fh.seek(0)
        unpickler = _Unpickler(fh, path)
        try:
            if unpickler.load() != MAGIC_NUMBER:
                raise CheckpointError(f"{path} is not a torch legacy checkpoint (wrong magic number).")
            if unpickler.load() != PROTOCOL_VERSION:
                raise CheckpointError(f"{path} has an unsupported torch protocol version.")
            if not unpickler.load().get("little_endian", True):
                raise CheckpointError(f"{path} was written on a big-endian machine, which is not supported.")
            obj = unpickler.load()
            keys = unpickler.load()
        except CheckpointError:
            raise
        except Exception as exc:
            if isinstance(exc, EOFError) or "truncated" in str(exc):
                raise CheckpointError(f"{path} is truncated: it ends inside its pickled header.") from None
            # a damaged pickle raises many types (UnpicklingError, ValueError, TypeError...)
            raise CheckpointError(f"{path} is not a readable torch checkpoint ({type(exc).__name__}: {exc}).") from None
        if not isinstance(keys, list):
            raise CheckpointError(f"{path} is not a readable torch checkpoint (no list of storage keys).")
        for key in keys:
            _read_storage(fh, path, unpickler.storages.get(str(key)), key)
    if not isinstance(obj, dict) or not all(isinstance(v, _Tensor) for v in obj.values()):
        raise CheckpointError(f"{path} holds a {type(obj).__name__}, not a state dict of tensors.")
    return {str(name): _materialise(path, name, t) for name, t in obj.items()}


def _read_storage(fh: BinaryIO, path: Path, storage: _Storage | None, key: Any) -> None:
    if storage is None or storage.data is not None:
        raise CheckpointError(f"{path} lists storage {key!r} that no tensor uses, or lists it twice.")
    head = fh.read(8)
    count = struct.unpack("<q", head)[0] if len(head) == 8 else None
    if count != storage.numel:
        raise CheckpointError(f"{path} is truncated or damaged: storage {key} should hold {storage.numel} "
                              f"elements, found {'the end of the file' if count is None else count}.")
    nbytes, remaining = count * storage.dtype.itemsize, os.fstat(fh.fileno()).st_size - fh.tell()
    if nbytes > remaining:  # checked before reading: a forged count must not allocate that much memory
        raise CheckpointError(f"{path} is truncated: storage {key} needs {nbytes} bytes, {remaining} remain.")
    raw = fh.read(nbytes)
    storage.data = np.frombuffer(raw, dtype=storage.dtype)


def _materialise(path: Path, name: Any, t: _Tensor) -> np.ndarray:
    """A native-order copy of the tensor's view, after checking that the view stays inside its storage."""
    dims = t.size + t.stride + (t.offset,)
    if not all(isinstance(v, int) and v >= 0 for v in dims) or len(t.size) != len(t.stride):
        raise CheckpointError(f"{path}: tensor {name} has an invalid shape, stride or offset.")
    data = t.storage.data
    if data is None:
        raise CheckpointError(f"{path}: the storage of tensor {name} is not in the file.")
    last = t.offset + sum((n - 1) * s for n, s in zip(t.size, t.stride)) if all(t.size) else -1
    if last >= len(data):
        raise CheckpointError(f"{path}: tensor {name} reaches past the end of its storage.")
    item = data.dtype.itemsize
    view = np.lib.stride_tricks.as_strided(data[t.offset:] if all(t.size) else data[:0], t.size,
                                           tuple(s * item for s in t.stride), writeable=False)
    return np.array(view, dtype=data.dtype.newbyteorder("="), order="C", copy=True)
