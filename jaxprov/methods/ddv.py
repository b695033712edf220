"""ModelDiff decision distance vectors (Li et al., "ModelDiff: Testing-Based DNN Similarity
Comparison for Model Reuse Detection", ISSTA 2021).

Each seed x_i gets a twin x'_i, crafted once by L-inf PGD on a shared reference model. A model f's
signature is its decision distance vector, L2-normalised:

    DDV(f)_i = 1 - cos(f(x_i), f(x'_i)),        signature = DDV(f) / ||DDV(f)||

and the similarity of two models is cosine(DDV_a, DDV_b), a dot product of signatures. Every element
is a scalar computed inside one model, so models with different output sizes (a parent and its
transfer to a new label space) compare directly.

Twin generation (ModelDiff's `gen_adv_inputs` with advertorch's `LinfPGDAttack(targeted=True)`, whose
"targeted" negates their loss, so PGD ascends the squared distance). With clean outputs y = f(x) of
the whole seed batch and targets t = target_scale * (mean_batch(y) - y):

    maximise  mean_i (f(x'_i)[0] - t_i[0])^2 + diversity_weight * mean_i mean_{j>=1} (f(x'_i)[j] - t_i[j])^2

Our reading of the indexing: `[0]` and `[j>=1]` index OUTPUT UNITS (their code: `yhat[:, 0]` and
`yhat[:, 1:]` on a [batch, classes] tensor), not samples: the first logit carries weight 1, the other
logits share `diversity_weight`, averaged over units then over the batch. Because t is ~1000x the
logits, ascending this distance pushes each output away from the batch mean along its own deviation
(the "diversity" of the profiling inputs) and away from its clean output ("divergence"). Signed
gradient steps of size `step`, optional uniform random start in the eps ball, projection onto the
eps ball around the seed and clipping to the seed batch's [min, max] (one scalar range, as their
`clip_min` / `clip_max`). Every twin's gradient depends only on its own term, so batching over seeds
changes nothing but the targets' batch mean.

Text models are refused: PGD needs a continuous input, and token ids are not one. An embedding-space
variant (PGD on the reference's word embeddings, as gradient_field integrates along BERT's) is not
built: a twin in one model's embedding space means nothing to a model with its own embedding table.
"""

from __future__ import annotations

import dataclasses
from typing import Callable

import jax
import jax.numpy as jnp

from jaxprov.attacks import linf_pgd
from jaxprov.methods.base import (Apply, Method, continuous_inputs, reference_meta, require_reference, unbatched,
                                  unit_rows)
from jaxprov.model import ModelFns


