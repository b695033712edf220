"""Crafting checkpoint files byte by byte, for the hostile-input tests and benchmarks/fuzz_readers.py.

A PyTorch zip checkpoint is written here from its parts (a protocol-2 pickle of `_rebuild_tensor_v2`
records plus raw storages), so a test can state exactly which field is hostile, and nothing depends
on torch at run time (tests/test_hostile_readers.py checks once that torch.load reads what we write).
"""

from __future__ import annotations

import json
import math
import struct
import zipfile
from pathlib import Path

# -- pickle opcodes (protocol 2) -------------------------------------------------------------------


def op_str(s: str) -> bytes:
    raw = s.encode()
    return b"X" + struct.pack("<I", len(raw)) + raw


def op_int(n: int) -> bytes:
    if 0 <= n < 256:
        return b"K" + bytes([n])
    if -2**31 <= n < 2**31:
        return b"J" + struct.pack("<i", n)
    raw = n.to_bytes((n.bit_length() + 8) // 8, "little", signed=True)
    return b"\x8a" + bytes([len(raw)]) + raw  # LONG1


def op_value(v) -> bytes:
    """Opcodes pushing a Python value built from ints, floats, strs, bools, None, tuples, lists and dicts."""
    if v is None:
        return b"N"
    if isinstance(v, bool):
        return b"\x88" if v else b"\x89"
    if isinstance(v, int):
        return op_int(v)
    if isinstance(v, float):
        return b"G" + struct.pack(">d", v)
    if isinstance(v, str):
        return op_str(v)
    if isinstance(v, tuple):
        return b"(" + b"".join(op_value(x) for x in v) + b"t"
    if isinstance(v, list):
        return b"]" + (b"(" + b"".join(op_value(x) for x in v) + b"e" if v else b"")
    if isinstance(v, dict):
        return b"}" + (b"(" + b"".join(op_value(k) + op_value(x) for k, x in v.items()) + b"u" if v else b"")
    if isinstance(v, bytes):  # raw opcodes, spliced in as they are
        return v
    raise TypeError(type(v))


def op_global(module: str, name: str) -> bytes:
    return b"c" + module.encode() + b"\n" + name.encode() + b"\n"


def op_call(module: str, name: str, *args) -> bytes:
    return op_global(module, name) + op_value(tuple(args)) + b"R"


def tensor_record(storage_key="0", numel=6, offset=0, size=(2, 3), stride=(3, 1), storage_class="FloatStorage",
                  parameter=False, pid=None, rebuild="_rebuild_tensor_v2", extra=None) -> bytes:
    """Opcodes for one tensor as torch.save writes it; every field can be replaced by a hostile value."""
    pid = (op_value(pid) if pid is not None else
           b"(" + op_str("storage") + op_global("torch", storage_class) + op_str(storage_key) + op_str("cpu")
           + op_value(numel) + b"t")
    args = extra if extra is not None else (
        b"Q", op_value(offset), op_value(size), op_value(stride), b"\x89", op_call("collections", "OrderedDict"))
    record = op_global("torch._utils", rebuild) + b"(" + pid + b"".join(op_value(a) for a in args) + b"tR"
    if parameter:
        record = op_global("torch._utils", "_rebuild_parameter") + b"(" + record + b"\x88" + \
            op_call("collections", "OrderedDict") + b"tR"
    return record


def state_dict_pickle(records: dict[str, bytes], wrap: str | None = None) -> bytes:
    """A protocol-2 pickle of {name: record}, optionally nested as {wrap: {...}}."""
    body = b"}(" + b"".join(op_str(k) + v for k, v in records.items()) + b"u"
    if wrap:
        body = b"}(" + op_str(wrap) + body + b"u"
    return b"\x80\x02" + body + b"."


# -- zip archives ----------------------------------------------------------------------------------


def write_pt(path: Path, pickle_bytes: bytes, storages: dict[str, bytes], *, deflate=(), extra=(),
             prefix="archive/") -> Path:
    """A PyTorch-layout zip: data.pkl, byteorder, data/<key> (deflated for keys in `deflate`)."""
    with zipfile.ZipFile(path, "w") as z:
        z.writestr(prefix + "data.pkl", pickle_bytes)
        z.writestr(prefix + "byteorder", "little")
        for key, raw in storages.items():
            kind = zipfile.ZIP_DEFLATED if key in deflate else zipfile.ZIP_STORED
            z.writestr(zipfile.ZipInfo(prefix + "data/" + key), raw, compress_type=kind)
        for name, raw in extra:
            z.writestr(name, raw)
        z.writestr(prefix + "version", "3\n")
    return path


def zero_pt(path: Path, **records) -> Path:
    """A valid checkpoint whose storages are all zeros: w (2x3), b (3), a transposed view and a scalar."""
    recs = {"w": tensor_record("0", 6, 0, (2, 3), (3, 1)), "b": tensor_record("1", 3, 0, (3,), (1,)),
            "wt": tensor_record("0", 6, 0, (3, 2), (1, 3)), "s": tensor_record("1", 3, 2, (), ())}
    recs.update(records)
    return write_pt(path, state_dict_pickle(recs), {"0": bytes(24), "1": bytes(12)})


def set_flag_bits(path: Path, name: str, bits: int) -> None:
    """OR `bits` into an entry's general-purpose flags, in its local and central headers."""
    data = bytearray(path.read_bytes())
    with zipfile.ZipFile(path) as z:
        info = z.getinfo(name)
    data[info.header_offset + 6] |= bits  # local file header
    pos = 0
    while (pos := data.find(b"PK\x01\x02", pos)) >= 0:
        length = struct.unpack("<H", data[pos + 28: pos + 30])[0]
        if data[pos + 46: pos + 46 + length].decode() == name:
            data[pos + 8] |= bits
        pos += 4
    path.write_bytes(bytes(data))


# -- safetensors -----------------------------------------------------------------------------------


def write_safetensors(path: Path, header, data: bytes, header_length: int | None = None) -> Path:
    """A safetensors file from a header (a dict, or raw JSON text/bytes) and a data section."""
    raw = header if isinstance(header, bytes) else (header if isinstance(header, str) else json.dumps(header)).encode()
    n = len(raw) if header_length is None else header_length
    path.write_bytes(struct.pack("<Q", n) + raw + data)
    return path


def zero_safetensors_header() -> tuple[dict, bytes]:
    header = {"w": {"dtype": "F32", "shape": [2, 3], "data_offsets": [0, 24]},
              "b": {"dtype": "F16", "shape": [3], "data_offsets": [24, 30]},
              "__metadata__": {"format": "pt"}}
    return header, bytes(30)


def safetensors_bytes(tensors: dict) -> bytes:
    """A valid safetensors file of numpy arrays (float32 / float16 / int64), written by hand."""
    codes = {"float32": "F32", "float16": "F16", "int64": "I64"}
    header, data, offset = {}, b"", 0
    for key, array in tensors.items():
        raw = array.tobytes()
        header[key] = {"dtype": codes[str(array.dtype)], "shape": list(array.shape),
                       "data_offsets": [offset, offset + len(raw)]}
        data, offset = data + raw, offset + len(raw)
    text = json.dumps(header).encode()
    return struct.pack("<Q", len(text)) + text + data


# -- Hugging Face folders --------------------------------------------------------------------------

BERT_CONFIG = {"model_type": "bert", "architectures": ["BertModel"], "vocab_size": 30, "hidden_size": 8,
               "num_hidden_layers": 1, "num_attention_heads": 2, "intermediate_size": 12,
               "max_position_embeddings": 16, "type_vocab_size": 2, "layer_norm_eps": 1e-12, "hidden_act": "gelu"}


def bert_state_dict(config: dict = BERT_CONFIG, fill: float = 0.0) -> dict:
    """A BertModel state dict (the key names transformers writes) of constant float32 arrays."""
    import numpy as np

    h, i = config["hidden_size"], config["intermediate_size"]
    shapes = {"embeddings.word_embeddings.weight": (config["vocab_size"], h),
              "embeddings.position_embeddings.weight": (config["max_position_embeddings"], h),
              "embeddings.token_type_embeddings.weight": (config["type_vocab_size"], h),
              "embeddings.LayerNorm.weight": (h,), "embeddings.LayerNorm.bias": (h,),
              "pooler.dense.weight": (h, h), "pooler.dense.bias": (h,)}
    for layer in range(config["num_hidden_layers"]):
        p = f"encoder.layer.{layer}."
        for name, out, inp in (("attention.self.query", h, h), ("attention.self.key", h, h),
                               ("attention.self.value", h, h), ("attention.output.dense", h, h),
                               ("intermediate.dense", i, h), ("output.dense", h, i)):
            shapes[p + name + ".weight"], shapes[p + name + ".bias"] = (out, inp), (out,)
        for name in ("attention.output.LayerNorm", "output.LayerNorm"):
            shapes[p + name + ".weight"], shapes[p + name + ".bias"] = (h,), (h,)
    return {k: np.full(s, fill, np.float32) for k, s in shapes.items()}


def bert_folder(directory: Path, shards: int = 1, config: dict | None = None, fill: float = 0.0) -> Path:
    """A tiny Hugging Face BERT folder: config.json plus model.safetensors, or `shards` shards and an index."""
    directory.mkdir(parents=True, exist_ok=True)
    config = {**BERT_CONFIG, **(config or {})}
    (directory / "config.json").write_text(json.dumps(config))
    tensors = bert_state_dict(config, fill)
    if shards == 1:
        (directory / "model.safetensors").write_bytes(safetensors_bytes(tensors))
        return directory
    keys = sorted(tensors)
    weight_map = {}
    for n in range(shards):
        name = f"model-{n + 1:05d}-of-{shards:05d}.safetensors"
        part = {k: tensors[k] for k in keys[n::shards]}
        (directory / name).write_bytes(safetensors_bytes(part))
        weight_map.update({k: name for k in part})
    (directory / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    return directory


# -- orbax params folders --------------------------------------------------------------------------


def zstd_zeros(n: int) -> bytes:
    """A zstd frame of `n` zero bytes built from RLE blocks (4 bytes per 128 KiB): a few KiB on disk
    that decompress to any size."""
    out = [struct.pack("<I", 0xFD2FB528), bytes([0xE0]), struct.pack("<Q", n)]  # single segment, 8-byte size
    while n > 0:
        size = min(1 << 17, n)
        n -= size
        out.append(struct.pack("<I", (n == 0) | (1 << 1) | (size << 3))[:3] + b"\x00")  # last?, RLE, size; byte 0
    return b"".join(out)


def rewrite_without_ocdbt(params_dir: Path) -> Path:
    """Rewrite the orbax params folder `params_dir` with the same values without OCDBT: every array
    is then a zarr folder (`a.b/`) with a JSON header (`.zarray`) beside its chunks."""
    import shutil

    import orbax.checkpoint as ocp

    with ocp.Checkpointer(ocp.StandardCheckpointHandler()) as checkpointer:
        params = checkpointer.restore(params_dir)
    shutil.rmtree(params_dir)
    with ocp.Checkpointer(ocp.StandardCheckpointHandler(use_ocdbt=False)) as checkpointer:
        checkpointer.save(params_dir, args=ocp.args.StandardSave(params))
    return params_dir


def orbax_declaring(params_dir: Path, leaf: str, shape: tuple[int, ...]) -> Path:
    """`rewrite_without_ocdbt`, then make `leaf` ("head.scale") declare `shape` (float32) as one zstd
    chunk of zeros: a folder of a few KiB that a reader trusting the header allocates in full."""
    rewrite_without_ocdbt(params_dir)
    array = params_dir / leaf
    for chunk in array.iterdir():
        chunk.unlink()
    (array / ".zarray").write_text(json.dumps({
        "chunks": list(shape), "compressor": {"id": "zstd", "level": 1}, "dimension_separator": ".",
        "dtype": "<f4", "fill_value": None, "filters": None, "order": "C", "shape": list(shape), "zarr_format": 2}))
    (array / ".".join(["0"] * len(shape))).write_bytes(zstd_zeros(4 * math.prod(shape)))
    return params_dir
