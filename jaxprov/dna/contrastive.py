"""Stage 1 of Model DNA: train the encoder g so that a source's DNA is close to its derived models'
DNA and far from independent models' DNA on the same probe x (the models themselves are fixed).

The paper scores a pair by sigmoid(<a, b> / 30) on raw CIFAR logits. Our DNA adds g(x) (a unit
vector) to output probabilities (at most unit norm), where a fixed temperature of 30 would flatten
every score to 1/2, so we use the standard InfoNCE form on cosine similarities instead: per probe,
the derived model must be picked out of itself and `m` independent models,

    loss = mean_{b, x}  -log softmax_j( cos(DNA_src(x), DNA_j(x)) / T )[positive],

j over the positive and the m negatives of anchor b (van den Oord et al. 2018; SimCLR's NT-Xent).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def unit(v: jax.Array) -> jax.Array:
    return v / jnp.maximum(jnp.linalg.norm(v, axis=-1, keepdims=True), 1e-12)


def info_nce(source: jax.Array, positive: jax.Array, negatives: jax.Array, temperature: float) -> jax.Array:
    """InfoNCE over DNAs on shared probes.

    Args:
      source: [B, P, W] the anchors' DNA on P probes.
      positive: [B, P, W] a derived model's DNA per anchor.
      negatives: [B, m, P, W] m independent models' DNA per anchor.
      temperature: T of the softmax over cosine similarities.
    """
    s, p, n = unit(source), unit(positive), unit(negatives)
    pos = jnp.sum(s * p, axis=-1)[:, None, :]  # [B, 1, P]
    neg = jnp.sum(s[:, None] * n, axis=-1)  # [B, m, P]
    logits = jnp.concatenate([pos, neg], axis=1) / temperature  # [B, 1 + m, P]
    return -jnp.mean(jax.nn.log_softmax(logits, axis=1)[:, 0, :])
