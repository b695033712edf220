"""Linear CKA (Kornblith et al., "Similarity of Neural Network Representations Revisited", ICML
2019; REEF, ICLR 2025, uses it for provenance), on the shared engine.

On n probes, features X = pre_logits [n, d] (`ModelFns.features`):

    signature = vec(H X X^T H) / ||H X X^T H||_F,  H = I - 11^T / n,     a . b = linear CKA(X_a, X_b)

stored as the diagonal plus sqrt(2) x the upper triangle (half the length, same dot product).
Feature widths may differ between models: the Gram matrix is n x n.
"""

from __future__ import annotations

import dataclasses
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

from jaxprov.methods.base import Method, safe_normalize, unbatched, upper_triangle
from jaxprov.model import ModelFns

_HIGHEST = jax.lax.Precision.HIGHEST


@dataclasses.dataclass(frozen=True)
class CKA(Method):
    """Linear CKA of one feature (default the representation the head reads) on shared probes.

    Attributes:
      n_seeds: how many seeds callers draw; `make_probes` uses the seeds it is given.
      feature: the `Model.features` entry compared.
    """

    name = "cka"

    n_seeds: int = 100
    feature: str = "pre_logits"

    def make_probes(self, seeds, key: jax.Array, reference=None, batched: Callable = unbatched):
        """The seeds as probes {"x": ...} (images, vectors or token dicts)."""
        from jaxprov.probes import Probes

        return Probes(inputs={"x": seeds.inputs}, meta={**seeds.meta, "method": self.name, "config": self.config()})

    def rows(self, fns: ModelFns, params, probes) -> jax.Array:
        """The feature of each probe, flattened: [chunk, d]."""
        feat = fns.features(params, probes["x"])[self.feature]
        return feat.reshape(feat.shape[0], -1)

    def finalize(self, rows: jax.Array) -> jax.Array:
        """Centred Gram matrix, Frobenius-normalised, as [diag, sqrt(2) upper]: [n (n + 1) / 2]."""
        centred = rows - jnp.mean(rows, axis=0, keepdims=True)
        gram = jnp.matmul(centred, centred.T, precision=_HIGHEST)
        packed = jnp.concatenate([jnp.diagonal(gram), np.float32(np.sqrt(2.0)) * upper_triangle(gram, 1)])
        return safe_normalize(packed)
