"""The input encoder g of Model DNA (Mu et al., ECAI 2024): DNA(M, x) = g(x) + view(M(x)).

g sees only the probe input, never a model, and projects it to the width of the output view; its
output is L2-normalised, as the paper's. The paper's g is a ResNet-50 trunk with a 2-layer head for
CIFAR; ours is sized for the small domains jaxprov trains detectors on (and small enough to ship):
three stride-2 3x3 convolutions and a 2-layer head for images (NHWC), the 2-layer head alone on
flat inputs ("mlp"), or, for text ("tokens"), a learned embedding of the token ids averaged over the
attention mask, then the 2-layer head: g encodes the token inputs, never a model's embeddings.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

ENCODERS = ("conv", "mlp", "tokens")


class Encoder(nn.Module):
    """g: inputs [n, ...] (text: {"input_ids", "attention_mask", ...} of [n, L]) -> unit vectors [n, width]."""

    width: int
    kind: str = "conv"
    hidden: int = 64
    vocab_size: int | None = None  # "tokens" only

    @nn.compact
    def __call__(self, x) -> jax.Array:
        if self.kind == "tokens":
            ids = x["input_ids"]
            mask = x.get("attention_mask")
            mask = (jnp.ones(ids.shape, jnp.float32) if mask is None else mask.astype(jnp.float32))[..., None]
            e = nn.Embed(self.vocab_size, self.hidden, name="embed")(ids)
            h = jnp.sum(e * mask, axis=1) / jnp.maximum(jnp.sum(mask, axis=1), 1.0)
        else:
            h = x.astype(jnp.float32)
        if self.kind == "conv":
            h = nn.relu(nn.Conv(16, (3, 3), strides=(2, 2), name="conv1")(h))
            h = nn.relu(nn.Conv(32, (3, 3), strides=(2, 2), name="conv2")(h))
            h = nn.relu(nn.Conv(32, (3, 3), strides=(2, 2), name="conv3")(h))
        elif self.kind not in ("mlp", "tokens"):
            raise ValueError(f"unknown encoder {self.kind!r}; known: {', '.join(ENCODERS)}")
        h = h.reshape(h.shape[0], -1)
        h = nn.relu(nn.Dense(self.hidden, name="fc1")(h))
        h = nn.Dense(self.width, use_bias=False, name="fc2")(h)
        norm = jnp.linalg.norm(h, axis=-1, keepdims=True)
        return h / jnp.maximum(norm, 1e-12)
