"""Read checkpoint files into {key: numpy array} without running any code from them.

A suspect model may come from a hostile party: a pickle can call any Python function while it
loads, and a crafted tensor record can point anywhere in memory or ask for terabytes. PyTorch's
`.pt`/`.pth`/`.bin` files are zip archives holding a pickle (`data.pkl`) plus raw tensor bytes
(`data/<n>`); we unpickle `data.pkl` with a whitelist of exactly the globals a tensor state dict
needs, into *records* (storage key, dtype, offset, shape, strides) rather than arrays. Every record
is checked against its storage's declared size, every storage against its zip entry, and the total
against a byte limit, before one byte of tensor data is decompressed or copied; only the storages
the state dict refers to are read. Safetensors files are parsed directly and their header is
validated the same way (docs/security.md lists every check). Neither path imports torch.
"""

from __future__ import annotations

import io
import json
import os
import pickle
import pickletools
import stat
import struct
import zipfile
import zlib
from pathlib import Path
from typing import Any, BinaryIO, Mapping

import ml_dtypes
import numpy as np

from jaxprov.errors import CheckpointError, UnsafeCheckpointError

TORCH_SUFFIXES = (".pt", ".pth", ".bin", ".ckpt", ".tar")
SAFETENSORS_SUFFIXES = (".safetensors",)

# The most bytes one checkpoint may expand to in memory (storages read plus tensors built).
MAX_BYTES_ENV = "JAXPROV_MAX_CHECKPOINT_BYTES"
DEFAULT_MAX_BYTES = 64 * 2**30
MAX_PICKLE_BYTES = 64 * 2**20  # data.pkl: ~1 KB per tensor in practice
MAX_HEADER_BYTES = 100 * 2**20  # the safetensors library's own limit
MAX_NDIM = 32
# Views may repeat storage bytes (tied weights, expanded tensors with zero strides), but only so
# far: the tensors built may exceed the storages read by this factor plus a slack.
VIEW_EXPANSION, VIEW_SLACK = 4, 64 * 2**20
# PyTorch stores storages uncompressed; a deflated entry may expand at most this much (float data
# compresses ~1.1x, a zip bomb ~1000x).
MAX_DEFLATE_RATIO = 64

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
# Everything a malformed pickle, zip or deflate stream can raise while being parsed.
_PARSE_ERRORS = (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, pickle.UnpicklingError, struct.error,
                 zlib.error, ValueError, TypeError, KeyError, IndexError, AttributeError, OverflowError,
                 RecursionError, MemoryError, UnicodeDecodeError, NotImplementedError, RuntimeError, OSError)


def max_bytes() -> int:
    """The byte limit for one checkpoint: $JAXPROV_MAX_CHECKPOINT_BYTES, else DEFAULT_MAX_BYTES."""
    value = os.environ.get(MAX_BYTES_ENV)
    if value is None:
        return DEFAULT_MAX_BYTES
    try:
        limit = int(value)
    except ValueError:
        limit = -1
    if limit <= 0:
        raise CheckpointError(f"${MAX_BYTES_ENV}={value!r:.40} is not a positive number of bytes; unset it or "
                              "set it to e.g. 68719476736 (64 GiB)")
    return limit


def _too_big(source: str, what: str, nbytes: int, limit: int) -> CheckpointError:
    return CheckpointError(f"{source}: {what} {nbytes:,} bytes, more than the limit of {limit:,}; if the file is "
                           f"trusted, raise the limit with ${MAX_BYTES_ENV}")


# -- opening files -------------------------------------------------------------------------------

def check_regular_file(path: str | os.PathLike) -> os.stat_result:
    """os.stat of `path` (symlinks followed) if it is a regular file; else CheckpointError.

    FIFOs, character/block devices (/dev/zero), sockets and directories are refused without being
    opened: opening a FIFO blocks until a writer comes, and a device never ends.
    """
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise CheckpointError(f"{path}: no such file or directory") from None
    except OSError as err:
        raise CheckpointError(f"{path}: cannot be read ({err.strerror}); check the path and its permissions") from None
    if not stat.S_ISREG(st.st_mode):
        kind = ("a directory" if stat.S_ISDIR(st.st_mode) else "a FIFO" if stat.S_ISFIFO(st.st_mode) else
                "a device" if stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode) else
                "a socket" if stat.S_ISSOCK(st.st_mode) else "not a regular file")
        raise CheckpointError(f"{path}: {kind}, not a checkpoint file; point at a regular file")
    return st


