"""Read torch checkpoints WITHOUT torch and without executing pickled code; safetensors too.

    state_dict = read_state_dict("resnet20-12fca82f.th")   # {key: np.ndarray}

A torch ``.pth``/``.th``/``.pt`` file is a pickle whose tensors point at raw storages, either in a
zip archive (``torch.save`` since torch 1.6) or appended after the pickle (the legacy format). The
pickle is read by a restricted unpickler that resolves only a fixed allow-list of globals -- the
tensor rebuild functions, the typed storage classes and ``collections.OrderedDict`` -- and refuses
everything else before anything is called, so a checkpoint that tries to run code fails with
`CheckpointError` and nothing runs. Tensors come back as numpy arrays (bfloat16 via ml_dtypes).

Wrappers are unwrapped: ``{'state_dict': ...}`` / ``{'model': ...}`` dicts and leading ``module.``
prefixes (DataParallel). ``.safetensors`` files are read with the safetensors package (numpy).
"""
from __future__ import annotations

import collections
import io
import os
import pickle
import struct
import zipfile
from typing import Any, Dict, Mapping

import ml_dtypes
import numpy as np

from jaxcam.models.convert import strip_prefix

_LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
_LEGACY_PROTOCOL = 1001

_STORAGE_DTYPES = {
    "FloatStorage": np.float32,
    "DoubleStorage": np.float64,
    "HalfStorage": np.float16,
    "BFloat16Storage": ml_dtypes.bfloat16,
    "LongStorage": np.int64,
    "IntStorage": np.int32,
    "ShortStorage": np.int16,
    "CharStorage": np.int8,
    "ByteStorage": np.uint8,
    "BoolStorage": np.bool_,
}


class CheckpointError(ValueError):
    """A checkpoint that cannot (or must not) be read: unsafe content, truncated or not a checkpoint."""


class _StorageType:
    """Stand-in for ``torch.FloatStorage`` etc.: only carries the numpy dtype."""

    def __init__(self, name: str):
        self.name, self.dtype = name, np.dtype(_STORAGE_DTYPES[name])


class _Storage:
    """A flat storage: filled lazily from the archive (zip) or the file tail (legacy)."""

    def __init__(self, dtype, numel: int):
        self.dtype, self.numel, self.array = dtype, numel, None


class _LazyTensor:
    """A tensor view into a storage, materialized once every storage has been read."""

    def __init__(self, storage: _Storage, offset: int, size, stride):
        self.storage, self.offset, self.size, self.stride = storage, offset, tuple(size), tuple(stride)
        numbers = (offset,) + self.size + self.stride
        if len(self.size) != len(self.stride) or not all(isinstance(n, int) and n >= 0 for n in numbers):
            raise CheckpointError("malformed checkpoint: a tensor has an invalid size, stride or offset")

    def materialize(self) -> np.ndarray:
        flat = self.storage.array
        if flat is None:
            raise CheckpointError("a tensor refers to a storage that is not in the file (truncated or corrupt)")
        needed = self.offset + 1 + sum((n - 1) * s for n, s in zip(self.size, self.stride)) if all(self.size) else 0
        if needed > flat.size:
            raise CheckpointError("a tensor reaches past the end of its storage (truncated or corrupt file)")
        base = flat[self.offset:]
        strides = tuple(s * flat.itemsize for s in self.stride)
        return np.lib.stride_tricks.as_strided(base, self.size, strides).copy()


def _rebuild_tensor(storage, storage_offset, size, stride, *unused):
    if not isinstance(storage, _Storage):
        raise CheckpointError("malformed checkpoint: a tensor is not backed by a storage")
    return _LazyTensor(storage, storage_offset, size, stride)


def _rebuild_parameter(data, requires_grad=False, backward_hooks=None, *unused):
    return data


_ALLOWED = {
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("torch._utils", "_rebuild_tensor"): _rebuild_tensor,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    **{("torch", name): _StorageType(name) for name in _STORAGE_DTYPES},
}


