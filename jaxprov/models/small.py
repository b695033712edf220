"""Small networks for fast CPU work: an MLP, LeNet-5 and LeNet-5 with BatchNorm (MNIST-size inputs).

The PyTorch layout these mirror (see tests/torch_reference.py): MLP = Sequential of Linear+ReLU
named `layers.{i}` then `head`; LeNet = conv1 (5x5, pad 2) -> ReLU -> maxpool 2 -> conv2 (5x5)
-> ReLU -> maxpool 2 -> flatten (NCHW order) -> fc1 -> ReLU -> fc2 -> ReLU -> head.
`lenet_bn` is LeNet with a BatchNorm after each convolution and after fc1 (convolutions without
bias, as BatchNorm's shift replaces it), on RGB input, wider convolutions (16, 32): the small BatchNorm
model that MAP's source-free setting (`jaxprov.protect.synth`, BatchNorm-statistics matching) needs.
It has no converter (it is trained in jaxprov; no PyTorch checkpoint of it exists).
"""

from __future__ import annotations

import dataclasses

import flax.linen as nn

from jaxprov.model import InputSpec
from jaxprov.models.registry import Family, register
from jaxprov.models import layers as L

MNIST_MEAN, MNIST_STD = (0.1307,), (0.3081,)


@dataclasses.dataclass(frozen=True)
class SmallConfig:
    kind: str = "mlp"  # "mlp" | "lenet" | "lenet_bn"
    num_classes: int = 10
    hidden: tuple[int, ...] = (256, 128)
    image_size: int = 28
    channels: int = 1
    conv: tuple[int, ...] = (6, 16)  # LeNet's convolution widths


class MLP(nn.Module):
    config: SmallConfig

    @nn.compact
    def __call__(self, x):
        feats = {}
        # NHWC images flatten in PyTorch's NCHW order so converted weights line up.
        x = L.flatten_nchw(x) if x.ndim == 4 else x
        for i, width in enumerate(self.config.hidden):
            x = nn.relu(nn.Dense(width, name=f"layers_{i}")(x))
            feats[f"hidden{i}"] = x
        feats["pre_logits"] = x
        return nn.Dense(self.config.num_classes, name="head")(x), feats


class LeNet(nn.Module):
    config: SmallConfig

    @nn.compact
    def __call__(self, x):
        c = self.config
        x = nn.relu(L.conv(c.conv[0], 5, padding=2, bias=True, name="conv1")(x))
        x = L.max_pool(x, 2)
        x = nn.relu(L.conv(c.conv[1], 5, padding=0, bias=True, name="conv2")(x))
        x = L.max_pool(x, 2)
        conv_out = x
        x = L.flatten_nchw(x)
        x = nn.relu(nn.Dense(c.hidden[0], name="fc1")(x))
        x = nn.relu(nn.Dense(c.hidden[1], name="fc2")(x))
        return nn.Dense(c.num_classes, name="head")(x), {"conv": conv_out, "pre_logits": x}


class LeNetBN(nn.Module):
    config: SmallConfig

    @nn.compact
    def __call__(self, x):
        c = self.config
        x = nn.relu(L.batch_norm(name="bn1")(L.conv(c.conv[0], 5, padding=2, name="conv1")(x)))
        x = L.max_pool(x, 2)
        x = nn.relu(L.batch_norm(name="bn2")(L.conv(c.conv[1], 5, padding=0, name="conv2")(x)))
        x = L.max_pool(x, 2)
        conv_out = x
        x = L.flatten_nchw(x)
        x = nn.relu(L.batch_norm(name="bn3")(nn.Dense(c.hidden[0], use_bias=False, name="fc1")(x)))
        x = nn.relu(nn.Dense(c.hidden[1], name="fc2")(x))
        return nn.Dense(c.num_classes, name="head")(x), {"conv": conv_out, "pre_logits": x}


def _build(config: SmallConfig) -> nn.Module:
    if config.kind == "mlp":
        return MLP(config)
    if config.kind == "lenet":
        return LeNet(config)
    if config.kind == "lenet_bn":
        return LeNetBN(config)
    raise ValueError(f"unknown small network kind {config.kind!r}")


def _input_spec(config: SmallConfig) -> InputSpec:
    mean = MNIST_MEAN * config.channels if config.channels == 1 else (0.5,) * config.channels
    std = MNIST_STD * config.channels if config.channels == 1 else (0.5,) * config.channels
    return InputSpec("image", "NHWC", (config.image_size, config.image_size, config.channels),
                     mean=mean, std=std)


register(Family(
    name="small",
    variants={
        "mlp": SmallConfig(kind="mlp"),
        "lenet": SmallConfig(kind="lenet", hidden=(120, 84)),
        "lenet_bn": SmallConfig(kind="lenet_bn", hidden=(120, 84), channels=3, conv=(16, 32)),
    },
    build=_build,
    input_spec=_input_spec,
))