def open_regular(path: str | os.PathLike) -> BinaryIO:
    """Open a regular file for reading without ever blocking (the type is checked again on the open
    descriptor, so a file swapped for a FIFO after the first check is refused too)."""
    check_regular_file(path)
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0))
    except OSError as err:
        raise CheckpointError(f"{path}: cannot be read ({err.strerror}); check the path and its permissions") from None
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise CheckpointError(f"{path}: changed into something other than a regular file while being opened")
    return os.fdopen(fd, "rb")


# -- PyTorch zip checkpoints ---------------------------------------------------------------------

class _Malformed(ValueError):
    """A record in data.pkl that PyTorch would never write; read_torch_zip adds the file's name."""


class _StorageType:
    __slots__ = ("name", "dtype")

    def __init__(self, name: str):
        self.name, self.dtype = name, np.dtype(_STORAGE_DTYPES[name])


class _Storage:
    """A storage the pickle declares: zip entry `key`, `numel` elements of `dtype`. Not read yet."""
    __slots__ = ("key", "dtype", "numel")

    def __init__(self, key: str, dtype: np.dtype, numel: int):
        self.key, self.dtype, self.numel = key, dtype, numel

    @property
    def nbytes(self) -> int:
        return self.numel * self.dtype.itemsize


class TensorRecord:
    """A tensor as a validated view into a storage: lies wholly inside it, offset and strides >= 0."""
    __slots__ = ("storage", "offset", "shape", "strides")

    def __init__(self, storage: _Storage, offset: int, shape: tuple[int, ...], strides: tuple[int, ...]):
        self.storage, self.offset, self.shape, self.strides = storage, offset, shape, strides

    @property
    def numel(self) -> int:
        return int(np.prod(self.shape, dtype=object)) if self.shape else 1

    @property
    def nbytes(self) -> int:
        return self.numel * self.storage.dtype.itemsize


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _int_tuple(value, what: str) -> tuple[int, ...]:
    if not isinstance(value, (tuple, list)) or len(value) > MAX_NDIM or not all(_is_int(v) for v in value):
        raise _Malformed(f"a tensor record's {what} is not a tuple of at most {MAX_NDIM} integers")
    return tuple(value)


def _rebuild_tensor(storage=None, offset=None, size=None, stride=None, *_unused) -> TensorRecord:
    """torch._utils._rebuild_tensor(_v2): checks the view against its storage, builds nothing."""
    if not isinstance(storage, _Storage):
        raise _Malformed("a tensor record does not refer to a typed storage")
    if not _is_int(offset) or offset < 0:
        raise _Malformed("a tensor record has a storage offset that is not a non-negative integer")
    shape, strides = _int_tuple(size, "shape"), _int_tuple(stride, "strides")
    if len(shape) != len(strides):
        raise _Malformed(f"a tensor record has {len(shape)} dimensions but {len(strides)} strides")
    if any(n < 0 for n in shape) or any(s < 0 for s in strides):
        raise _Malformed("a tensor record has a negative dimension or stride (PyTorch never saves one)")
    record = TensorRecord(storage, offset, shape, strides)
    if record.numel:
        # Strides are >= 0, so the lowest addressed element is `offset` and the highest this one.
        highest = offset + sum((n - 1) * s for n, s in zip(shape, strides))
        if highest >= storage.numel:
            raise _Malformed(f"a tensor of shape {shape} at offset {offset} reaches element {highest} "
                                  f"of storage {storage.key}, which holds {storage.numel}")
    return record


def _rebuild_parameter(data=None, *_unused) -> TensorRecord:
    if not isinstance(data, TensorRecord):
        raise _Malformed("a parameter record does not wrap a tensor")
    return data


def _ordered_dict(*args, **kwargs):
    if args or kwargs:  # torch pickles an empty OrderedDict and then sets its items
        raise _Malformed("an OrderedDict record has arguments (PyTorch never writes them)")
    return __import__("collections").OrderedDict()


