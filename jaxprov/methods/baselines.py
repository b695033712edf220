"""The peers' fingerprints, re-implemented on the shared engine (one signature per model, probes
shared by the zoo) so they run, batch and compare exactly like ours.

- SAC (Guan et al., "Are You Stealing My Model? Sample Correlation for Fingerprinting Deep Neural
  Networks", NeurIPS 2022). On n probes (seeds, or CutMix-augmented seeds) a model's outputs give
  the matrix of pairwise cosine similarities C(f)_ij = cos(f(x_i), f(x_j)):

      signature = upper triangle of C(f) (i < j),      sim(a, b) = 1 - mean_{i<j} |C(a)_ij - C(b)_ij|

  (SAC's distance is the mean |difference| of the two matrices; the diagonal is 1 for both, so it is
  left out.) The signature is NOT a unit vector and similarity is not a dot product: `pairwise`
  computes the mean absolute difference, in chunks. The matrix is n x n whatever the output size,
  so models with different label spaces compare.
- IPGuard (Cao et al., "IPGuard: Protecting Intellectual Property of Deep Neural Networks via
  Fingerprinting the Classification Boundary", AsiaCCS 2021). Probes are points just past the
  REFERENCE model's decision boundary; a model's signature is its one-hot predicted labels there:

      signature = vec(onehot(argmax f(x'_i))) / sqrt(n),     a . b = fraction of labels that agree

  Labels index a label space, so only models with equal output sizes compare (`same_output_size_only`).
- Mistake agreement (SAC-w's probe choice, Guan et al. 2022, with IPGuard's label signature).
  Probes are the labelled seeds the REFERENCE model misclassifies; a model's signature is its
  one-hot predicted labels there, so a . b = how often b makes a's mistakes (the very wrong label).
  A copy fitted to the reference's outputs (distillation, extraction by labels or probabilities)
  inherits its errors; an independent model, even one trained on the same data, mostly gets those
  inputs right or wrong differently. Seeds must carry labels and must not include the data the
  suspects were trained on (use a held-out split: "mnist:test").
- Weight cosine (the weight-space view MoTHer builds on): signature = every float param, flattened
  in tree order (batch_stats excluded), L2-normalised; compares models of one arch only.
- Linear CKA (Kornblith et al., "Similarity of Neural Network Representations Revisited", ICML
  2019; REEF, ICLR 2025, uses it for provenance). On n probes, features X = pre_logits [n, d]:

      signature = vec(H X X^T H) / ||H X X^T H||_F,  H = I - 11^T / n,     a . b = linear CKA(X_a, X_b)

  stored as the diagonal plus sqrt(2) x the upper triangle (half the length, same dot product).
  Feature widths may differ between models: the Gram matrix is n x n.
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np

from jaxprov.attacks import valid_box
from jaxprov.errors import JaxprovError
from jaxprov.methods.base import Apply, Method, continuous_inputs, reference_meta, safe_normalize, unit_rows

# Below this norm an output / feature vector has no direction: it counts as zero, never NaN.
_TINY_NORM = 1e-12
_FORWARD_CHUNK = 512  # inputs per forward pass when a method labels its seeds
# SAC's pairwise holds at most this many float32 |differences| at once (256 MiB).
PAIRWISE_CHUNK_ELEMENTS = 2**26
_HIGHEST = jax.lax.Precision.HIGHEST


def _unit_rows(out: jax.Array) -> jax.Array:
    """Each example's output, flattened, as a unit vector; zero rows stay zero."""
    return unit_rows(out.reshape(out.shape[0], -1).astype(jnp.float32))


def _upper(matrix: jax.Array, k: int) -> jax.Array:
    i, j = np.triu_indices(matrix.shape[0], k)
    return matrix[i, j]


