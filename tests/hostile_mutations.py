"""A seeded generator of hostile checkpoints: mutated .pt zips and pickles, safetensors headers,
config.json files and shard indexes, DNA detector folders (dna.json, orbax's files and array
headers) and training checkpoints (jaxprov.checkpoint: meta.json, .npy headers, members) (bit
flips, truncation, swapped fields, huge and negative numbers, wrong JSON types, deep nesting,
code-executing globals, path escapes).

Every base file's tensors are all zeros, so a case that loads must give only zeros: a non-zero
weight can only come from outside the file. `cases(kind, n, seed, directory, sentinel)` writes the
cases under `directory` and yields (description, path). Used by tests/test_hostile_fuzz.py (fixed
seed and count) and benchmarks/fuzz_readers.py (as many as asked).
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np

from tests.hostile_files import (bert_folder, bert_state_dict, op_call, op_global, safetensors_bytes, set_flag_bits,
                                 state_dict_pickle, tensor_record, write_pt)

HOSTILE_INTS = [0, 1, -1, 2, 3, 5, 6, 7, 24, 255, 256, 2**31 - 1, 2**31, 2**32, 2**40, 2**62, 2**63 - 1, 2**63,
                2**64, -2**31, -2**63, 10**30, -10**30]
STORAGE_CLASSES = ["FloatStorage", "LongStorage", "BoolStorage", "HalfStorage", "BFloat16Storage", "ByteStorage",
                   "UntypedStorage", "Tensor", "Evil"]
DANGEROUS = [("os", "system"), ("posix", "system"), ("builtins", "exec"), ("builtins", "eval"),
             ("subprocess", "call"), ("builtins", "__import__"), ("torch", "load"), ("pickle", "loads")]


def _value(rng: np.random.Generator, depth: int = 0):
    """A hostile Python/JSON-able value: ints at the edges, wrong types, nesting."""
    kind = rng.integers(9 if depth < 3 else 5)
    if kind <= 2:
        return HOSTILE_INTS[rng.integers(len(HOSTILE_INTS))]
    if kind == 3:
        return [None, True, False, "", "x", "FloatStorage", "../x", 0.5, -1.5, 1e308][rng.integers(10)]
    if kind == 4:
        return float(rng.choice([0.0, -0.0, 3.0, 1e300, -2.5]))
    if kind <= 6:
        return [_value(rng, depth + 1) for _ in range(rng.integers(5))]
    return {str(_value(rng, depth + 1))[:20]: _value(rng, depth + 1) for _ in range(rng.integers(3))}


def _tuple(rng, depth=0):
    v = _value(rng, depth)
    return tuple(v) if isinstance(v, list) else v


def _flip(data: bytes, rng, count: int | None = None, start: int = 0, stop: int | None = None) -> bytes:
    out = bytearray(data)
    stop = len(out) if stop is None else stop
    for _ in range(count or int(rng.integers(1, 4))):
        if stop > start:
            out[rng.integers(start, stop)] ^= 1 << int(rng.integers(8))
    return bytes(out)


def _cut(data: bytes, rng) -> bytes:
    how = rng.integers(3)
    a = int(rng.integers(len(data) + 1))
    if how == 0:
        return data[:a]
    b = int(rng.integers(a, min(len(data), a + 64) + 1))
    return data[:a] + data[b:] if how == 1 else data[:a] + bytes(rng.integers(0, 256, b - a, dtype=np.uint8)) + data[a:]



def _damage(path, rng) -> None:
    """Bit flips or a cut/insert, one of the two at random, in the file at `path`."""
    raw = path.read_bytes()
    path.write_bytes(_flip(raw, rng) if rng.integers(2) else _cut(raw, rng))

# -- .pt ---------------------------------------------------------------------------------------

_BASE_RECORDS = {  # name -> tensor_record kwargs over storages "0" (6 floats) and "1" (4 floats)
    "w": dict(storage_key="0", numel=6, offset=0, size=(2, 3), stride=(3, 1)),
    "t": dict(storage_key="0", numel=6, offset=0, size=(3, 2), stride=(1, 3)),
    "b": dict(storage_key="1", numel=4, offset=1, size=(3,), stride=(1,), parameter=True),
    "s": dict(storage_key="1", numel=4, offset=3, size=(), stride=()),
    "e": dict(storage_key="1", numel=4, offset=0, size=(4, 2), stride=(1, 0)),
}
_STORAGES = {"0": bytes(24), "1": bytes(16)}


def _pt_case(rng, path: Path, sentinel: Path) -> str:
    records = {k: dict(v) for k, v in _BASE_RECORDS.items()}
    storages = dict(_STORAGES)
    kind = int(rng.integers(9))
    name = list(records)[rng.integers(len(records))]
    desc = ""
    if kind == 0:  # a field of one record
        field = ["offset", "size", "stride", "numel", "storage_key"][rng.integers(5)]
        records[name][field] = _tuple(rng) if field in ("size", "stride") else _value(rng)
        if field == "storage_key" and not isinstance(records[name][field], str):
            records[name]["pid"] = ("storage", op_global("torch", "FloatStorage"), records[name][field], "cpu", 6)
        desc = f"{name}.{field}={records[name][field]!r:.60}"
    elif kind == 1:  # swapped fields
        a, b = rng.choice(["offset", "size", "stride", "numel"], 2, replace=False)
        records[name][a], records[name][b] = records[name][b], records[name][a]
        desc = f"{name}: {a}<->{b}"
    elif kind == 2:
        records[name]["storage_class"] = STORAGE_CLASSES[rng.integers(len(STORAGE_CLASSES))]
        desc = f"{name}.storage_class={records[name]['storage_class']}"
    elif kind == 3:  # storage sizes
        key = list(storages)[rng.integers(2)]
        storages[key] = bytes(max(0, len(storages[key]) + int(rng.integers(-8, 9))))
        desc = f"storage {key} is {len(storages[key])} bytes"
    pickled = {k: tensor_record(**r) for k, r in records.items()}
    if kind == 4:  # a code-executing global as one of the values
        module, fn = DANGEROUS[rng.integers(len(DANGEROUS))]
        pickled["payload"] = op_call(module, fn, f"touch {sentinel}")
        desc = f"payload {module}.{fn}"
    pkl = state_dict_pickle(pickled, wrap="state_dict" if rng.integers(4) == 0 else None)
    if kind == 5:
        pkl, desc = _flip(pkl, rng), "pickle bit flips"
    elif kind == 6:
        pkl, desc = _cut(pkl, rng), "pickle cut/insert"
    elif kind == 7:  # a dangerous global spliced anywhere
        module, fn = DANGEROUS[rng.integers(len(DANGEROUS))]
        at = int(rng.integers(2, len(pkl)))
        pkl = pkl[:at] + op_call(module, fn, f"touch {sentinel}") + pkl[at:]
        desc = f"{module}.{fn} spliced at {at}"
    deflate = [k for k in storages if rng.integers(3) == 0]
    write_pt(path, pkl, storages, deflate=deflate)
    if kind == 8:  # the archive itself
        how = int(rng.integers(4))
        if how == 0:
            path.write_bytes(_flip(path.read_bytes(), rng))
            desc = "zip bit flips"
        elif how == 1:
            path.write_bytes(_cut(path.read_bytes(), rng))
            desc = "zip cut/insert"
        elif how == 2:
            set_flag_bits(path, "archive/data/" + list(storages)[rng.integers(2)], int(rng.integers(1, 256)))
            desc = "entry flag bits"
        else:
            import zipfile

            with zipfile.ZipFile(path) as z:
                infos = z.infolist()
            info = infos[rng.integers(len(infos))]
            data = path.read_bytes()
            start = info.header_offset + 30 + len(info.filename) + len(info.extra)
            path.write_bytes(_flip(data, rng, start=start, stop=start + max(1, info.compress_size)))
            desc = f"bytes of entry {info.filename}"
    return f"pt/{kind}: {desc}" + (f" (deflated {deflate})" if deflate else "")


# -- safetensors --------------------------------------------------------------------------------

def _st_base():
    header = {"w": {"dtype": "F32", "shape": [2, 3], "data_offsets": [0, 24]},
              "h": {"dtype": "F16", "shape": [4], "data_offsets": [24, 32]},
              "i": {"dtype": "I64", "shape": [], "data_offsets": [32, 40]},
              "z": {"dtype": "BF16", "shape": [0, 5], "data_offsets": [40, 40]},
              "__metadata__": {"format": "pt"}}
    return header, bytes(40)


def _st_case(rng, path: Path) -> str:
    header, data = _st_base()
    kind = int(rng.integers(7))
    name = ["w", "h", "i", "z"][rng.integers(4)]
    if kind == 0:
        field = ["dtype", "shape", "data_offsets"][rng.integers(3)]
        header[name][field] = _value(rng)
        desc = f"{name}.{field}={header[name][field]!r:.60}"
    elif kind == 1:  # plausible numbers: shifted offsets, other shapes, other known dtypes
        entry = header[name]
        entry["data_offsets"] = [o + int(rng.integers(-9, 10)) * int(rng.integers(2)) for o in entry["data_offsets"]]
        if rng.integers(2):
            entry["shape"] = [int(rng.integers(-1, 7)) for _ in range(rng.integers(4))]
        if rng.integers(2):
            entry["dtype"] = ["F32", "I32", "F16", "U8", "BOOL", "F64", "F8_E4M3"][rng.integers(7)]
        desc = f"{name}={entry}"
    elif kind == 2:
        header = _value(rng) if rng.integers(2) else {"__metadata__": _value(rng), **{k: v for k, v in header.items()
                                                                                     if k != "__metadata__"}}
        desc = f"header={str(header):.60}"
    text = json.dumps(header).encode()
    if kind == 3:  # duplicate key, deep nesting
        text = text.replace(b'"h"', b'"w"') if rng.integers(2) else (
            b'{"w": ' + b"[" * int(rng.integers(100, 200000)) + b"}")
        desc = "duplicate key or deep nesting"
    blob = len(text).to_bytes(8, "little") + text + data
    if kind == 4:
        blob, desc = _flip(blob, rng, stop=8 + len(text)), "header bit flips"
    elif kind == 5:
        blob, desc = _cut(blob, rng), "file cut/insert"
    elif kind == 6:
        length = HOSTILE_INTS[rng.integers(len(HOSTILE_INTS))] if rng.integers(2) else int(rng.integers(0, 2**63))
        blob = (length % 2**64).to_bytes(8, "little") + blob[8:]
        desc = "header length field"
    path.write_bytes(blob)
    return f"st/{kind}: {desc}"


# -- Hugging Face folders -----------------------------------------------------------------------

_CONFIG_KEYS = ["vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size",
                "max_position_embeddings", "type_vocab_size", "layer_norm_eps", "hidden_act", "architectures",
                "model_type", "id2label", "num_labels", "_name_or_path", "is_decoder", "position_embedding_type"]


def _folder_case(rng, folder: Path, outside: Path) -> str:
    bert_folder(folder, shards=2)
    kind = int(rng.integers(6))
    config_path, index_path = folder / "config.json", folder / "model.safetensors.index.json"
    if kind == 0:
        config = json.loads(config_path.read_text())
        key = _CONFIG_KEYS[rng.integers(len(_CONFIG_KEYS))]
        config[key] = _value(rng)
        if key == "id2label" and rng.integers(2):
            config["architectures"] = ["BertForSequenceClassification"]
        config_path.write_text(json.dumps(config))
        return f"config.{key}={config[key]!r:.60}"
    if kind == 1:
        _damage(config_path, rng)
        return "config.json bytes"
    index = json.loads(index_path.read_text())
    if kind == 2:
        key = list(index["weight_map"])[rng.integers(len(index["weight_map"]))]
        index["weight_map"][key] = [str(outside), "../outside.safetensors", "/dev/zero", "config.json", "",
                                    "model.safetensors.index.json", "sub/../../outside.safetensors",
                                    "model-00001-of-00002.safetensors", _value(rng)][rng.integers(9)]
        index_path.write_text(json.dumps(index))
        return f"weight_map[{key}]={index['weight_map'][key]!r:.60}"
    if kind == 3:
        index = _value(rng) if rng.integers(2) else {"weight_map": _value(rng)}
        index_path.write_text(json.dumps(index))
        return f"index={str(index):.60}"
    if kind == 4:
        _damage(index_path, rng)
        return "index bytes"
    shard = folder / f"model-0000{rng.integers(1, 3)}-of-00002.safetensors"
    shard.unlink()
    how = int(rng.integers(4))
    if how == 0:
        shard.symlink_to(outside)
    elif how == 1:
        shard.symlink_to("/dev/zero")
    elif how == 2:
        os.mkfifo(shard)
    else:
        shard.symlink_to("config.json")
    return f"{shard.name} -> {['outside', '/dev/zero', 'FIFO', 'config.json'][how]}"


# -- DNA detector folders and training checkpoints (jaxprov.dna.detector, jaxprov.checkpoint) --------

DETECTOR_ARCH = dict(view="logits", n_classes=10, k=10, encoder="conv", encoder_hidden=4, embedding_hidden=4, embed=4)
CHECKPOINT_STAMP = "fuzz-run"


def checkpoint_template():
    """The all-zero state the checkpoint cases are made from and read against (a MAP-like tuple of
    scores and an optimiser state with an int32 count)."""
    return ({"conv/kernel": np.zeros((3, 3, 1, 4), np.float32), "dense/kernel": np.zeros((8, 10), np.float32)},
            (np.zeros((), np.int32), {"mu": np.zeros((8, 10), np.float32)}))


def detector_bases(directory: Path) -> dict[str, Path]:
    """A valid all-zero detector folder as jaxprov writes it (OCDBT) and the same rewritten as plain
    zarr arrays (one JSON header per array), under `directory`."""
    import jax

    from jaxprov import dna, models
    from tests.hostile_files import rewrite_without_ocdbt

    spec = models.create("mlp")[2]
    arch = dna.Architecture(**DETECTOR_ARCH)
    zeros = jax.tree_util.tree_map(np.zeros_like, arch.init(jax.random.PRNGKey(0), spec))
    bases = {"ocdbt": directory / "detector-ocdbt", "zarr": directory / "detector-zarr"}
    for base in bases.values():
        if base.exists():
            shutil.rmtree(base)
        dna.Detector(arch, zeros, spec, {"name": "fuzz"}).save(base)
    rewrite_without_ocdbt(bases["zarr"] / "params")
    return bases


def _detector_case(rng, folder: Path, bases: dict[str, Path], outside: Path) -> str:
    """Kinds 0-1 mutate dna.json, 2-5 the params folder's files (read by orbax and tensorstore:
    damaged chunks and OCDBT files, removed or linked files, hostile array headers)."""
    flavour = ["ocdbt", "zarr"][rng.integers(2)]
    shutil.copytree(bases[flavour], folder, symlinks=True)
    files = sorted(p for p in (folder / "params").rglob("*") if p.is_file())
    kind = int(rng.integers(6))
    if kind == 0:  # a field of dna.json, its architecture or its input spec
        meta = json.loads((folder / "dna.json").read_text())
        where = [meta, meta["architecture"], meta["input_spec"]][rng.integers(3)]
        key = list(where)[rng.integers(len(where))]
        where[key] = _value(rng)
        (folder / "dna.json").write_text(json.dumps(meta))
        return f"{flavour}: dna.json {key}={where[key]!r:.60}"
    if kind == 1:
        _damage(folder / "dna.json", rng)
        return f"{flavour}: dna.json bytes"
    target = files[rng.integers(len(files))]
    name = target.relative_to(folder)
    if kind == 2:
        _damage(target, rng)
        return f"{flavour}: bytes of {name}"
    if kind == 3:
        how = int(rng.integers(3))
        target.unlink()
        if how == 1:
            target.symlink_to(outside)
        elif how == 2:
            target.mkdir()
        return f"{flavour}: {name} {['removed', 'a link outside', 'a folder'][how]}"
    headers = [p for p in files if p.name in (".zarray", "_METADATA", "_CHECKPOINT_METADATA")]
    target = headers[rng.integers(len(headers))]
    header = json.loads(target.read_text())
    if kind == 4 or not isinstance(header, dict):  # any field, any hostile value
        key = list(header)[rng.integers(len(header))] if header else "x"
        header[key] = _value(rng)
        desc = f"{key}={header[key]!r:.60}"
    else:  # plausible numbers: another shape, chunks or dtype
        field = ["shape", "chunks", "dtype"][rng.integers(3)]
        header[field] = ["<f8", "<i8", "|b1", "<f2", "|O", "<U4", "|V8"][rng.integers(7)] if field == "dtype" else \
            [int(rng.choice([0, 1, 2, 3, 8, 2**20, 2**31, 2**40])) for _ in range(rng.integers(4))]
        desc = f"{field}={header[field]!r:.60}"
    target.write_text(json.dumps(header))
    return f"{flavour}: {target.relative_to(folder)} {desc}"


def _checkpoint_case(rng, path: Path) -> str:
    from jaxprov.checkpoint import save_tree

    save_tree(path, checkpoint_template(), CHECKPOINT_STAMP, {"step": 4, "history": [{"step": 4, "loss": 0.5}]})
    kind = int(rng.integers(5))
    if kind == 0:
        _damage(path, rng)
        return "ckpt: file bytes"
    import zipfile

    with zipfile.ZipFile(path) as z:
        members = {n: z.read(n) for n in z.namelist()}
    name = list(members)[rng.integers(len(members))]
    compress = zipfile.ZIP_DEFLATED if rng.integers(3) == 0 else zipfile.ZIP_STORED
    if kind == 1:  # a field of meta.json
        record = json.loads(members["meta.json"])
        where = record if rng.integers(2) else record["meta"]
        key = list(where)[rng.integers(len(where))]
        where[key] = _value(rng)
        members["meta.json"], desc = json.dumps(record).encode(), f"meta.json {key}={where[key]!r:.60}"
    elif kind == 2 and name != "meta.json":  # a leaf's .npy header: shape, dtype or order
        field = ["descr", "shape", "fortran_order"][rng.integers(3)]
        value = _value(rng) if rng.integers(2) else {"descr": ["<f8", "|O", "<U4", "|b1", "<i4"][rng.integers(5)],
                                                      "shape": _tuple(rng), "fortran_order": True}[field]
        header = {"descr": "<f4", "fortran_order": False, "shape": (8, 10), field: value}
        text = repr(header).encode()
        body = text + b" " * (-(len(text) + 11) % 64) + b"\n"
        data = members[name][10 + int.from_bytes(members[name][8:10], "little"):]
        members[name] = b"\x93NUMPY\x01\x00" + len(body).to_bytes(2, "little") + body + data
        desc = f"{name} header {field}={value!r:.60}"
    elif kind == 3:  # a member removed, added, or emptied
        how = int(rng.integers(3))
        if how == 0:
            del members[name]
        elif how == 1:
            members[f"leaf{len(members)}.npy"] = members[name]
        else:
            members[name] = b""
        desc = f"{name} {['removed', 'copied as an extra leaf', 'emptied'][how]}"
    else:  # flips in meta.json or a .npy header (not in the data: that would be a valid checkpoint of other values)
        raw = members[name]
        stop = len(raw) if name == "meta.json" else 10 + int.from_bytes(raw[8:10], "little")
        members[name], desc = _flip(raw, rng, stop=stop), f"bit flips in {name}'s header (CRC recomputed)"
    with zipfile.ZipFile(path, "w", compress) as z:
        for n, raw in members.items():
            z.writestr(n, raw)
    return f"ckpt/{kind}: {desc}" + (" (deflated)" if compress == zipfile.ZIP_DEFLATED else "")


KINDS = ("pt", "safetensors", "folder", "detector", "checkpoint")


def cases(kind: str, n: int, seed: int, directory: Path, sentinel: Path):
    """Write `n` hostile cases of `kind` (one of KINDS) and yield (description, path)."""
    rng = np.random.default_rng([seed, KINDS.index(kind)])
    directory.mkdir(parents=True, exist_ok=True)
    outside = directory / "outside.safetensors"  # non-zero weights: reading it would show
    outside.write_bytes(safetensors_bytes(bert_state_dict(fill=1.0)))
    bases = detector_bases(directory / "bases") if n and kind == "detector" else None
    for i in range(n):
        if kind == "pt":
            path = directory / f"case{i}.pt"
            yield _pt_case(rng, path, sentinel), path
        elif kind == "safetensors":
            path = directory / f"case{i}.safetensors"
            yield _st_case(rng, path), path
        elif kind == "folder":
            path = directory / "cases" / f"case{i}"
            yield _folder_case(rng, path, outside), path
        elif kind == "detector":
            path = directory / "detectors" / f"detector-case{i}"
            yield _detector_case(rng, path, bases, outside), path
        else:
            path = directory / f"case{i}.ckpt"
            yield _checkpoint_case(rng, path), path


def valid_folder(directory: Path) -> Path:
    """A valid all-zero BERT folder (the worker's warm-up case)."""
    if directory.exists():
        shutil.rmtree(directory)
    return bert_folder(directory, shards=2)