class _SafeUnpickler(pickle.Unpickler):
    """Resolves only the globals of a tensor state dict; refuses every other import."""

    _ALLOWED = {
        ("collections", "OrderedDict"): _ordered_dict,
        ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
        ("torch._utils", "_rebuild_tensor"): _rebuild_tensor,
        ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    }

    def __init__(self, file, entries: Mapping[str, zipfile.ZipInfo], source: str):
        super().__init__(file)
        self._entries = entries
        self._source = source
        self.storages: dict[str, _Storage] = {}

    def find_class(self, module: str, name: str):
        if (module, name) in self._ALLOWED:
            return self._ALLOWED[(module, name)]
        if module == "torch" and name in _STORAGE_DTYPES:
            return _StorageType(name)
        raise UnsafeCheckpointError(
            f"{self._source}: refused to load: the pickle asks for {module:.60}.{name:.60}, which is not part of a "
            "tensor state dict and could run code; save model.state_dict() (or use safetensors) instead")

    def persistent_load(self, pid):
        if not (isinstance(pid, tuple) and len(pid) == 5 and pid[0] == "storage"
                and isinstance(pid[1], _StorageType) and isinstance(pid[2], str) and _is_int(pid[4]) and pid[4] >= 0):
            raise UnsafeCheckpointError(f"{self._source}: refused to load: a persistent object that is not a "
                                        f"typed storage ({type(pid).__name__})")
        _, storage_type, key, _location, numel = pid
        entry = self._entries.get(key)
        if entry is None:
            raise CheckpointError(f"{self._source}: storage {key:.40} is missing from the archive (corrupt or "
                                  "truncated file)")
        storage = self.storages.setdefault(key, _Storage(key, storage_type.dtype, numel))
        if (storage.dtype, storage.numel) != (storage_type.dtype, numel):
            raise CheckpointError(f"{self._source}: storage {key:.40} is declared twice with different types or sizes")
        if entry.file_size != storage.nbytes:
            raise CheckpointError(f"{self._source}: storage {key:.40} declares {storage.nbytes:,} bytes but its "
                                  f"archive entry holds {entry.file_size:,} (corrupt file)")
        return storage


def _check_entry(source: str, info: zipfile.ZipInfo, file_size: int) -> None:
    """An archive entry we may read: not encrypted, stored or deflated, sizes consistent with the file."""
    if info.flag_bits & 0x1:
        raise CheckpointError(f"{source}: archive entry {info.filename:.80} is encrypted; PyTorch never encrypts, "
                              "re-save the checkpoint with torch.save")
    if info.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
        raise CheckpointError(f"{source}: archive entry {info.filename:.80} uses unsupported compression "
                              f"(method {info.compress_type}); re-save the checkpoint with torch.save")
    if info.compress_size > file_size or (info.compress_type == zipfile.ZIP_STORED and info.compress_size != info.file_size):
        raise CheckpointError(f"{source}: archive entry {info.filename:.80} declares sizes the file cannot hold "
                              "(corrupt or truncated file)")
    if info.compress_type == zipfile.ZIP_DEFLATED and info.file_size > MAX_DEFLATE_RATIO * info.compress_size + 2**16:
        raise CheckpointError(f"{source}: archive entry {info.filename:.80} would expand {info.file_size:,} bytes from "
                              f"{info.compress_size:,} (a zip bomb?); PyTorch stores tensors uncompressed, re-save it")


def _read_entry(archive: zipfile.ZipFile, info: zipfile.ZipInfo) -> bytes:
    with archive.open(info) as fh:
        data = fh.read(info.file_size)
        if len(data) != info.file_size or fh.read(1):
            raise zipfile.BadZipFile(f"entry {info.filename} is not {info.file_size} bytes long")
    return data


def _prescan_pickle(data: bytes) -> None:
    """Parse every opcode once without executing any: a length field larger than the pickle
    (which CPython's unpickler would allocate up front) or a broken opcode stream fails here."""
    for _ in pickletools.genops(io.BytesIO(data)):
        pass


