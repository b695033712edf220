"""IPGuard (Cao et al., "IPGuard: Protecting Intellectual Property of Deep Neural Networks via
Fingerprinting the Classification Boundary", AsiaCCS 2021), on the shared engine.

Probes are points just past the REFERENCE model's decision boundary; a model's signature is its
one-hot predicted labels there (`jaxprov.methods.labels`):

    signature = vec(onehot(argmax f(x'_i))) / sqrt(n),     a . b = fraction of labels that agree
"""

from __future__ import annotations

import dataclasses
from typing import Callable

import jax
import jax.numpy as jnp

from jaxprov.attacks import valid_box
from jaxprov.methods.base import Apply, continuous_inputs, reference_meta, require_reference, unbatched
from jaxprov.methods.labels import LabelAgreement
from jaxprov.model import ModelFns

# Below this squared norm a gradient has no direction: the point stays where it is, never NaN.
_TINY_NORM = 1e-12


def _pair_gap(apply: Apply, params, x: jax.Array, pair: jax.Array) -> jax.Array:
    """f_i(x) - f_j(x) for each input and its label pair (i, j) = pair[k]: [n]."""
    out = apply(params, x).reshape(x.shape[0], -1)
    chosen = jnp.take_along_axis(out, pair, axis=1)
    return chosen[:, 0] - chosen[:, 1]


def _boundary_points(method: "IPGuard", fns: ModelFns, params, x: jax.Array, shared) -> jax.Array:
    """The boundary search from a chunk of seeds; each point depends on its own seed alone."""
    lo, hi = shared
    apply = fns.apply
    pair = jax.lax.top_k(apply(params, x).reshape(x.shape[0], -1), 2)[1]  # (top-1, top-2) at the seed
    gap_grad = jax.grad(lambda z: jnp.sum(_pair_gap(apply, params, z, pair)))
    flat = (x.shape[0], -1)

    def step(_, z):
        # Linearised (DeepFool-style) step to the level set f_i - f_j = -margin: the runner-up j wins.
        excess = _pair_gap(apply, params, z, pair) + method.margin
        g = gap_grad(z)
        sq = jnp.sum(jnp.square(g.reshape(flat)), axis=1)
        # A flat gap (dead units) gives no direction: that point stays where it is.
        scale = jnp.where(sq > _TINY_NORM, method.step * excess / jnp.maximum(sq, _TINY_NORM), 0.0)
        return jnp.clip(z - scale.reshape((-1,) + (1,) * (z.ndim - 1)) * g, lo, hi)

    return jax.lax.fori_loop(0, method.iters, step, x)


@dataclasses.dataclass(frozen=True)
class IPGuard(LabelAgreement):
    """IPGuard's boundary fingerprint. The boundary search is ours; like IPGuard's loss
    (ReLU(g_i - g_j + k) + ReLU(max_{t != i,j} g_t - g_i)) it puts each point just past the boundary
    between two labels, on the runner-up's side by a margin.

    From each seed, with (i, j) the reference's top-1 and top-2 labels there and d(x) = f_i(x) - f_j(x),
    `iters` linearised (DeepFool-style) steps x <- clip(x - step (d(x) + margin) grad d / ||grad d||^2,
    box) land a piecewise-linear net on d = -margin in a few steps; the box is the input spec's valid
    range (`InputSpec.bounds`). The reference then labels the point j. Models that inherit the
    reference's boundary (fine-tuned, pruned) mostly agree; independent ones mostly still say i: on the
    MNIST zoo, margin 1.0 gives fine-tuned / pruned 0.51 / 0.47 agreement, independents <= 0.13.
    A point left on the seed's side (d > -margin, e.g. where a third label took over, or clipping
    stopped it) is kept: it still carries the reference's label there.

    Attributes:
      n_seeds: how many seeds callers draw; `make_probes` uses the seeds it is given.
      iters: boundary-search steps.
      step: fraction of the linearised step taken (1 = jump to the linear model's level set).
      margin: how far past the boundary, in output (logit) units. Larger margins make the labels
        survive more modification of the reference (children agree more) but let independent
        models agree more too.
    """

    name = "ipguard"

    n_seeds: int = 100
    iters: int = 20
    step: float = 1.0
    margin: float = 1.0

    def make_probes(self, seeds, key: jax.Array, reference=None, batched: Callable = unbatched):
        """Points just past `reference`'s decision boundary, one per seed.

        Args:
          seeds: Probes whose inputs are an image / vector array [n, ...] in the reference's input space.
          key: unused: the search has no random start, the points are a function of seeds and reference.
          reference: the `jaxprov.Model` whose boundary is fingerprinted (required, shared by the zoo).
          batched: runs the search on the reference (`Method.make_probes`); memory is one forward +
            backward pass over a chunk of seeds.

        Returns:
          Probes {"x": points}; meta records the config and the reference (name, arch, params digest).
        """
        from jaxprov.probes import Probes

        require_reference(reference, self.name, "to find decision-boundary points on")
        x = continuous_inputs(seeds, self.name)
        lo, hi = valid_box(reference.input_spec, x.ndim)
        points = batched(_boundary_points, self, reference, x, (lo, hi))
        meta = {**seeds.meta, "method": self.name, "config": self.config(),
                "reference": reference_meta(reference)}
        return Probes(inputs={"x": points}, meta=meta)
