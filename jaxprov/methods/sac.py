"""SAC (Guan et al., "Are You Stealing My Model? Sample Correlation for Fingerprinting Deep Neural
Networks", NeurIPS 2022), on the shared engine.

On n probes (seeds, or CutMix-augmented seeds) a model's outputs give the matrix of pairwise cosine
similarities C(f)_ij = cos(f(x_i), f(x_j)):

    signature = upper triangle of C(f) (i < j),      sim(a, b) = 1 - mean_{i<j} |C(a)_ij - C(b)_ij|

(SAC's distance is the mean |difference| of the two matrices; the diagonal is 1 for both, so it is
left out.) The signature is NOT a unit vector and similarity is not a dot product: the method
declares the similarity kind "mean_abs_difference" (`jaxprov.methods.similarity`). The matrix is
n x n whatever the output size, so models with different label spaces compare.
"""

from __future__ import annotations

import dataclasses
from typing import Callable

import jax
import jax.numpy as jnp

from jaxprov.errors import JaxprovError
from jaxprov.methods.base import Method, continuous_inputs, unbatched, unit_rows, upper_triangle
from jaxprov.model import ModelFns

_HIGHEST = jax.lax.Precision.HIGHEST


def cutmix(x: jax.Array, key: jax.Array) -> jax.Array:
    """CutMix (Yun et al., ICCV 2019) of each NHWC image with another seed of the batch.

    Image i keeps a fraction lam ~ U(0, 1) = Beta(1, 1) of its area (CutMix's default) and gets a
    box of side sqrt(1 - lam) x (H, W), centred uniformly and clipped to the image, from image
    (i + s_i) mod n, s_i uniform in [1, n-1] (never itself). Deterministic from `key`.
    """
    n, h, w, _ = x.shape
    if n < 2:
        raise JaxprovError("CutMix needs at least 2 seeds to mix")
    k_shift, k_lam, k_y, k_x = jax.random.split(key, 4)
    partner = (jnp.arange(n) + jax.random.randint(k_shift, (n,), 1, n)) % n
    side = jnp.sqrt(1.0 - jax.random.uniform(k_lam, (n,)))
    cut_h, cut_w = (side * h).astype(jnp.int32), (side * w).astype(jnp.int32)
    cy, cx = jax.random.randint(k_y, (n,), 0, h), jax.random.randint(k_x, (n,), 0, w)
    y0, y1 = jnp.clip(cy - cut_h // 2, 0, h), jnp.clip(cy + cut_h // 2, 0, h)
    x0, x1 = jnp.clip(cx - cut_w // 2, 0, w), jnp.clip(cx + cut_w // 2, 0, w)
    rows, cols = jnp.arange(h).reshape(1, h, 1), jnp.arange(w).reshape(1, 1, w)
    inside = ((rows >= y0.reshape(n, 1, 1)) & (rows < y1.reshape(n, 1, 1))
              & (cols >= x0.reshape(n, 1, 1)) & (cols < x1.reshape(n, 1, 1)))
    return jnp.where(inside.reshape(n, h, w, 1), x[partner], x)


@dataclasses.dataclass(frozen=True)
class SAC(Method):
    """SAC's sample-correlation matrix on the model's outputs (logits as `apply` returns them).

    Attributes:
      n_seeds: how many seeds callers draw (SAC: ~100); `make_probes` uses the seeds it is given.
      cutmix: probes are CutMix-augmented seeds (SAC-m) instead of the seeds themselves. SAC-w's
        other choice, samples the source model misclassifies, is the `mistakes` method's probes.
    """

    name = "sac"
    similarity = "mean_abs_difference"

    n_seeds: int = 100
    cutmix: bool = False

    def make_probes(self, seeds, key: jax.Array, reference=None, batched: Callable = unbatched):
        """The seeds as probes {"x": ...}, CutMix-augmented from `key` when `cutmix` is set."""
        from jaxprov.probes import Probes, key_repr

        x = seeds.inputs
        meta = {**seeds.meta, "method": self.name, "config": self.config()}
        if self.cutmix:
            x = continuous_inputs(seeds, self.name)
            if x.ndim != 4:
                raise JaxprovError("SAC's CutMix probes need NHWC images")
            x = cutmix(jnp.asarray(x), key)
            meta["cutmix_key"] = key_repr(key)
        return Probes(inputs={"x": x}, meta=meta)

    def rows(self, fns: ModelFns, params, probes) -> jax.Array:
        """Each probe's output, L2-normalised: [chunk, C]."""
        out = fns.apply(params, probes["x"])
        return unit_rows(out.reshape(out.shape[0], -1).astype(jnp.float32))

    def finalize(self, rows: jax.Array) -> jax.Array:
        """Upper triangle (i < j) of the cosine-similarity matrix: [n (n - 1) / 2]."""
        return upper_triangle(jnp.matmul(rows, rows.T, precision=_HIGHEST), 1)