def _unpickle_records(fh: BinaryIO, source: str) -> tuple[zipfile.ZipFile, dict[str, zipfile.ZipInfo], Any]:
    """The archive, its storage entries, and data.pkl's object tree with TensorRecords for tensors."""
    file_size = os.fstat(fh.fileno()).st_size
    archive = zipfile.ZipFile(fh)
    infos = archive.infolist()
    names = [i.filename for i in infos]
    if len(set(names)) != len(names):
        raise CheckpointError(f"{source}: the archive holds two entries with the same name (corrupt or crafted file)")
    pkl = [i for i in infos if i.filename.endswith("/data.pkl") or i.filename == "data.pkl"]
    if len(pkl) != 1:
        raise CheckpointError(f"{source}: a zip file, but not a PyTorch checkpoint (no single data.pkl inside)")
    prefix = pkl[0].filename[: -len("data.pkl")]
    by_name = {i.filename: i for i in infos}
    if prefix + "byteorder" in by_name:
        info = by_name[prefix + "byteorder"]
        _check_entry(source, info, file_size)
        if info.file_size > 16 or _read_entry(archive, info) != b"little":
            raise CheckpointError(f"{source}: not a little-endian checkpoint; big-endian checkpoints are not supported")
    _check_entry(source, pkl[0], file_size)
    if pkl[0].file_size > MAX_PICKLE_BYTES:
        raise CheckpointError(f"{source}: its data.pkl is {pkl[0].file_size:,} bytes, more than the "
                              f"{MAX_PICKLE_BYTES:,} a state dict needs (corrupt or crafted file)")
    data = _read_entry(archive, pkl[0])
    _prescan_pickle(data)
    entries = {i.filename[len(prefix) + 5:]: i for i in infos if i.filename.startswith(prefix + "data/")}
    return archive, entries, _SafeUnpickler(io.BytesIO(data), entries, source).load()


def _materialize(records: Mapping[str, TensorRecord], archive: zipfile.ZipFile,
                 entries: Mapping[str, zipfile.ZipInfo], source: str, limit: int) -> dict[str, np.ndarray]:
    """Arrays for `records`, reading each referenced storage once, after checking the byte budget."""
    storages = {r.storage.key: r.storage for r in records.values()}
    storage_bytes = sum(s.nbytes for s in storages.values())
    tensor_bytes = sum(r.nbytes for r in records.values())
    if tensor_bytes > VIEW_EXPANSION * storage_bytes + VIEW_SLACK:
        raise CheckpointError(f"{source}: its tensors would take {tensor_bytes:,} bytes built from {storage_bytes:,} "
                              "bytes of storage (zero or overlapping strides); refused as a memory bomb")
    if storage_bytes + tensor_bytes > limit:
        raise _too_big(source, "its tensors and storages take", storage_bytes + tensor_bytes, limit)
    file_size = os.fstat(archive.fp.fileno()).st_size if hasattr(archive.fp, "fileno") else float("inf")
    by_storage: dict[str, list[str]] = {}
    for name, record in records.items():
        by_storage.setdefault(record.storage.key, []).append(name)
    out: dict[str, np.ndarray] = {}
    for key, names in by_storage.items():
        storage, info = storages[key], entries[key]
        _check_entry(source, info, file_size)
        flat = np.frombuffer(_read_entry(archive, info), dtype=storage.dtype)
        if storage.dtype == np.bool_:  # a byte other than 0/1 is not a valid numpy bool
            flat = flat.view(np.uint8) != 0
        for name in names:
            r = records[name]
            if r.numel == 0:
                out[name] = np.zeros(r.shape, storage.dtype)
                continue
            view = np.lib.stride_tricks.as_strided(flat[r.offset:], shape=r.shape,
                                                   strides=tuple(s * flat.itemsize for s in r.strides))
            out[name] = np.array(view)  # own the memory: the storage buffer is not kept
    return out


def _legacy_or_corrupt(fh: BinaryIO, source: str) -> CheckpointError:
    fh.seek(0)
    head = fh.read(2)
    if head == b"PK":
        return CheckpointError(f"{source}: truncated or corrupt zip archive (its directory is missing); "
                               "download or copy the file again")
    kind = "a plain pickle" if head[:1] == b"\x80" else "not a PyTorch zip checkpoint"
    return UnsafeCheckpointError(
        f"{source}: refused to load: {kind} (legacy torch.save format or arbitrary pickle, which could run "
        "code); re-save it with a current torch.save(model.state_dict()) or as safetensors")