@dataclasses.dataclass(frozen=True)
class DDV(Method):
    """ModelDiff's decision distance vector; config fields carry the published defaults.

    Attributes:
      n_seeds: how many seeds callers draw (ModelDiff uses ~100 real inputs from the model's data;
        random-noise seeds work badly). `make_probes` uses whatever seeds it is given; the signature
        length D equals the number of seeds.
      eps: L-inf radius of the twin around its seed, in normalised input units. The published 0.06
        is ImageNet-normalised, about 3.4/255 of a raw pixel; on MNIST normalisation (std 0.3081) it
        is 0.018 of a pixel and flips ~1% of a LeNet's labels. Scale it to the data's usual L-inf
        budget (MNIST: 0.3 raw = 0.97 normalised) and keep step = eps / 6, the published ratio.
      iters: PGD iterations.
      step: size of each signed-gradient step.
      random_start: start PGD from a uniform point in the eps ball (advertorch's `rand_init`).
      diversity_weight: weight of the output units j >= 1 in the PGD objective.
      target_scale: t = target_scale * (batch-mean clean outputs - clean outputs).
    """

    name = "ddv"

    n_seeds: int = 100
    eps: float = 0.06
    iters: int = 50
    step: float = 0.01
    random_start: bool = True
    diversity_weight: float = 0.1
    target_scale: float = 1000.0

    def make_probes(self, seeds, key: jax.Array, reference=None, batched: Callable = unbatched):
        """Pairs (seed, twin), the twins crafted by PGD on `reference`.

        Args:
          seeds: `jaxprov.probes.Probes` whose inputs are an image / vector array [n, ...] in the
            reference's normalised input space.
          key: PRNG key of the random start; the twins are a deterministic function of it.
          reference: the `jaxprov.Model` the twins are generated on (required, shared by the zoo).
          batched: runs the clean forward pass and the PGD on the reference (`Method.make_probes`).

        Returns:
          Probes with inputs {"x": seeds, "x_adv": twins} and meta recording the config, the
          reference (name, arch, params digest) and the key.
        """
        from jaxprov.probes import Probes, key_repr

        require_reference(reference, self.name, "to craft its PGD twins on (ModelDiff)")
        x = continuous_inputs(seeds, self.name)
        twins = _twins(self, reference, x, key, batched)
        meta = {**seeds.meta, "method": self.name, "config": self.config(), "pgd_key": key_repr(key),
                "reference": reference_meta(reference)}
        return Probes(inputs={"x": x, "x_adv": twins}, meta=meta)

    def rows(self, fns: ModelFns, params, probes) -> jax.Array:
        """Cosine distance between the model's outputs on each seed and its twin: [chunk].

        Computed as ||u - v||^2 / 2 on unit outputs u, v (equal to 1 - cos, without cancellation when a
        twin barely moves). A zero output stays the zero vector, so a model with all-zero or constant
        outputs gets an all-zero DDV (flagged dead by the engine), never NaN.
        """
        n = probes["x"].shape[0]
        # One forward pass over seeds and twins together.
        out = fns.apply(params, jnp.concatenate([probes["x"], probes["x_adv"]], axis=0))
        unit = unit_rows(out.reshape(out.shape[0], -1).astype(jnp.float32))
        return 0.5 * jnp.sum(jnp.square(unit[:n] - unit[n:]), axis=1)


def _objective(method: DDV, apply: Apply, params, x_adv: jax.Array, targets: jax.Array, n: int) -> jax.Array:
    """The PGD objective's share of `x_adv` (a chunk of the n seeds): its terms of the batch means."""
    out = apply(params, x_adv).reshape(x_adv.shape[0], -1)
    sq = jnp.square(out - targets)
    loss = jnp.sum(sq[:, 0]) / n
    if sq.shape[1] > 1:  # a single-output model has no units j >= 1
        loss = loss + method.diversity_weight * (jnp.sum(jnp.mean(sq[:, 1:], axis=1)) / n)
    return loss


def _clean_outputs(static, fns: ModelFns, params, x: jax.Array, shared) -> jax.Array:
    return fns.apply(params, x).reshape(x.shape[0], -1)


def _pgd(static, fns: ModelFns, params, chunk, shared) -> jax.Array:
    """L-inf PGD ascent (`jaxprov.attacks.linf_pgd`) of `_objective` from a chunk of seeds: each
    twin's gradient is its own term's, so chunks are independent given the batch's targets."""
    method, n = static
    lo, hi = shared
    return linf_pgd(lambda x_adv: _objective(method, fns.apply, params, x_adv, chunk["targets"], n), chunk["x"],
                    method.eps, method.iters, method.step, lo, hi, start=chunk["start"])


def _twins(method: DDV, reference, x: jax.Array, key: jax.Array, batched: Callable) -> jax.Array:
    """Targets from the clean outputs of all seeds (their batch mean), then PGD chunk by chunk."""
    lo, hi = jnp.min(x), jnp.max(x)
    clean = batched(_clean_outputs, None, reference, x)
    targets = method.target_scale * (jnp.mean(clean, axis=0, keepdims=True) - clean)
    start = x
    if method.random_start:
        start = x + jax.random.uniform(key, x.shape, x.dtype, -method.eps, method.eps)
    return batched(_pgd, (method, x.shape[0]), reference, {"x": x, "start": start, "targets": targets}, (lo, hi))
