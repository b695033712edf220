"""Read a `torch.export` archive (.pt2) without running anything it holds.

What torch's own `torch.export.load` (torch 2.14) can execute, and what this reader does instead:
  - weights and constants saved "with pickle" (`use_pickle: true`) are read with
    `torch.load(weights_only=False)`: arbitrary code. Refused here; raw tensor payloads only.
  - the example inputs (`data/sample_inputs/*.pt`, a torch pickle) are read with
    `weights_only=True` and, if that fails, again with `weights_only=False`: arbitrary code.
    Never read here (the deserializer is handed no example inputs).
  - custom objects (torchbind `custom_obj_*`, pickled ScriptObjects) are unpickled: refused.
  - every symbolic shape (`expr_str`) is parsed by `sympy.sympify`, which evaluates Python:
    each must be made only of sympy's symbol and arithmetic constructors (checked here first).
  - node targets are resolved by attribute lookup under `torch`, `operator` and `math`, and
    graph nodes call them: only `torch.ops.aten.*`, `torch.ops.prims.*` and a few `operator`
    functions on sizes are accepted, and the graph runs in torchax's interpreter of those ops.
  - `guards_code` (Python source of shape guards) is dropped; torchax runs the graph on jax
    arrays and nothing consults torch's guards.
  - AOTInductor payloads (compiled shared libraries) and extra files: refused.
Sizes are bounded as for every checkpoint (converters.readers: regular file, byte limit, every
payload within its zip entry).
"""

from __future__ import annotations

import hashlib
import json
import re
import zipfile
from pathlib import Path

import numpy as np

from converters import readers
from jaxprov.errors import CheckpointError, UnsafeCheckpointError
from jaxprov.model import InputSpec

SUFFIX = ".pt2"
_DTYPES = {1: np.uint8, 2: np.int8, 3: np.int16, 4: np.int32, 5: np.int64, 6: np.float16, 7: np.float32,
           8: np.float64, 12: np.bool_}
_FIXED = {"archive_format", "archive_version", "byteorder", ".data/version", ".data/serialization_id"}
_ENTRY = re.compile(r"^(?:models/model\.json|data/weights/(?:weight_\d+|model_weights_config\.json)|"
                    r"data/constants/(?:tensor_\d+|model_constants_config\.json)|data/sample_inputs/model\.pt)$")
_TARGET = re.compile(r"^torch\.ops\.(?:aten|prims)\.\w+\.\w+$|^_operator\.(?:getitem|add|sub|mul|floordiv|mod|neg|"
                     r"truediv|pow|eq|ne|lt|le|gt|ge)$")
_SYMPY_NAMES = {"Symbol", "Integer", "Rational", "Add", "Mul", "Pow", "Max", "Min", "FloorDiv", "Mod", "PythonMod",
                "CeilToInt", "FloorToInt", "CleanDiv", "CeilDiv", "IntTrueDiv", "ToFloat", "TruncToInt",
                "positive", "integer", "True", "False", "nonnegative", "real", "finite", "Float"}
_SYMPY_TOKEN = re.compile(r"\s*(?:([A-Za-z]\w*)|('[a-z]+\d*')|(-?\d+(?:\.\d+)?)|([(),=*+/-]))")


def _check_expr(text: str, source: str) -> None:
    """An `expr_str` may hold only sympy constructors, quoted symbol names, numbers and operators."""
    if not isinstance(text, str) or len(text) > 2000 or "__" in text:
        raise UnsafeCheckpointError(f"{source}: a symbolic shape {str(text)[:60]!r} is not a sympy expression; refused")
    pos = 0
    while pos < len(text):
        match = _SYMPY_TOKEN.match(text, pos)
        if not match or match.end() == pos:
            raise UnsafeCheckpointError(f"{source}: a symbolic shape {text[:60]!r} holds {text[pos:pos + 20]!r}, "
                                        "which is not a sympy expression; refused (it would be evaluated)")
        if match.group(1) and match.group(1) not in _SYMPY_NAMES:
            raise UnsafeCheckpointError(f"{source}: a symbolic shape names {match.group(1)!r:.40}, not a sympy "
                                        "constructor; refused (it would be evaluated)")
        pos = match.end()


