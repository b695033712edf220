"""Layers that behave exactly like their PyTorch namesakes, so converted weights give equal outputs.

The traps: PyTorch pads convolutions and pools symmetrically by an explicit amount (Flax's
"SAME" pads asymmetrically for stride 2); max-pool pads with -inf; BatchNorm uses eps=1e-5 and,
in inference, the running statistics; adaptive average pooling uses floor/ceil bin edges.
"""

from __future__ import annotations

import math
from functools import partial

import flax.linen as nn
import jax
import jax.numpy as jnp


def conv(features: int, kernel: int, stride: int = 1, padding: int | None = None, groups: int = 1,
         bias: bool = False, name: str | None = None, dilation: int = 1) -> nn.Conv:
    """torch.nn.Conv2d(…, kernel, stride, padding, groups, bias) in NHWC."""
    pad = (kernel - 1) // 2 * dilation if padding is None else padding
    return nn.Conv(features, (kernel, kernel), strides=(stride, stride), padding=((pad, pad), (pad, pad)),
                   feature_group_count=groups, use_bias=bias, kernel_dilation=(dilation, dilation),
                   name=name)


def batch_norm(name: str | None = None, eps: float = 1e-5) -> nn.BatchNorm:
    """torch.nn.BatchNorm2d/1d in eval mode: normalises with the converted running statistics."""
    return nn.BatchNorm(use_running_average=True, epsilon=eps, momentum=0.9, name=name)


def layer_norm(name: str | None = None, eps: float = 1e-5) -> nn.LayerNorm:
    return nn.LayerNorm(epsilon=eps, name=name)


def max_pool(x: jax.Array, kernel: int, stride: int | None = None, padding: int = 0,
             ceil_mode: bool = False) -> jax.Array:
    """torch.nn.MaxPool2d: -inf padding; ceil_mode adds right/bottom padding for the last window."""
    stride = kernel if stride is None else stride
    pads = []
    for size in x.shape[1:3]:
        extra = 0
        if ceil_mode:
            out = math.ceil((size + 2 * padding - kernel) / stride) + 1
            if (out - 1) * stride >= size + padding:  # torch drops a window starting in the padding
                out -= 1
            extra = max(0, (out - 1) * stride + kernel - (size + 2 * padding))
        pads.append((padding, padding + extra))
    return nn.max_pool(x, (kernel, kernel), strides=(stride, stride), padding=pads)


def avg_pool(x: jax.Array, kernel: int, stride: int | None = None, padding: int = 0) -> jax.Array:
    """torch.nn.AvgPool2d with count_include_pad=True (the default)."""
    stride = kernel if stride is None else stride
    pad = ((padding, padding), (padding, padding))
    return nn.avg_pool(x, (kernel, kernel), strides=(stride, stride), padding=pad, count_include_pad=True)


def _adaptive_bins(size: int, out: int) -> list[tuple[int, int]]:
    return [((i * size) // out, -((-(i + 1) * size) // out)) for i in range(out)]


def adaptive_avg_pool(x: jax.Array, output_size: tuple[int, int]) -> jax.Array:
    """torch.nn.AdaptiveAvgPool2d: bin i covers [floor(i*H/out), ceil((i+1)*H/out)).

    Shapes are static, so the bins unroll into slices; when H divides evenly it is a plain pool.
    """
    h, w = x.shape[1:3]
    oh, ow = output_size
    if h % oh == 0 and w % ow == 0:
        return nn.avg_pool(x, (h // oh, w // ow), strides=(h // oh, w // ow))
    rows = [jnp.mean(x[:, a:b], axis=1, keepdims=True) for a, b in _adaptive_bins(h, oh)]
    x = jnp.concatenate(rows, axis=1)
    cols = [jnp.mean(x[:, :, a:b], axis=2, keepdims=True) for a, b in _adaptive_bins(w, ow)]
    return jnp.concatenate(cols, axis=2)


def global_avg_pool(x: jax.Array) -> jax.Array:
    return jnp.mean(x, axis=(1, 2))


def flatten_nchw(x: jax.Array) -> jax.Array:
    """Flatten an NHWC map in PyTorch's NCHW order, so a converted Linear after it lines up."""
    return jnp.transpose(x, (0, 3, 1, 2)).reshape(x.shape[0], -1)


gelu_exact = partial(nn.gelu, approximate=False)  # torch.nn.GELU() and HF "gelu" use erf
