"""Stage 2 of Model DNA: P(derived) from the DNAs of a (source, suspect) pair on shared probes.

The paper's classifier is an MLP on concat[DNA_src(x), DNA_suspect(x)], deciding per probe. Ours is
siamese: a small MLP h maps each DNA to a unit embedding, and the pair's logit is an affine function
of the mean cosine of the two models' embeddings over the probes,

    s(a, b) = mean_x cos(h(DNA_a(x)), h(DNA_b(x))),     P(derived) = sigmoid(softplus(alpha) s + beta).

Why: s is symmetric and a dot product of two per-model vectors (each model's embeddings, stacked),
so the signature of a model is computed once, vmapped over a zoo like every other method, and a
zoo's N x N similarity is still one matmul; the paper's concatenation needs the MLP run on every
pair. The scale is kept positive, so P(derived) rises with s and s ranks pairs as P does.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxprov.dna.contrastive import unit


class Embedding(nn.Module):
    """h: DNA [..., W] -> unit embedding [..., embed]."""

    hidden: int = 64
    embed: int = 32

    @nn.compact
    def __call__(self, dna: jax.Array) -> jax.Array:
        h = nn.relu(nn.Dense(self.hidden, name="fc1")(dna))
        return unit(nn.Dense(self.embed, name="fc2")(h))


def pair_similarity(emb_a: jax.Array, emb_b: jax.Array) -> jax.Array:
    """s(a, b): [..., P, E] x [..., P, E] -> [...], the mean cosine over the probes."""
    return jnp.mean(jnp.sum(emb_a * emb_b, axis=-1), axis=-1)


def logit(head: dict, similarity: jax.Array) -> jax.Array:
    """The pair's logit from its similarity s, with head = {"scale": alpha, "bias": beta}."""
    return jax.nn.softplus(head["scale"]) * similarity + head["bias"]


def probability(head: dict, similarity):
    return jax.nn.sigmoid(logit(head, similarity))
