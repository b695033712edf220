"""Output views: what of a model's outputs M(x) enters its DNA, at a width fixed by the detector.

The paper adds g(x) to the 10 logits of a CIFAR-10 classifier, so every model it compares has the
same label space. jaxprov must also answer for a child with another label space (transfer to a
2-class task), so a detector chooses one of four views of the outputs M(x), with p = softmax(M(x)):

- "logits": the log-probabilities log p centred over the classes and scaled to unit norm (the paper
  adds raw logits; centring and scaling make two models' temperatures agree), zero-padded (or cut)
  to `n_classes`: unlike p, which is nearly one-hot on most inputs, they keep how the model ranks
  and spaces every wrong class, which a derived model inherits and an independent one does not.
- "probs":  p itself, zero-padded (or cut) to the detector's `n_classes`: the paper's view (on
  probabilities, not logits, so two models' scales agree); a model with another output width still
  gets a DNA, but its units line up with nobody's.
- "sorted": the `k` largest probabilities in decreasing order, zero-padded to `k`: size-free (no
  unit of one label space is matched to a unit of another), at the price of what the class says.
- "both":   "probs" then "sorted", concatenated.

The reuse benchmark measures the three (docs/results.md, "Model DNA").
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

VIEWS = ("logits", "probs", "sorted", "both")


def width(view: str, n_classes: int, k: int) -> int:
    """The width W of a view (and so of the DNA and of g's output)."""
    if view not in VIEWS:
        raise ValueError(f"unknown output view {view!r}; known: {', '.join(VIEWS)}")
    return {"logits": n_classes, "probs": n_classes, "sorted": k, "both": n_classes + k}[view]


def _fit(a: jax.Array, size: int) -> jax.Array:
    """The first `size` columns of a [n, C] array, zero-padded on the right when C < size."""
    if a.shape[1] >= size:
        return a[:, :size]
    return jnp.concatenate([a, jnp.zeros((a.shape[0], size - a.shape[1]), a.dtype)], axis=1)


def output_view(logits: jax.Array, view: str, n_classes: int, k: int) -> jax.Array:
    """[n, C] model outputs (any C) -> [n, W] float32 view (see the module docstring)."""
    z = logits.reshape(logits.shape[0], -1).astype(jnp.float32)
    if view == "logits":
        c = jax.nn.log_softmax(z, axis=-1)
        c = c - jnp.mean(c, axis=-1, keepdims=True)
        return _fit(c / jnp.maximum(jnp.linalg.norm(c, axis=-1, keepdims=True), 1e-12), n_classes)
    p = jax.nn.softmax(z, axis=-1)
    parts = []
    if view in ("probs", "both"):
        parts.append(_fit(p, n_classes))
    if view in ("sorted", "both"):
        parts.append(_fit(-jnp.sort(-p, axis=-1), k))
    if not parts:
        raise ValueError(f"unknown output view {view!r}; known: {', '.join(VIEWS)}")
    return jnp.concatenate(parts, axis=1) if len(parts) > 1 else parts[0]