def _walk(node, source: str, found: dict) -> None:
    """Check every node target and symbolic expression of model.json; count what was seen."""
    stack = [node]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            for key, value in item.items():
                if key == "expr_str":
                    _check_expr(value, source)
                elif key == "target" and isinstance(value, str):
                    if not _TARGET.match(value):
                        raise UnsafeCheckpointError(f"{source}: the graph calls {value[:80]!r}, not an ATen/prims "
                                                    "operator; refused (only standard operators run)")
                    found["targets"] += 1
                elif key in ("as_custom_obj", "custom_obj") and value:
                    raise UnsafeCheckpointError(f"{source}: the graph uses a custom (torchbind) object; refused")
                else:
                    stack.append(value)
        elif isinstance(item, list):
            stack.extend(item)


def _tensor(archive: zipfile.ZipFile, prefix: str, folder: str, meta: dict, source: str):
    """One raw (unpickled) payload as a torch tensor, bounds-checked against its zip entry."""
    import torch

    if meta.get("use_pickle"):
        raise UnsafeCheckpointError(f"{source}: a tensor is stored as a pickle (use_pickle); refused, torch would "
                                    "unpickle it with weights_only=False")
    name = meta.get("path_name")
    tensor_meta = meta.get("tensor_meta")
    entry = f"{prefix}{folder}/{name}"
    if not isinstance(name, str) or not isinstance(tensor_meta, dict) or entry not in archive.NameToInfo:
        raise CheckpointError(f"{source}: a tensor record names {str(name)[:40]!r}, which the archive does not hold")
    dtype = _DTYPES.get(tensor_meta.get("dtype"))
    if dtype is None:
        raise CheckpointError(f"{source}: tensor {name} has dtype code {tensor_meta.get('dtype')!r:.20}, which jaxprov "
                              "does not read")
    try:
        sizes = [int(s["as_int"]) for s in tensor_meta["sizes"]]
        strides = [int(s["as_int"]) for s in tensor_meta["strides"]]
        offset = int(tensor_meta["storage_offset"]["as_int"])
    except (KeyError, TypeError, ValueError):
        raise CheckpointError(f"{source}: tensor {name} has symbolic or malformed sizes; re-export with static "
                              "weight shapes") from None
    info = archive.NameToInfo[entry]
    itemsize = np.dtype(dtype).itemsize
    if (len(sizes) != len(strides) or len(sizes) > readers.MAX_NDIM or min(sizes + strides + [offset], default=0) < 0
            or info.file_size > readers.max_bytes()):
        raise CheckpointError(f"{source}: tensor {name} has an impossible layout")
    extent = offset + sum((s - 1) * st for s, st in zip(sizes, strides)) + 1 if all(sizes) else 0
    if extent * itemsize > info.file_size:
        raise CheckpointError(f"{source}: tensor {name} reaches past its payload ({extent * itemsize} > "
                              f"{info.file_size} bytes); the archive is corrupt")
    data = np.frombuffer(archive.read(entry), dtype=dtype)
    array = np.lib.stride_tricks.as_strided(data[offset:] if data.size else data, shape=sizes,
                                            strides=[s * itemsize for s in strides]) if all(sizes) else \
        np.zeros(sizes, dtype)
    return torch.from_numpy(np.array(array)), bool(meta.get("is_param")), bool(tensor_meta.get("requires_grad"))


def _payloads(archive, prefix: str, folder: str, config_name: str, source: str) -> dict:
    import torch

    entry = f"{prefix}{folder}/{config_name}"
    if entry not in archive.NameToInfo:
        return {}
    if archive.NameToInfo[entry].file_size > readers.MAX_JSON_BYTES:
        raise CheckpointError(f"{source}: {config_name} is too large")
    try:
        config = json.loads(archive.read(entry)).get("config")
    except (ValueError, AttributeError, UnicodeDecodeError):
        raise CheckpointError(f"{source}: {config_name} is not valid JSON") from None
    if not isinstance(config, dict):
        raise CheckpointError(f"{source}: {config_name} has no config object")
    out = {}
    for fqn, meta in config.items():
        if not isinstance(meta, dict):
            raise CheckpointError(f"{source}: {config_name} entry {fqn[:40]!r} is not an object")
        tensor, is_param, grad = _tensor(archive, prefix, folder, meta, source)
        out[fqn] = torch.nn.Parameter(tensor, requires_grad=grad) if is_param else tensor
    return out


