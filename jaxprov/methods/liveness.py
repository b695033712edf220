"""Liveness: not a fingerprint, the check that a model computes anything at all.

A dead model (all-zero or non-finite weights, every unit saturated) answers every input alike, so
no method has evidence about it: label agreement counts its one constant label as agreement (two
dead models "agree" everywhere), SAC reads its zero outputs as a correlation matrix of zeros. The
comparison layer therefore flags a model dead when its outputs on a few seeds do not vary:

    d_i = ||f(x_i) - mean_j f(x_j)||,   signature = d / ||d||,   dead when ||d|| <= RTOL ||f(X)||

(or when any output is NaN / Inf), and gives it similarity 0 to every model under every method.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from jaxprov.methods.base import Method
from jaxprov.model import ModelFns

# Outputs whose spread over the seeds is below this fraction of their size are constant up to
# float rounding (the mean of identical values can differ from them by an ulp).
RTOL = 1e-5


@dataclasses.dataclass(frozen=True)
class Liveness(Method):
    """The model's outputs on `n_seeds` seeds, centred over the seeds; all zeros when constant.

    Attributes:
      n_seeds: how many seeds the check draws.
    """

    name = "liveness"

    n_seeds: int = 16

    def rows(self, fns: ModelFns, params, probes) -> jax.Array:
        out = fns.apply(params, probes["x"])
        return out.reshape(out.shape[0], -1).astype(jnp.float32)

    def finalize(self, rows: jax.Array) -> jax.Array:
        """Each seed's distance from the mean output, [n_seeds] whatever the output size, normalised;
        all zeros when the outputs do not vary or are not all finite (dead)."""
        centred = rows - jnp.mean(rows, axis=0, keepdims=True)
        spread = jnp.linalg.norm(centred, axis=1)
        alive = jnp.all(jnp.isfinite(rows)) & (jnp.linalg.norm(spread) > RTOL * jnp.linalg.norm(rows))
        return jnp.where(alive, spread / jnp.where(alive, jnp.linalg.norm(spread), 1.0), jnp.zeros_like(spread))
