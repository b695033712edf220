"""The losses a MAP mask is learned with (MAP's are not public; these are ours, docs/methods.md).

  authorised    T^2 * KL(softmax(z_source / T) || softmax(z_masked / T)) on authorised (or
                pseudo-source) inputs: the masked model keeps the unmasked model's behaviour there,
                which needs no labels (Hinton et al.'s distillation, toward the frozen source);
  unauthorised  KL(q || softmax(z_masked)) on unauthorised (or neighbour) inputs, with q the same
                near-uniform distribution for every input: (1 - PEAK) / K on every class plus PEAK on
                class 0. Its outputs then carry no information about the input, and its argmax is
                one fixed class, so its accuracy is that class's share (chance on balanced data).
                Plain KL to uniform is not enough: near-uniform outputs keep the right argmax
                (measured: KL to uniform 0.04 on training batches left MNIST accuracy at 0.76), and
                pushing outputs away from the source's class ("confidently wrong") leaves a model
                that a permutation of labels repairs;
  separation    the squared cosine similarity between the masked model's mean feature on
                unauthorised inputs and the source's mean feature on authorised inputs: pushes
                unauthorised representations away from the authorised ones, so that the head's
                knowledge cannot be reached again by a little fine-tuning;
  bn_statistics at every BatchNorm, the distance of the batch's mean and variance of the layer's input
                from the running ones the source stored (norms, summed over layers): the synthesis's
                statistics term (`synth`), and the mask's `bn_keep` term on authorised (or pseudo-source)
                inputs, which keeps the masked model's internal statistics where the source's were;
  features      on authorised (or pseudo-source) inputs, the squared distance of each of the masked
                model's named features from the source's, relative to the source feature's mean
                square, averaged over the features: a keep loss that sees every change of the
                representation, where distillation sees only the changes that move the outputs
                (a confident input, as a synthesised one is, keeps its output while its features move);
  sparsity      the share of maskable weights the straight-through mask keeps, weighted by the number
                of weights each score switches: a penalty that controls how much is pruned.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from jaxprov.errors import JaxprovError

PEAK = 0.5  # the extra mass of FIXED_CLASS in the unauthorised target: one fixed answer, whatever the input
FIXED_CLASS = 0


def authorised(logits, source_probs, temperature: float = 1.0):
    """Distillation toward the frozen source on authorised inputs (mean over the batch)."""
    t = temperature
    log_p = jax.nn.log_softmax(logits / t, axis=-1)
    log_q = jnp.log(jnp.clip(source_probs, 1e-12, 1.0))
    return t * t * jnp.mean(jnp.sum(source_probs * (log_q - log_p), axis=-1))


def unauthorised(logits):
    """KL(q || softmax(logits)) with q = (1 - PEAK) / K + PEAK * onehot(0), mean over the batch."""
    k = logits.shape[-1]
    q = jnp.full((k,), (1.0 - PEAK) / k, jnp.float32).at[FIXED_CLASS].add(PEAK)
    log_p = jax.nn.log_softmax(logits, axis=-1)
    q = q[None, :]
    return jnp.mean(jnp.sum(q * (jnp.log(q) - log_p), axis=-1))


def separation(features_unauthorised, source_mean_authorised):
    """Squared cosine between the batch-mean feature on unauthorised inputs and the source's
    authorised mean feature (a fixed vector)."""
    mean = jnp.mean(features_unauthorised.reshape(features_unauthorised.shape[0], -1), axis=0)
    ref = source_mean_authorised.reshape(-1)
    cos = jnp.dot(mean, ref) / (jnp.linalg.norm(mean) * jnp.linalg.norm(ref) + 1e-8)
    return cos * cos


def sparsity(ste_masks: dict, weights_per_score: dict):
    """Share of maskable weights kept by the straight-through masks (differentiable through them)."""
    kept = sum(jnp.sum(m) * float(weights_per_score[k]) for k, m in ste_masks.items())
    total = sum(float(m.size * weights_per_score[k]) for k, m in ste_masks.items())
    return kept / total


def bn_statistics(moments):
    """Sum over BatchNorm layers of |batch mean - running mean| + |batch var - running var| (L2 norms),
    `moments` as `synth.bn_moments` gives them."""
    return sum(jnp.linalg.norm(m - rm) + jnp.linalg.norm(v - rv) for m, v, rm, rv in moments)


def features(masked_features, source_features):
    """Mean over the features (the floating-point leaves of two trees of one structure, as one module's
    apply returns them) of |f_masked - f_source|^2 / |f_source|^2 (batch means; the source's features
    are constants)."""
    pairs = [(m, jax.lax.stop_gradient(f)) for m, f in zip(jax.tree_util.tree_leaves(masked_features),
                                                              jax.tree_util.tree_leaves(source_features))
             if jnp.issubdtype(jnp.asarray(f).dtype, jnp.floating)]
    if not pairs:
        raise JaxprovError("the model's apply returns no floating-point features for MAP's feature_keep term; "
                           "set feature_keep 0")
    return sum(jnp.mean(jnp.square(m - f)) / (jnp.mean(jnp.square(f)) + 1e-8) for m, f in pairs) / len(pairs)