def read_torch_zip(path: str | os.PathLike, limit: int | None = None) -> dict[str, np.ndarray]:
    """The tensor state dict of a PyTorch zip checkpoint, running no foreign code.

    Only the storages that the state dict's tensors refer to are read, each at most once.
    Raises CheckpointError (UnsafeCheckpointError for a pickle that asks for anything else).
    """
    source = str(path)
    limit = max_bytes() if limit is None else limit
    with open_regular(path) as fh:
        if not zipfile.is_zipfile(fh):
            raise _legacy_or_corrupt(fh, source)
        fh.seek(0)
        try:
            archive, entries, tree = _unpickle_records(fh, source)
            records = extract_state_dict(tree, source)
            return _materialize(records, archive, entries, source, limit)
        except CheckpointError:
            raise
        except _Malformed as err:
            raise CheckpointError(f"{source}: {err} (corrupt or crafted file); re-save it with torch.save") from None
        except _PARSE_ERRORS as err:
            raise CheckpointError(f"{source}: corrupt or truncated PyTorch checkpoint "
                                  f"({type(err).__name__}: {str(err)[:120]})") from None


# -- safetensors ---------------------------------------------------------------------------------

def _unique_keys(pairs):
    out = {}
    for key, value in pairs:
        if key in out:
            raise CheckpointError(f"the header names {key!r:.60} twice")
        out[key] = value
    return out


def _header_entries(header, data_size: int, source: str) -> list[tuple[str, np.dtype, tuple[int, ...], int, int]]:
    """(key, dtype, shape, begin, end) per tensor, checked: the spans tile the data section exactly."""
    if not isinstance(header, dict):
        raise CheckpointError(f"{source}: the safetensors header is not a JSON object (corrupt file)")
    metadata = header.get("__metadata__", {})
    if not isinstance(metadata, dict) or not all(isinstance(v, str) for v in metadata.values()):
        raise CheckpointError(f"{source}: the safetensors __metadata__ is not a string-to-string object")
    entries = []
    for key, info in header.items():
        if key == "__metadata__":
            continue
        bad = CheckpointError(f"{source}: tensor {key!r:.60} has a malformed header entry (needs dtype, shape and "
                              "two integer data_offsets)")
        if not isinstance(info, dict) or set(info) != {"dtype", "shape", "data_offsets"}:
            raise bad
        dtype, shape, offsets = info["dtype"], info["shape"], info["data_offsets"]
        if not isinstance(dtype, str) or not isinstance(shape, list) or not isinstance(offsets, list) or len(offsets) != 2:
            raise bad
        if dtype not in _SAFETENSORS_DTYPES:
            raise CheckpointError(f"{source}: tensor {key!r:.60} has unsupported dtype {dtype!r:.20}; jaxprov reads "
                                  f"{', '.join(_SAFETENSORS_DTYPES)}")
        if len(shape) > MAX_NDIM or not all(_is_int(n) and n >= 0 for n in shape):
            raise CheckpointError(f"{source}: tensor {key!r:.60} has a shape that is not a list of non-negative integers")
        if not all(_is_int(o) for o in offsets):
            raise bad
        itemsize = np.dtype(_SAFETENSORS_DTYPES[dtype]).itemsize
        begin, end = offsets
        numel = int(np.prod(shape, dtype=object)) if shape else 1
        if not 0 <= begin <= end or end - begin != numel * itemsize:
            raise CheckpointError(f"{source}: tensor {key!r:.60} has data_offsets [{begin}, {end}] that do not match "
                                  f"its shape {tuple(shape)} of {dtype} (corrupt file)")
        entries.append((key, np.dtype(_SAFETENSORS_DTYPES[dtype]), tuple(shape), begin, end))
    # As in the safetensors library: sorted by offset, the spans must tile the data section.
    entries.sort(key=lambda e: (e[3], e[4]))
    position = 0
    for key, _, _, begin, end in entries:
        if begin != position:
            what = "overlaps the tensor before it" if begin < position else "leaves a gap before it"
            raise CheckpointError(f"{source}: tensor {key!r:.60} {what} (data_offsets start at {begin}, expected "
                                  f"{position}; corrupt or crafted file)")
        position = end
    if position != data_size:
        raise CheckpointError(f"{source}: the tensors cover {position:,} bytes but the data section holds "
                              f"{data_size:,} (truncated or corrupt file)")
    return entries