# ---------------------------------------------------------------------------------------------
# SAC


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
        other choice, samples the source model misclassifies, needs labels and is not built.
    """

    name = "sac"

    n_seeds: int = 100
    cutmix: bool = False

    def make_probes(self, seeds, key: jax.Array, reference=None):
        """The seeds as probes {"x": ...}, CutMix-augmented from `key` when `cutmix` is set."""
        from jaxprov.probes import Probes, key_repr

        x = seeds.inputs
        meta = {**seeds.meta, "method": self.name, "config": self.config()}
        if self.cutmix:
            x = continuous_inputs(seeds, self.name)
            if x.ndim != 4:
                raise JaxprovError("SAC's CutMix probes need NHWC images")
            x = cutmix(x, key)
            meta["cutmix_key"] = key_repr(key)
        return Probes(inputs={"x": x}, meta=meta)

    def rows(self, apply: Apply, params, probes) -> jax.Array:
        """Each probe's output, L2-normalised: [chunk, C]."""
        return _unit_rows(apply(params, probes["x"]))

    def finalize(self, rows: jax.Array) -> jax.Array:
        """Upper triangle (i < j) of the cosine-similarity matrix: [n (n - 1) / 2]."""
        return _upper(jnp.matmul(rows, rows.T, precision=_HIGHEST), 1)

    def pairwise(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        """1 - mean |a_i - b_j| for every pair, [Na, Nb]; at most PAIRWISE_CHUNK_ELEMENTS at once."""
        a, b = np.asarray(a, np.float32), np.asarray(b, np.float32)
        per_row = max(1, b.shape[0] * b.shape[1])
        step = max(1, PAIRWISE_CHUNK_ELEMENTS // per_row)
        out = np.empty((a.shape[0], b.shape[0]), np.float32)
        for start in range(0, a.shape[0], step):
            block = a[start:start + step]
            out[start:start + step] = 1.0 - np.abs(block[:, None, :] - b[None, :, :]).mean(axis=2)
        return out


# ---------------------------------------------------------------------------------------------
# Label agreement: IPGuard and mistakes


@dataclasses.dataclass(frozen=True)
class _LabelAgreement(Method):
    """A model's signature is its one-hot predicted label at each probe, / sqrt(n): the dot product
    of two signatures is the fraction of probes where they predict the same label (IPGuard,
    mistakes). Labels index a label space, so only equal output sizes compare."""

    same_output_size_only = True

    def rows(self, apply: Apply, params, probes) -> jax.Array:
        """One-hot predicted label of each probe: [chunk, C]."""
        return _label_rows(apply, params, probes)

    def finalize(self, rows: jax.Array) -> jax.Array:
        """Flattened one-hots / sqrt(n): the dot product of two signatures is their label agreement."""
        return rows.reshape(-1) / np.sqrt(rows.shape[0])


def _label_rows(apply: Apply, params, probes) -> jax.Array:
    out = apply(params, probes["x"])
    out = out.reshape(out.shape[0], -1)
    return jax.nn.one_hot(jnp.argmax(out, axis=1), out.shape[1], dtype=jnp.float32)


def _pair_gap(apply: Apply, params, x: jax.Array, pair: jax.Array) -> jax.Array:
    """f_i(x) - f_j(x) for each input and its label pair (i, j) = pair[k]: [n]."""
    out = apply(params, x).reshape(x.shape[0], -1)
    chosen = jnp.take_along_axis(out, pair, axis=1)
    return chosen[:, 0] - chosen[:, 1]


@functools.partial(jax.jit, static_argnums=(0, 1))
def _boundary_points(method: "IPGuard", apply: Apply, params, x: jax.Array, lo: jax.Array,
                     hi: jax.Array) -> jax.Array:
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
class IPGuard(_LabelAgreement):
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
    needs_reference = True

    n_seeds: int = 100
    iters: int = 20
    step: float = 1.0
    margin: float = 1.0

    def make_probes(self, seeds, key: jax.Array, reference=None):
        """Points just past `reference`'s decision boundary, one per seed.

        Args:
          seeds: Probes whose inputs are an image / vector array [n, ...] in the reference's input space.
          key: unused: the search has no random start, the points are a function of seeds and reference.
          reference: the `jaxprov.Model` whose boundary is fingerprinted (required, shared by the zoo).

        Returns:
          Probes {"x": points}; meta records the config and the reference (name, arch, params digest).
          All n seeds are searched in one batch: memory is one forward + backward pass over n inputs.
        """
        from jaxprov.probes import Probes

        if reference is None:
            raise JaxprovError("ipguard needs a reference model to find decision-boundary points on; "
                               "pass reference=<a Model of the zoo>")
        x = continuous_inputs(seeds, self.name)
        lo, hi = valid_box(reference.input_spec, x.ndim)
        points = _boundary_points(self, reference.apply, reference.params, x, lo, hi)
        meta = {**seeds.meta, "method": self.name, "config": self.config(),
                "reference": reference_meta(reference)}
        return Probes(inputs={"x": points}, meta=meta)


# ---------------------------------------------------------------------------------------------
# Mistake agreement


@dataclasses.dataclass(frozen=True)
class Mistakes(_LabelAgreement):
    """Agreement on the reference's mistakes: the labelled seeds the reference gets wrong, and
    each model's predicted label there (see the module docstring).

    On the reuse benchmark's CPU zoo (MNIST MLP / LeNet, seeds from the held-out "mnist:test"),
    extracted and distilled copies make 0.2-0.9 of their victim's mistakes; models trained
    independently on the victim's own training data mostly far fewer.

    Attributes:
      n_seeds: how many labelled seeds callers draw; the reference's mistakes among them are the
        probes (a model with 97 % accuracy makes ~30 on 1,000 seeds).
      max_probes: keep at most this many mistakes (the first ones in seed order).
      min_probes: fewer mistakes than this is an error: the agreement would be too coarse to read.
    """

    name = "mistakes"
    needs_reference = True

    n_seeds: int = 1000
    max_probes: int = 500
    min_probes: int = 10

    def make_probes(self, seeds, key: jax.Array, reference=None):
        """The seeds `reference` misclassifies (argmax != label), in seed order.

        Args:
          seeds: labelled Probes (`labels` set: MNIST, digits, a data split, an .npz with "y").
          key: unused: the probes are a function of the seeds and the reference.
          reference: the `jaxprov.Model` whose mistakes are the fingerprint.
        """
        from jaxprov.probes import Probes

        if reference is None:
            raise JaxprovError("mistakes needs a reference model whose mistakes are the probes; "
                               "pass reference=<a Model of the zoo>")
        if seeds.labels is None:
            raise JaxprovError(f"mistakes needs labelled seeds (source {seeds.meta.get('source')!r} has no labels); "
                               "use mnist, digits, a split such as mnist:test, or an .npz with a 'y' array")
        x = continuous_inputs(seeds, self.name)
        predicted = np.concatenate([
            np.asarray(jnp.argmax(_label_rows(reference.apply, reference.params, {"x": x[i:i + _FORWARD_CHUNK]}), axis=1))
            for i in range(0, x.shape[0], _FORWARD_CHUNK)])
        wrong = np.flatnonzero(predicted != np.asarray(seeds.labels))[:self.max_probes]
        if wrong.size < self.min_probes:
            raise JaxprovError(f"mistakes: reference {reference.name} misclassifies only {wrong.size} of "
                               f"{x.shape[0]} labelled seeds (need {self.min_probes}); draw more seeds "
                               "(n_seeds) or use harder held-out data")
        meta = {**seeds.meta, "method": self.name, "config": self.config(), "n_mistakes": int(wrong.size),
                "reference": reference_meta(reference)}
        return Probes(inputs={"x": x[wrong]}, meta=meta)



# ---------------------------------------------------------------------------------------------
# Weight cosine


@dataclasses.dataclass(frozen=True)
class WeightCosine(Method):
    """Cosine of two models' flattened weights; a function of the params alone (no probes)."""

    name = "weights"
    same_arch_only = True
    uses_probes = False

    def make_probes(self, seeds, key: jax.Array, reference=None):
        """No probes: an empty set, so the signature's probe digest is the same for every zoo."""
        from jaxprov.probes import Probes

        return Probes(inputs={"x": np.zeros((0,), np.float32)}, meta={"method": self.name})

    def signature_from_params(self, params) -> jax.Array:
        """Every float leaf except batch_stats (running statistics are not weights), in tree order."""
        trainable = {k: v for k, v in params.items() if k != "batch_stats"}
        leaves = [leaf.reshape(-1).astype(jnp.float32) for leaf in jax.tree_util.tree_leaves(trainable)
                  if jnp.issubdtype(leaf.dtype, jnp.floating)]
        return safe_normalize(jnp.concatenate(leaves))


# ---------------------------------------------------------------------------------------------
# Linear CKA


@dataclasses.dataclass(frozen=True)
class CKA(Method):
    """Linear CKA of one feature (default the representation the head reads) on shared probes.

    Attributes:
      n_seeds: how many seeds callers draw; `make_probes` uses the seeds it is given.
      feature: the `Model.features` entry compared.
    """

    name = "cka"
    uses_features = True

    n_seeds: int = 100
    feature: str = "pre_logits"

    def make_probes(self, seeds, key: jax.Array, reference=None):
        """The seeds as probes {"x": ...} (images, vectors or token dicts)."""
        from jaxprov.probes import Probes

        return Probes(inputs={"x": seeds.inputs}, meta={**seeds.meta, "method": self.name, "config": self.config()})

    def rows(self, features, params, probes) -> jax.Array:
        """The feature of each probe, flattened: [chunk, d]. `features` is the model's features fn."""
        feat = features(params, probes["x"])[self.feature]
        return feat.reshape(feat.shape[0], -1)

    def finalize(self, rows: jax.Array) -> jax.Array:
        """Centred Gram matrix, Frobenius-normalised, as [diag, sqrt(2) upper]: [n (n + 1) / 2]."""
        centred = rows - jnp.mean(rows, axis=0, keepdims=True)
        gram = jnp.matmul(centred, centred.T, precision=_HIGHEST)
        packed = jnp.concatenate([jnp.diagonal(gram), np.float32(np.sqrt(2.0)) * _upper(gram, 1)])
        return safe_normalize(packed)
