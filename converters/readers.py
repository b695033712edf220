"""Read checkpoint files into {key: numpy array} without running any code from them.

A suspect model may come from a hostile party, and a pickle can call any Python function while it
loads. PyTorch's `.pt`/`.pth`/`.bin` files are zip archives holding a pickle (`data.pkl`) plus raw
tensor bytes (`data/<n>`); we unpickle `data.pkl` with a whitelist of exactly the globals a tensor
state dict needs, and build arrays straight from the raw bytes. Anything else is refused before
it is called. Safetensors files are parsed directly (an 8-byte header length, a JSON header, data).
Neither path imports torch.
"""

from __future__ import annotations

import json
import os
import pickle
import struct
import zipfile
from pathlib import Path
from typing import Any, Mapping

import ml_dtypes
import numpy as np

from jaxprov.errors import CheckpointError, UnsafeCheckpointError

TORCH_SUFFIXES = (".pt", ".pth", ".bin", ".ckpt", ".tar")
SAFETENSORS_SUFFIXES = (".safetensors",)

_STORAGE_DTYPES = {
    "FloatStorage": np.float32, "DoubleStorage": np.float64, "HalfStorage": np.float16,
    "BFloat16Storage": ml_dtypes.bfloat16, "LongStorage": np.int64, "IntStorage": np.int32,
    "ShortStorage": np.int16, "CharStorage": np.int8, "ByteStorage": np.uint8, "BoolStorage": np.bool_,
}
_SAFETENSORS_DTYPES = {
    "F64": np.float64, "F32": np.float32, "F16": np.float16, "BF16": ml_dtypes.bfloat16,
    "I64": np.int64, "I32": np.int32, "I16": np.int16, "I8": np.int8, "U8": np.uint8, "BOOL": np.bool_,
    "F8_E4M3": ml_dtypes.float8_e4m3fn, "F8_E5M2": ml_dtypes.float8_e5m2,
}
# Keys under which training scripts commonly nest the state dict in a checkpoint dict.
_NESTED_KEYS = ("state_dict", "model_state_dict", "model", "net", "network", "ema", "params")


class _Storage:
    def __init__(self, dtype):
        self.dtype = dtype


def _rebuild_tensor(storage: np.ndarray, offset: int, size, stride, *_unused) -> np.ndarray:
    itemsize = storage.dtype.itemsize
    if not size:
        return np.array(storage[offset])
    needed = offset + 1 + sum((n - 1) * s for n, s in zip(size, stride))
    if any(n == 0 for n in size):
        return np.zeros(size, storage.dtype)
    if needed > storage.size:
        raise CheckpointError("a tensor points past the end of its storage (corrupt file)")
    view = np.lib.stride_tricks.as_strided(storage[offset:], shape=tuple(size),
                                           strides=tuple(s * itemsize for s in stride))
    return np.array(view)  # own the memory: the zip buffer is not kept


def _rebuild_parameter(data, requires_grad=None, backward_hooks=None, *_unused):
    return data


class _SafeUnpickler(pickle.Unpickler):
    """Resolves only the globals of a tensor state dict; refuses every other import."""

    _ALLOWED = {
        ("collections", "OrderedDict"): lambda: __import__("collections").OrderedDict,
        ("torch._utils", "_rebuild_tensor_v2"): lambda: _rebuild_tensor,
        ("torch._utils", "_rebuild_tensor"): lambda: _rebuild_tensor,
        ("torch._utils", "_rebuild_parameter"): lambda: _rebuild_parameter,
    }

    def __init__(self, file, storages: dict[str, Any], source: str):
        super().__init__(file)
        self._storages = storages
        self._source = source

    def find_class(self, module: str, name: str):
        if (module, name) in self._ALLOWED:
            return self._ALLOWED[(module, name)]()
        if module == "torch" and name in _STORAGE_DTYPES:
            return _Storage(_STORAGE_DTYPES[name])
        raise UnsafeCheckpointError(
            f"{self._source}: refused to load: the pickle asks for {module}.{name}, which is not part of a "
            "tensor state dict and could run code; save model.state_dict() (or use safetensors) instead")

    def persistent_load(self, pid):
        if not (isinstance(pid, tuple) and len(pid) >= 5 and pid[0] == "storage" and isinstance(pid[1], _Storage)):
            raise UnsafeCheckpointError(f"{self._source}: refused to load: unknown persistent object {pid!r:.80}")
        _, storage_type, key, _location, numel = pid[:5]
        raw = self._storages.get(str(key))
        if raw is None:
            raise CheckpointError(f"{self._source}: storage {key} is missing from the archive (corrupt or truncated file)")
        array = np.frombuffer(raw, dtype=storage_type.dtype)
        if array.size < numel:
            raise CheckpointError(f"{self._source}: storage {key} is shorter than declared (truncated file)")
        return array


