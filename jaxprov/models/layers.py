"""Layers that behave exactly like their PyTorch namesakes, so converted weights give equal outputs.

The traps: PyTorch pads convolutions and pools symmetrically by an explicit amount (Flax's
"SAME" pads asymmetrically for stride 2); max-pool pads with -inf; BatchNorm uses eps=1e-5, in
inference the running statistics, and in training updates them with momentum 0.1 and the unbiased
batch variance; adaptive average pooling uses floor/ceil bin edges.
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


class BatchNorm(nn.Module):
    """torch.nn.BatchNorm2d/1d over the last (channel) axis; the mode follows the `batch_stats` collection.

    `apply(variables, x)` is eval mode: it normalises with the running statistics (converted
    checkpoints, `predict`, every signature). `apply(variables, x, mutable=["batch_stats"])` is
    train mode: it normalises with the batch's statistics and updates the running ones as torch
    does, running = (1 - momentum) * running + momentum * batch with momentum 0.1 and the batch
    variance unbiased (n / (n - 1)) in the update but biased in the normalisation. `init` runs in
    eval mode. Param tree: params {scale, bias}, batch_stats {mean, var}, as flax.linen.BatchNorm.
    """

    epsilon: float = 1e-5
    momentum: float = 0.1  # torch's convention; flax.linen.BatchNorm's momentum is 1 - this

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        features, shape = x.shape[-1], _channels(x.ndim)
        scale = self.param("scale", nn.initializers.ones, (features,), jnp.float32)
        bias = self.param("bias", nn.initializers.zeros, (features,), jnp.float32)
        ra_mean = self.variable("batch_stats", "mean", lambda: jnp.zeros((features,), jnp.float32))
        ra_var = self.variable("batch_stats", "var", lambda: jnp.ones((features,), jnp.float32))
        if self.is_mutable_collection("batch_stats") and not self.is_initializing():
            axes = tuple(range(x.ndim - 1))
            mean = jnp.mean(x, axis=axes)
            var = jnp.mean(jnp.square(x - mean.reshape(shape)), axis=axes)
            n = x.size // features
            m = self.momentum
            ra_mean.value = (1 - m) * ra_mean.value + m * mean
            ra_var.value = (1 - m) * ra_var.value + m * var * (n / max(n - 1, 1))
        else:
            mean, var = ra_mean.value, ra_var.value
        # flax.linen.BatchNorm's order of operations, so eval outputs are bitwise what they were.
        mul = jax.lax.rsqrt(var + self.epsilon) * scale
        return (x - mean.reshape(shape)) * mul.reshape(shape) + bias.reshape(shape)


def _channels(ndim: int) -> tuple[int, ...]:
    return (1,) * (ndim - 1) + (-1,)


def batch_norm(name: str | None = None, eps: float = 1e-5) -> BatchNorm:
    """torch.nn.BatchNorm2d/1d: eval mode unless `batch_stats` is mutable (see BatchNorm)."""
    return BatchNorm(epsilon=eps, name=name)


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
    return _window_mean(x, (kernel, kernel), (stride, stride), ((padding, padding), (padding, padding)))


def _window_mean(x: jax.Array, window, strides, padding) -> jax.Array:
    # nn.avg_pool divides by a numpy int, which strict dtype promotion refuses: divide by a float.
    # A Python 0.0 as the initial value lets jax see a window sum, which it can differentiate (a traced
    # zero makes it a generic reduction without a gradient rule); the values are bitwise the same.
    summed = jax.lax.reduce_window(x, 0.0, jax.lax.add, (1, *window, 1), (1, *strides, 1),
                                   ((0, 0), *padding, (0, 0)))
    return summed / float(window[0] * window[1])


def _adaptive_bins(size: int, out: int) -> list[tuple[int, int]]:
    return [((i * size) // out, -((-(i + 1) * size) // out)) for i in range(out)]


def adaptive_avg_pool(x: jax.Array, output_size: tuple[int, int]) -> jax.Array:
    """torch.nn.AdaptiveAvgPool2d: bin i covers [floor(i*H/out), ceil((i+1)*H/out)).

    Shapes are static, so the bins unroll into slices; when H divides evenly it is a plain pool.
    """
    h, w = x.shape[1:3]
    oh, ow = output_size
    if h % oh == 0 and w % ow == 0:
        return _window_mean(x, (h // oh, w // ow), (h // oh, w // ow), ((0, 0), (0, 0)))
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


class InternalClassifier(nn.Module):
    """An internal classifier (IC) of a Shallow-Deep Network (Kaya et al., ICML 2019), torch layout of
    the SDN code: on a map of side s >= 4, alpha * maxpool(k) + (1 - alpha) * avgpool(k) with
    k = floor(s / 4) and alpha one learnable scalar, then flatten (NCHW order) and `linear`; on a
    smaller map or a vector, flatten and `linear`. alpha starts at 0.5 (the SDN code draws it
    uniformly; a fixed start keeps initialisation a function of the key alone)."""

    num_classes: int

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        if x.ndim == 4 and x.shape[1] >= 4:
            k = x.shape[1] // 4
            alpha = self.param("alpha", lambda key, shape: jnp.full(shape, 0.5, jnp.float32), (1,))
            x = alpha[0] * max_pool(x, k) + (1.0 - alpha[0]) * avg_pool(x, k)
        x = flatten_nchw(x) if x.ndim == 4 else x
        return nn.Dense(self.num_classes, name="linear")(x)