def read_safetensors(path: str | os.PathLike, limit: int | None = None) -> dict[str, np.ndarray]:
    source = str(path)
    limit = max_bytes() if limit is None else limit
    with open_regular(path) as fh:
        size = os.fstat(fh.fileno()).st_size
        head = fh.read(8)
        if len(head) < 8:
            raise CheckpointError(f"{source}: too short to be a safetensors file")
        (n,) = struct.unpack("<Q", head)
        if n > size - 8 or n > MAX_HEADER_BYTES:
            raise CheckpointError(f"{source}: not a safetensors file, or truncated (header length {n:,})")
        try:
            header = json.loads(fh.read(n), object_pairs_hook=_unique_keys)
        except CheckpointError as err:
            raise CheckpointError(f"{source}: corrupt safetensors header ({err})") from None
        except (UnicodeDecodeError, ValueError, RecursionError):  # JSONDecodeError, huge ints, deep nesting
            raise CheckpointError(f"{source}: corrupt safetensors header (not valid JSON of bounded depth)") from None
        data_size = size - 8 - n
        entries = _header_entries(header, data_size, source)
        if data_size > limit:
            raise _too_big(source, "its tensors take", data_size, limit)
        out = {}
        for key, dtype, shape, begin, end in entries:
            buffer = np.empty(end - begin, np.uint8)
            fh.seek(8 + n + begin)
            if fh.readinto(buffer) != buffer.size:
                raise CheckpointError(f"{source}: shorter than its header says (the file changed while being read)")
            array = buffer.view(dtype) if dtype != np.bool_ else buffer != 0
            out[key] = array.reshape(shape)
    return out


# -- state dicts ---------------------------------------------------------------------------------

_TENSOR_TYPES = (np.ndarray, TensorRecord)


def _is_tensor_dict(obj) -> bool:
    return isinstance(obj, Mapping) and bool(obj) and all(isinstance(k, str) for k in obj) and any(
        isinstance(v, _TENSOR_TYPES) for v in obj.values())


def extract_state_dict(obj: Any, source: str) -> dict:
    """The tensor dict inside a checkpoint object: the object itself, or one nested under a usual key."""
    if _is_tensor_dict(obj):
        found = obj
    else:
        found = next((obj[k] for k in _NESTED_KEYS if isinstance(obj, Mapping) and _is_tensor_dict(obj.get(k))), None)
    if found is None:
        raise CheckpointError(f"{source}: holds no tensor state dict (looked at the top level and under "
                              f"{', '.join(_NESTED_KEYS)}); save model.state_dict()")
    tensors = {k: v for k, v in found.items() if isinstance(v, _TENSOR_TYPES)}
    # nn.DataParallel / DistributedDataParallel prefix every key with "module.".
    if tensors and all(k.startswith("module.") for k in tensors):
        tensors = {k[len("module."):]: v for k, v in tensors.items()}
    return tensors


def read_checkpoint_file(path: str | os.PathLike, limit: int | None = None) -> dict[str, np.ndarray]:
    """{key: numpy array} from one .safetensors file or PyTorch zip checkpoint. Raises CheckpointError."""
    path = Path(path)
    st = check_regular_file(path)
    if st.st_size == 0:
        raise CheckpointError(f"{path}: the file is empty")
    with open_regular(path) as fh:
        magic = fh.read(4)
    if path.suffix in SAFETENSORS_SUFFIXES or (path.suffix not in TORCH_SUFFIXES and magic[:2] != b"PK"
                                                and magic[:1] != b"\x80"):
        return read_safetensors(path, limit)
    return read_torch_zip(path, limit)


# -- model folders -------------------------------------------------------------------------------

MAX_JSON_BYTES = 64 * 2**20  # config.json, shard indexes
_INDEXES = (("model.safetensors.index.json", "model.safetensors", SAFETENSORS_SUFFIXES),
            ("pytorch_model.bin.index.json", "pytorch_model.bin", TORCH_SUFFIXES))


def resolve_inside(directory: str | os.PathLike, name, source: str | None = None) -> Path:
    """`directory/name` after symlinks, if that is a regular file inside `directory`; else CheckpointError.

    Absolute names, `..` and symlinks that lead out of the folder are refused, so a folder can never
    make jaxprov read (or hash) a file its owner did not put inside it.
    """
    directory = Path(directory)
    source = source or str(directory)
    if not isinstance(name, str) or not name or "\0" in name:
        raise CheckpointError(f"{source}: names a file that is not a non-empty string ({type(name).__name__})")
    root = directory.resolve()
    try:
        target = (directory / name).resolve()
    except (OSError, RuntimeError) as err:  # a symlink loop
        raise CheckpointError(f"{source}: {name!r:.200} cannot be resolved ({err}); fix the folder's links") from None
    if not target.is_relative_to(root):
        raise CheckpointError(f"{source}: {name!r:.200} leads outside the folder {directory} (absolute path, '..' or "
                              "a symlink); refused: every file of a model folder must lie inside it")
    check_regular_file(target)
    return target