def read_torch_zip(path: Path) -> Any:
    """Load a PyTorch zip checkpoint's object tree with tensors as numpy arrays, running no foreign code."""
    source = str(path)
    if not zipfile.is_zipfile(path):
        with open(path, "rb") as fh:
            head = fh.read(2)
        if head == b"PK":
            raise CheckpointError(f"{source}: truncated or corrupt zip archive (its directory is missing); "
                                  "download or copy the file again")
        kind = "a plain pickle" if head[:1] == b"\x80" else "not a PyTorch zip checkpoint"
        raise UnsafeCheckpointError(
            f"{source}: refused to load: {kind} (legacy torch.save format or arbitrary pickle, which could run "
            "code); re-save it with a current torch.save(model.state_dict()) or as safetensors")
    try:
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
            pkl = [n for n in names if n.endswith("/data.pkl") or n == "data.pkl"]
            if len(pkl) != 1:
                raise CheckpointError(f"{source}: a zip file, but not a PyTorch checkpoint (no data.pkl inside)")
            prefix = pkl[0][: -len("data.pkl")]
            byteorder = archive.read(prefix + "byteorder").decode() if prefix + "byteorder" in names else "little"
            if byteorder != "little":
                raise CheckpointError(f"{source}: big-endian checkpoints are not supported")
            storages = {n[len(prefix) + 5:]: archive.read(n) for n in names if n.startswith(prefix + "data/")}
            import io
            return _SafeUnpickler(io.BytesIO(archive.read(pkl[0])), storages, source).load()
    except (zipfile.BadZipFile, EOFError, pickle.UnpicklingError, struct.error, ValueError, KeyError) as err:
        raise CheckpointError(f"{source}: corrupt or truncated PyTorch checkpoint ({type(err).__name__}: {err})") from None


def read_safetensors(path: Path) -> dict[str, np.ndarray]:
    source = str(path)
    size = os.path.getsize(path)
    with open(path, "rb") as fh:
        head = fh.read(8)
        if len(head) < 8:
            raise CheckpointError(f"{source}: too short to be a safetensors file")
        (n,) = struct.unpack("<Q", head)
        if n > size - 8 or n > 100 * 2**20:
            raise CheckpointError(f"{source}: not a safetensors file, or truncated (header length {n})")
        try:
            header = json.loads(fh.read(n))
        except (UnicodeDecodeError, json.JSONDecodeError):
            raise CheckpointError(f"{source}: corrupt safetensors header") from None
    data = np.memmap(path, dtype=np.uint8, mode="r", offset=8 + n) if size > 8 + n else np.zeros(0, np.uint8)
    out = {}
    for key, info in header.items():
        if key == "__metadata__":
            continue
        try:
            dtype = np.dtype(_SAFETENSORS_DTYPES[info["dtype"]])
            begin, end = info["data_offsets"]
            shape = tuple(info["shape"])
        except (KeyError, TypeError, ValueError):
            raise CheckpointError(f"{source}: tensor {key!r} has an unsupported or malformed header entry") from None
        if end > data.size or end - begin != dtype.itemsize * int(np.prod(shape, dtype=np.int64)):
            raise CheckpointError(f"{source}: tensor {key!r} lies outside the file (truncated or corrupt)")
        out[key] = np.asarray(data[begin:end]).view(dtype).reshape(shape)
    return out


def _is_tensor_dict(obj) -> bool:
    return isinstance(obj, Mapping) and obj and all(isinstance(k, str) for k in obj) and any(
        isinstance(v, np.ndarray) for v in obj.values())


def extract_state_dict(obj: Any, source: str) -> dict[str, np.ndarray]:
    """The tensor dict inside a checkpoint object: the object itself, or one nested under a usual key."""
    if _is_tensor_dict(obj):
        found = obj
    else:
        found = next((obj[k] for k in _NESTED_KEYS if isinstance(obj, Mapping) and _is_tensor_dict(obj.get(k))), None)
    if found is None:
        raise CheckpointError(f"{source}: holds no tensor state dict (looked at the top level and under "
                              f"{', '.join(_NESTED_KEYS)}); save model.state_dict()")
    tensors = {k: v for k, v in found.items() if isinstance(v, np.ndarray)}
    # nn.DataParallel / DistributedDataParallel prefix every key with "module.".
    if tensors and all(k.startswith("module.") for k in tensors):
        tensors = {k[len("module."):]: v for k, v in tensors.items()}
    return tensors


def _weight_files(directory: Path) -> list[Path]:
    for index_name, single in (("model.safetensors.index.json", "model.safetensors"),
                               ("pytorch_model.bin.index.json", "pytorch_model.bin")):
        index = directory / index_name
        if index.exists():
            try:
                shards = sorted(set(json.loads(index.read_text())["weight_map"].values()))
            except (json.JSONDecodeError, KeyError, TypeError):
                raise CheckpointError(f"{index}: malformed shard index") from None
            return [directory / s for s in shards]
        if (directory / single).exists():
            return [directory / single]
    return []


def read_state_dict(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """{key: numpy array} from a .safetensors file, a PyTorch zip checkpoint, or a directory holding
    model.safetensors / pytorch_model.bin (sharded ones included). Raises CheckpointError."""
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"{path}: no such file or directory")
    if path.is_dir():
        files = _weight_files(path)
        if not files:
            raise CheckpointError(f"{path}: a directory with no model.safetensors or pytorch_model.bin; "
                                  "point at a checkpoint file or a Hugging Face model directory")
        merged: dict[str, np.ndarray] = {}
        for file in files:
            merged.update(read_state_dict(file))
        return merged
    if path.stat().st_size == 0:
        raise CheckpointError(f"{path}: the file is empty")
    with open(path, "rb") as fh:
        magic = fh.read(4)
    if path.suffix in SAFETENSORS_SUFFIXES or (path.suffix not in TORCH_SUFFIXES and magic[:2] != b"PK"
                                                and magic[:1] != b"\x80"):
        return read_safetensors(path)
    return extract_state_dict(read_torch_zip(path), str(path))