class _RestrictedUnpickler(pickle.Unpickler):
    """Resolves only `_ALLOWED` globals; storages come from `storage_for(persistent_id)`."""

    def __init__(self, file, storage_for):
        super().__init__(file, encoding="latin1")
        self._storage_for = storage_for

    def find_class(self, module, name):
        try:
            return _ALLOWED[(module, name)]
        except KeyError:
            raise CheckpointError(
                f"refusing to load '{module}.{name}': this checkpoint contains objects other than tensors, "
                "storages and OrderedDicts (it could run code). Re-save it as a plain state_dict "
                "(torch.save(model.state_dict(), path)) or as .safetensors."
            ) from None

    def persistent_load(self, pid):
        if not isinstance(pid, tuple) or not pid or _text(pid[0]) != "storage":
            raise CheckpointError(f"unsupported persistent object in checkpoint: {str(pid)[:80]!r}")
        return self._storage_for(pid[1:])


def _text(value) -> str:
    return value.decode("ascii") if isinstance(value, bytes) else str(value)


def _storage_type(value) -> _StorageType:
    if not isinstance(value, _StorageType):
        raise CheckpointError(f"unsupported storage type in checkpoint: {value!r}")
    return value


def _unpickle(file, storage_for):
    try:
        return _RestrictedUnpickler(file, storage_for).load()
    except CheckpointError:
        raise
    except Exception as error:  # EOFError, UnpicklingError, struct errors ... on damaged files
        raise CheckpointError(f"cannot unpickle the checkpoint (truncated or corrupt?): {error}") from None


def _read_zip(path: str) -> Any:
    try:
        archive = zipfile.ZipFile(path)
        names = archive.namelist()
    except (zipfile.BadZipFile, OSError, EOFError) as error:
        raise CheckpointError(f"{path}: damaged torch zip checkpoint (truncated?): {error}") from None
    pickles = [n for n in names if n.endswith("/data.pkl") or n == "data.pkl"]
    if len(pickles) != 1:
        raise CheckpointError(f"{path}: a zip file but not a torch checkpoint (no single data.pkl)")
    root = pickles[0][: -len("data.pkl")]
    byteorder = archive.read(root + "byteorder").decode() if root + "byteorder" in names else "little"
    storages: Dict[str, _Storage] = {}

    def storage_for(meta):
        kind, key, _location, numel = meta[:4]
        key = _text(key)
        if key not in storages:
            dtype = _storage_type(kind).dtype.newbyteorder("<" if byteorder == "little" else ">")
            storages[key] = _Storage(dtype, int(numel))
        return storages[key]

    try:
        result = _unpickle(io.BytesIO(archive.read(pickles[0])), storage_for)
        for key, storage in storages.items():
            raw = archive.read(f"{root}data/{key}")
            storage.array = _from_bytes(raw, storage, path)
    except (zipfile.BadZipFile, KeyError, OSError, EOFError) as error:
        raise CheckpointError(f"{path}: damaged torch zip checkpoint (truncated?): {error}") from None
    return result


def _from_bytes(raw: bytes, storage: _Storage, path: str) -> np.ndarray:
    nbytes = storage.numel * storage.dtype.itemsize
    if len(raw) < nbytes:
        raise CheckpointError(f"{path}: a storage is shorter than declared (truncated file)")
    return np.frombuffer(raw[:nbytes], storage.dtype).astype(storage.dtype.newbyteorder("="))