def read_json(path: Path, source: str | None = None):
    """A small JSON file (config.json, a shard index): unique keys, bounded size and depth."""
    source = source or str(path)
    with open_regular(path) as fh:
        size = os.fstat(fh.fileno()).st_size
        if size > MAX_JSON_BYTES:
            raise CheckpointError(f"{source}: larger than {MAX_JSON_BYTES:,} bytes; not a config or shard index")
        text = fh.read(size + 1)  # never read(n) with a large n: it allocates n bytes up front
    if len(text) > MAX_JSON_BYTES:
        raise CheckpointError(f"{source}: larger than {MAX_JSON_BYTES:,} bytes; not a config or shard index")
    try:
        return json.loads(text, object_pairs_hook=_unique_keys)
    except CheckpointError as err:
        raise CheckpointError(f"{source}: not valid JSON ({err})") from None
    except (UnicodeDecodeError, ValueError, RecursionError) as err:
        raise CheckpointError(f"{source}: not valid JSON of bounded depth ({type(err).__name__})") from None


def _shards(directory: Path, index_name: str, suffixes: tuple[str, ...]) -> list[Path]:
    source = str(directory / index_name)
    weight_map = read_json(resolve_inside(directory, index_name), source)
    weight_map = weight_map.get("weight_map") if isinstance(weight_map, dict) else None
    if not isinstance(weight_map, dict) or not weight_map or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in weight_map.items()):
        raise CheckpointError(f"{source}: malformed shard index (needs a non-empty \"weight_map\" object of "
                              "tensor name -> shard file name)")
    shards = []
    for name in sorted(set(weight_map.values())):
        if not name.endswith(suffixes):
            raise CheckpointError(f"{source}: shard {name!r:.200} is not a {' / '.join(suffixes)} file")
        shards.append(resolve_inside(directory, name, source))
    return sorted(set(shards))


def weight_files(directory: str | os.PathLike) -> list[Path]:
    """The weight files of a model folder (resolved, inside it): the shards its index names, or
    model.safetensors / pytorch_model.bin. Empty if it has none."""
    directory = Path(directory)
    for index_name, single, suffixes in _INDEXES:
        if os.path.lexists(directory / index_name):
            return _shards(directory, index_name, suffixes)
        if os.path.lexists(directory / single):
            return [resolve_inside(directory, single)]
    return []


def source_files(path: str | os.PathLike) -> list[Path]:
    """Every file that reading `path` opens: the file itself, or a folder's config.json, shard index
    and weight files (each resolved inside the folder). The source digest covers exactly these."""
    path = Path(path)
    if not path.is_dir():
        check_regular_file(path)
        return [path]
    files = [resolve_inside(path, "config.json")] if os.path.lexists(path / "config.json") else []
    files += [resolve_inside(path, index) for index, _, _ in _INDEXES if os.path.lexists(path / index)][:1]
    return files + weight_files(path)


def read_state_dict(path: str | os.PathLike, limit: int | None = None) -> dict[str, np.ndarray]:
    """{key: numpy array} from a .safetensors file, a PyTorch zip checkpoint, or a directory holding
    model.safetensors / pytorch_model.bin (sharded ones included). Raises CheckpointError.

    `limit` bounds the bytes one file may expand to (default: max_bytes()).
    """
    path = Path(path)
    if not os.path.lexists(path):
        raise CheckpointError(f"{path}: no such file or directory")
    if not path.is_dir():
        return read_checkpoint_file(path, limit)
    files = weight_files(path)
    if not files:
        raise CheckpointError(f"{path}: a directory with no model.safetensors or pytorch_model.bin; "
                              "point at a checkpoint file or a Hugging Face model directory")
    merged: dict[str, np.ndarray] = {}
    for file in files:
        tensors = read_checkpoint_file(file, limit)
        twice = sorted(set(tensors) & set(merged))
        if twice:
            raise CheckpointError(f"{file}: tensor {twice[0]!r:.80} is also in another shard of {path}; "
                                  "each tensor must be in exactly one shard")
        merged.update(tensors)
    return merged