def load(path) -> tuple[object, str]:
    """(ExportedProgram, sha256 of its graph JSON) from a .pt2 archive, or one line naming the refusal."""
    import torch
    from torch._export.serde import schema
    from torch._export.serde.serialize import ExportedProgramDeserializer, _dict_to_dataclass

    path = Path(path)
    source = str(path)
    readers.check_regular_file(path)
    handle = readers.open_regular(path)  # a ZipFile given a file object does not close it: closed below
    try:
        archive = zipfile.ZipFile(handle)
    except (zipfile.BadZipFile, OSError, ValueError):
        handle.close()
        raise CheckpointError(f"{source}: not a torch.export archive (not a zip file)") from None
    with handle, archive:
        names = archive.namelist()
        prefixes = {n.split("/", 1)[0] + "/" for n in names}
        if len(prefixes) != 1:
            raise CheckpointError(f"{source}: not a torch.export archive (entries under several top folders)")
        prefix = prefixes.pop()
        for name in names:
            inner = name[len(prefix):]
            if inner not in _FIXED and not _ENTRY.match(inner):
                raise UnsafeCheckpointError(f"{source}: holds {inner[:80]!r}, which is not part of a plain torch.export "
                                            "archive (AOTInductor code, extra files or several models); refused")
        fixed = lambda n: archive.read(prefix + n).decode("ascii", "replace").strip() if prefix + n in archive.NameToInfo else None  # noqa: E731
        if fixed("archive_format") != "pt2" or f"{prefix}models/model.json" not in archive.NameToInfo:
            raise CheckpointError(f"{source}: not a torch.export archive (no pt2 archive_format or models/model.json); "
                                  "save it with torch.export.save")
        if fixed("byteorder") not in (None, "little"):
            raise CheckpointError(f"{source}: a big-endian archive; jaxprov reads little-endian ones")
        info = archive.NameToInfo[f"{prefix}models/model.json"]
        if info.file_size > readers.MAX_JSON_BYTES:
            raise CheckpointError(f"{source}: models/model.json is larger than {readers.MAX_JSON_BYTES:,} bytes")
        raw = archive.read(info)
        try:
            program_json = json.loads(raw)
        except (ValueError, UnicodeDecodeError, RecursionError):
            raise CheckpointError(f"{source}: models/model.json is not valid JSON") from None
        if not isinstance(program_json, dict) or not isinstance(program_json.get("graph_module"), dict):
            raise CheckpointError(f"{source}: models/model.json is not a serialized ExportedProgram")
        found = {"targets": 0}
        _walk(program_json, source, found)
        program_json["guards_code"] = []  # Python source; never compiled here
        state_dict = _payloads(archive, prefix, "data/weights", "model_weights_config.json", source)
        constants = _payloads(archive, prefix, "data/constants", "model_constants_config.json", source)
    try:
        serialized = _dict_to_dataclass(schema.ExportedProgram, program_json)
        program = ExportedProgramDeserializer().deserialize(serialized, state_dict, constants, b"")
    except Exception as err:  # noqa: BLE001 - torch's deserializer raises many types for a malformed graph
        raise CheckpointError(f"{source}: torch cannot rebuild the exported graph ({type(err).__name__}: "
                              f"{' '.join(str(err).split())[:160]})") from None
    del torch
    return program, hashlib.sha256(json.dumps(program_json["graph_module"]["graph"], sort_keys=True)
                                   .encode()).hexdigest()


def input_spec(program, source: str) -> InputSpec:
    """The input of an exported program with one tensor input: [batch, C, H, W] images (C of 1 or 3,
    NHWC at jaxprov's boundary) or [batch, F] vectors."""
    signature = program.graph_signature
    users = [s for s in signature.input_specs if s.kind.name == "USER_INPUT"]
    if len(users) != 1:
        raise CheckpointError(f"{source}: the exported program takes {len(users)} inputs; jaxprov converts programs "
                              "of one tensor input")
    node = next(n for n in program.graph.nodes if n.op == "placeholder" and n.name == users[0].arg.name)
    batch, *rest = tuple(node.meta["val"].shape)
    if isinstance(batch, int):  # sizes baked into the graph would break (or bend) other batch sizes
        raise CheckpointError(f"{source}: the exported program has a fixed batch size {batch}; export it with a "
                              "dynamic batch axis (dynamic_shapes=({0: torch.export.Dim('batch')},))")
    shape = tuple(rest)
    try:
        dims = tuple(int(d) for d in shape)
    except TypeError:
        raise CheckpointError(f"{source}: the exported input has symbolic non-batch sizes {shape}; "
                              "give the input shape (--input-shape)") from None
    if len(dims) == 3 and dims[0] in (1, 3):
        return InputSpec("image", "NHWC", (dims[1], dims[2], dims[0]))
    if len(dims) == 1:
        return InputSpec("vector", "NF", dims, raw_range=None)
    raise CheckpointError(f"{source}: exported input of shape {dims} is neither an image [C, H, W] nor a vector [F]; "
                          "give the input shape (--input-shape)")