def _read_legacy(path: str) -> Any:
    with open(path, "rb") as f:
        header = []
        for _ in range(3):  # magic number, protocol version, system info: plain data only
            header.append(_unpickle(f, lambda meta: None))
        if header[0] != _LEGACY_MAGIC or header[1] != _LEGACY_PROTOCOL:
            raise CheckpointError(f"{path}: not a torch checkpoint (no legacy magic number and not a zip archive)")
        if isinstance(header[2], dict) and not header[2].get("little_endian", True):
            raise CheckpointError(f"{path}: big-endian legacy checkpoints are not supported")
        storages: Dict[str, _Storage] = {}

        def storage_for(meta):
            kind, key, _location, numel, view = meta[:5]
            if view is not None:
                raise CheckpointError(f"{path}: storage views (pre-1.0 checkpoints) are not supported")
            key = _text(key)
            if key not in storages:
                storages[key] = _Storage(_storage_type(kind).dtype, int(numel))
            return storages[key]

        result = _unpickle(f, storage_for)
        keys = _unpickle(f, lambda meta: None)
        if not isinstance(keys, list):
            raise CheckpointError(f"{path}: malformed legacy checkpoint (no storage key list)")
        for key in keys:
            storage = storages.get(_text(key))
            if storage is None:
                raise CheckpointError(f"{path}: malformed legacy checkpoint (unknown storage {key!r})")
            size = f.read(8)
            if len(size) < 8:
                raise CheckpointError(f"{path}: file ends before all tensor data (truncated)")
            (numel,) = struct.unpack("<q", size)
            raw = f.read(numel * storage.dtype.itemsize)
            storage.numel = numel
            storage.array = _from_bytes(raw, storage, path)
    return result


def _materialize(obj):
    if isinstance(obj, _LazyTensor):
        return obj.materialize()
    if isinstance(obj, Mapping):
        return collections.OrderedDict((k, _materialize(v)) for k, v in obj.items())
    if isinstance(obj, (list, tuple)):
        return type(obj)(_materialize(v) for v in obj)
    return obj


def read_torch(path) -> Any:
    """The object saved by ``torch.save`` at `path` (tensors as numpy arrays), read safely.

    Raises:
      CheckpointError: the file holds anything but tensors/storages/OrderedDicts/plain data, is
        truncated or corrupt, or is not a torch checkpoint.
    """
    path = os.fspath(path)
    with open(path, "rb") as f:
        head = f.read(4)
    if not head:
        raise CheckpointError(f"{path}: empty file")
    reader = _read_zip if head == b"PK\x03\x04" else _read_legacy
    return _materialize(reader(path))


def read_safetensors(path) -> Dict[str, np.ndarray]:
    """All tensors of a ``.safetensors`` file as numpy arrays."""
    from safetensors import SafetensorError
    from safetensors.numpy import load_file

    try:
        return dict(load_file(os.fspath(path)))
    except (SafetensorError, OSError, ValueError) as error:
        raise CheckpointError(f"{path}: cannot read safetensors file (truncated or corrupt?): {error}") from None


def unwrap_state_dict(obj) -> Dict[str, np.ndarray]:
    """``{'state_dict': sd}`` / ``{'model': sd}`` / a bare state_dict -> ``{key: array}`` without ``module.``."""
    while isinstance(obj, Mapping):
        inner = [obj[k] for k in ("state_dict", "model_state_dict", "model", "net") if isinstance(obj.get(k), Mapping)]
        if inner:
            obj = inner[0]
            continue
        arrays = {k: v for k, v in obj.items() if hasattr(v, "shape")}  # numpy, jax or torch arrays
        if arrays:
            return strip_prefix(arrays)
        break
    raise CheckpointError(
        "no state_dict found in the checkpoint: expected a mapping of tensors, possibly wrapped as "
        f"{{'state_dict': ...}} or {{'model': ...}}; got {type(obj).__name__} with keys {list(obj)[:8] if isinstance(obj, Mapping) else '-'}"
    )


def read_state_dict(path) -> Dict[str, np.ndarray]:
    """A checkpoint file (``.pth``/``.th``/``.pt``/``.bin`` torch, or ``.safetensors``) -> ``{key: array}``."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"checkpoint file not found: {path}")
    if path.endswith(".safetensors"):
        return strip_prefix(read_safetensors(path))
    return unwrap_state_dict(read_torch(path))
