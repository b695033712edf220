"""Vision Transformer (Dosovitskiy et al., 2021, arXiv:2010.11929) as torchvision 0.29 lays it out.

Module names mirror torchvision's `VisionTransformer` (conv_proj, class_token, encoder.pos_embedding,
encoder.layers.encoder_layer_{i}.{ln_1,self_attention,ln_2,mlp.0,mlp.3}, encoder.ln, heads.head), so
the converter is a plain rule table. The traps: every LayerNorm uses eps=1e-6, not 1e-5; the
attention keeps torch's fused q/k/v projection (`in_proj`, 3*D outputs ordered q, k, v, heads
contiguous within each) so its weight converts with a transpose; tokens are the patches in row-major
(h, w) order with the class token prepended, which an NHWC reshape gives directly.
"""

from __future__ import annotations

import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxprov.model import InputSpec
from jaxprov.models.registry import Family, register
from jaxprov.models import layers as L
from jaxprov.models.resnet import IMAGENET_MEAN, IMAGENET_STD

LN_EPS = 1e-6


@dataclasses.dataclass(frozen=True)
class ViTConfig:
    num_classes: int = 1000
    image_size: int = 224
    patch_size: int = 16
    hidden_dim: int = 768
    num_layers: int = 12
    num_heads: int = 12
    mlp_dim: int = 3072


class SelfAttention(nn.Module):
    """torch.nn.MultiheadAttention(batch_first=True) on (x, x, x), no mask, eval mode."""

    num_heads: int

    @nn.compact
    def __call__(self, x):
        b, s, d = x.shape
        hd = d // self.num_heads
        qkv = nn.Dense(3 * d, name="in_proj")(x).reshape(b, s, 3, self.num_heads, hd)
        q, k, v = qkv[:, :, 0], qkv[:, :, 1], qkv[:, :, 2]
        logits = jnp.einsum("bqhd,bkhd->bhqk", q * (hd ** -0.5), k)
        out = jnp.einsum("bhqk,bkhd->bqhd", jax.nn.softmax(logits, axis=-1), v).reshape(b, s, d)
        return nn.Dense(d, name="out_proj")(out)


class EncoderBlock(nn.Module):
    config: ViTConfig

    @nn.compact
    def __call__(self, x):
        c = self.config
        x = x + SelfAttention(c.num_heads, name="self_attention")(L.layer_norm("ln_1", LN_EPS)(x))
        y = L.layer_norm("ln_2", LN_EPS)(x)
        y = nn.Dense(c.hidden_dim, name="mlp_3")(L.gelu_exact(nn.Dense(c.mlp_dim, name="mlp_0")(y)))
        return x + y


class Encoder(nn.Module):
    config: ViTConfig

    @nn.compact
    def __call__(self, x):
        c = self.config
        pos = self.param("pos_embedding", nn.initializers.normal(0.02), (1, x.shape[1], c.hidden_dim))
        x = x + pos
        feats = {}
        for i in range(c.num_layers):
            x = EncoderBlock(c, name=f"encoder_layer_{i}")(x)
            feats[f"block{i}"] = x
        return L.layer_norm("ln", LN_EPS)(x), feats


class VisionTransformer(nn.Module):
    """torchvision.models.VisionTransformer without conv stem or representation layer.

    Features: "block{i}" (each encoder layer's output, [batch, tokens, hidden]), "tokens" (all
    tokens after the final LayerNorm) and "pre_logits" (the class token of "tokens").
    """

    config: ViTConfig

    @nn.compact
    def __call__(self, x):
        c = self.config
        p = c.patch_size
        x = L.conv(c.hidden_dim, p, stride=p, padding=0, bias=True, name="conv_proj")(x)
        n = x.shape[0]
        x = x.reshape(n, -1, c.hidden_dim)
        cls = self.param("class_token", nn.initializers.zeros, (1, 1, c.hidden_dim))
        x = jnp.concatenate([jnp.broadcast_to(cls, (n, 1, c.hidden_dim)), x], axis=1)
        tokens, feats = Encoder(c, name="encoder")(x)
        pre_logits = tokens[:, 0]
        out = nn.Dense(c.num_classes, name="heads_head")(pre_logits)
        return out, {**feats, "tokens": tokens, "pre_logits": pre_logits}


def _build(config: ViTConfig) -> nn.Module:
    if config.image_size % config.patch_size or config.hidden_dim % config.num_heads:
        raise ValueError(f"image_size must divide by patch_size and hidden_dim by num_heads: {config}")
    return VisionTransformer(config)


def _input_spec(config: ViTConfig) -> InputSpec:
    return InputSpec("image", "NHWC", (config.image_size, config.image_size, 3),
                     mean=IMAGENET_MEAN, std=IMAGENET_STD)


_B = dict(hidden_dim=768, num_layers=12, num_heads=12, mlp_dim=3072)
_L = dict(hidden_dim=1024, num_layers=24, num_heads=16, mlp_dim=4096)
_H = dict(hidden_dim=1280, num_layers=32, num_heads=16, mlp_dim=5120)

register(Family(
    name="vit",
    variants={
        "vit_b_16": ViTConfig(patch_size=16, **_B),
        "vit_b_32": ViTConfig(patch_size=32, **_B),
        "vit_l_16": ViTConfig(patch_size=16, **_L),
        "vit_l_32": ViTConfig(patch_size=32, **_L),
        "vit_h_14": ViTConfig(patch_size=14, **_H),
    },
    build=_build,
    input_spec=_input_spec,
))
