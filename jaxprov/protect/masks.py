"""Binary masks over a frozen model's weights, learned through real-valued scores (MAP's mask).

MAP (Peng, Qu et al., CVPR 2024) freezes a trained model and learns a binary mask over its
parameters. Its parameterisation is not public; ours is the standard one: every maskable leaf
(a convolution or dense `kernel`) gets a real score tree `s`, the forward pass uses the hard mask
m = [s > 0] and the backward pass the straight-through estimator dm/ds = 1 (Bengio et al., 2013),
written m = [s > 0] + s - stop_gradient(s), whose value is exactly [s > 0] (x - x is 0.0 in floating
point). The masked weight is w * m: bit for bit w where m = 1 and zero where m = 0. Biases,
BatchNorm's scale and shift and its running statistics are never masked or changed: the mask only
takes weights away.

Granularity:
  "weight"   one score per kernel entry (the most expressive mask);
  "channel"  one score per output channel / unit of each kernel (the last axis), which removes whole
             filters: fewer scores, masks that survive fine-tuning differently (measured in
             docs/results.md; docs/methods.md says which the benchmark uses and why).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxprov.errors import JaxprovError

GRANULARITIES = ("weight", "channel")


def maskable(path: tuple[str, ...], leaf) -> bool:
    """Whether a params leaf is masked: the kernel of a convolution or dense layer."""
    return path[-1] == "kernel" and np.ndim(leaf) >= 2


def _paths(tree) -> list[tuple[tuple[str, ...], Any]]:
    return [(tuple(str(getattr(k, "key", k)) for k in p), leaf)
            for p, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]]


@dataclasses.dataclass(frozen=True)
class MaskSpec:
    """Which leaves of `params["params"]` are masked, and at what granularity."""

    granularity: str = "weight"
    layers: tuple = ()  # top-level layer names whose kernels are masked; () = every kernel

    def __post_init__(self):
        if self.granularity not in GRANULARITIES:
            raise JaxprovError(f"unknown mask granularity {self.granularity!r}; use one of {', '.join(GRANULARITIES)}")

    def masks(self, path: tuple[str, ...], leaf) -> bool:
        return maskable(path, leaf) and (not self.layers or path[0] in self.layers)

    def score_shape(self, leaf) -> tuple[int, ...]:
        shape = tuple(np.shape(leaf))
        return shape if self.granularity == "weight" else (shape[-1],)

    def init_scores(self, params, value: float) -> dict:
        """Scores {path string: array} for every maskable leaf of `params["params"]`, all = value."""
        scores = {"/".join(p): jnp.full(self.score_shape(leaf), value, jnp.float32)
                  for p, leaf in _paths(params["params"]) if self.masks(p, leaf)}
        if not scores:
            raise JaxprovError("the model has no convolution or dense kernels to mask"
                               + (f" in layers {', '.join(self.layers)}" if self.layers else ""))
        return scores

    def weights_per_score(self, params) -> dict:
        """{path string: how many weights each score of that leaf switches} (1, or a kernel's fan-in)."""
        return {"/".join(p): (1 if self.granularity == "weight" else int(np.size(leaf) // np.shape(leaf)[-1]))
                for p, leaf in _paths(params["params"]) if self.masks(p, leaf)}


def hard(scores: dict) -> dict:
    """The binary masks of `scores`: {path: bool array}."""
    return {k: np.asarray(v) > 0 for k, v in scores.items()}


def straight_through(scores: dict) -> dict:
    """Masks whose value is [s > 0] and whose gradient with respect to s is 1."""
    return {k: (s > 0).astype(jnp.float32) + s - jax.lax.stop_gradient(s) for k, s in scores.items()}


def apply(params, masks: dict):
    """`params` with every masked kernel multiplied by its mask (broadcast over a channel mask's fan-in).

    Works on jax arrays (traced, for training) and on numpy masks alike; other leaves pass through."""
    def one(path, leaf):
        key = "/".join(str(getattr(k, "key", k)) for k in path)
        m = masks.get(key)
        if m is None:
            return leaf
        m = jnp.asarray(m, jnp.asarray(leaf).dtype)
        return leaf * m.reshape((1,) * (jnp.ndim(leaf) - m.ndim) + m.shape)  # a channel mask: [1, ..., out]

    return {**params, "params": jax.tree_util.tree_map_with_path(one, params["params"])}


def density(masks: dict, weights_per_score: dict) -> float:
    """Share of the maskable weights that a binary mask keeps."""
    kept = sum(float(np.sum(np.asarray(m, np.float64))) * weights_per_score[k] for k, m in masks.items())
    total = sum(np.size(m) * weights_per_score[k] for k, m in masks.items())
    return kept / total


def per_weight(masks: dict, params) -> dict:
    """Binary masks broadcast to the full kernel shapes {path: bool array of the kernel's shape}."""
    kernels = {"/".join(p): leaf for p, leaf in _paths(params["params"])}
    return {k: np.broadcast_to(np.asarray(m, bool), np.shape(kernels[k])).copy() for k, m in masks.items()}
