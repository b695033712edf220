"""Weight cosine (the weight-space view MoTHer builds on): a function of the params alone.

    signature = every float param, flattened in tree order (batch_stats excluded), L2-normalised

so a . b is the cosine of two models' weights. Only models of one arch compare (comparable =
"arch"). The probes hold no items, and `rows` reads the params alone: the engine calls it once.
"""

from __future__ import annotations

import dataclasses
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

from jaxprov.methods.base import Method, unbatched
from jaxprov.model import ModelFns


def trainable_weights(params) -> jax.Array:
    """Every float leaf except batch_stats (running statistics are not weights), in tree order, as
    one float32 vector."""
    trainable = {k: v for k, v in params.items() if k != "batch_stats"}
    leaves = [leaf.reshape(-1).astype(jnp.float32) for leaf in jax.tree_util.tree_leaves(trainable)
              if jnp.issubdtype(leaf.dtype, jnp.floating)]
    return jnp.concatenate(leaves)


@dataclasses.dataclass(frozen=True)
class WeightCosine(Method):
    """Cosine of two models' flattened weights; a function of the params alone (no probes)."""

    name = "weights"
    comparable = "arch"

    def make_probes(self, seeds, key: jax.Array, reference=None, batched: Callable = unbatched):
        """No probes: an empty set, so the signature's probe digest is the same for every zoo."""
        from jaxprov.probes import Probes

        return Probes(inputs={"x": np.zeros((0,), np.float32)}, meta={"method": self.name})

    def rows(self, fns: ModelFns, params, probes) -> jax.Array:
        """The trainable weights [P]; the probes (none) are ignored. `finalize` normalises them."""
        return trainable_weights(params)
