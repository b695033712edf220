"""CIFAR ResNets (He et al. 2016, sec. 4.2): 6n+2 layers, three stages of n basic blocks, 16/32/64 wide.

Layout of chenyaofo/pytorch-cifar-models and the Shallow-Deep Networks code: conv1 (3x3, 16) + bn1
+ ReLU, layer1..layer3 of `BasicBlock`s (conv1/bn1/conv2/bn2, and downsample.0/.1 = conv1x1+BN
where the shape changes), global average pool, fc. The trap: the paper's CIFAR nets use a
parameter-free zero-padding shortcut ("option A", e.g. akamaster's code); this family is the
projection variant ("option B"), which is what the pretrained CIFAR zoos and SDN checkpoints hold.

Features: "stem", "block{k}" (k = 1..3n in forward order), "block{k}_sum" (the residual sum
before the block's last ReLU, which SDN's internal classifiers read), "layer{s}" (stage outputs)
and "pre_logits". SDN's ResNet-56 ICs sit after blocks 4, 8, 12, 16, 20, 24.
"""

from __future__ import annotations

import dataclasses

import flax.linen as nn

from jaxprov.model import InputSpec
from jaxprov.models.registry import Family, register
from jaxprov.models import layers as L

CIFAR_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR_STD = (0.2470, 0.2435, 0.2616)
WIDTHS = (16, 32, 64)


def cifar_input_spec(config) -> InputSpec:
    """32x32 RGB in CIFAR-normalised space, shared by every CIFAR family."""
    return InputSpec("image", "NHWC", (32, 32, 3), mean=CIFAR_MEAN, std=CIFAR_STD)


@dataclasses.dataclass(frozen=True)
class CifarResNetConfig:
    depth: int = 20  # 6n + 2
    num_classes: int = 10

    @property
    def blocks_per_stage(self) -> int:
        if self.depth < 8 or (self.depth - 2) % 6:
            raise ValueError(f"CIFAR ResNet depth must be 6n+2 with n >= 1, got {self.depth}")
        return (self.depth - 2) // 6


class BasicBlock(nn.Module):
    features: int
    stride: int
    project: bool

    @nn.compact
    def __call__(self, x):
        y = nn.relu(L.batch_norm(name="bn1")(L.conv(self.features, 3, self.stride, name="conv1")(x)))
        y = L.batch_norm(name="bn2")(L.conv(self.features, 3, name="conv2")(y))
        if self.project:
            x = L.batch_norm(name="downsample_1")(L.conv(self.features, 1, self.stride, name="downsample_0")(x))
        total = y + x
        return nn.relu(total), total


class CifarResNet(nn.Module):
    config: CifarResNetConfig

    @nn.compact
    def __call__(self, x):
        c = self.config
        x = nn.relu(L.batch_norm(name="bn1")(L.conv(WIDTHS[0], 3, name="conv1")(x)))
        feats, k, channels = {"stem": x}, 0, WIDTHS[0]
        for s, width in enumerate(WIDTHS, start=1):
            for i in range(c.blocks_per_stage):
                stride = 2 if s > 1 and i == 0 else 1
                block = BasicBlock(width, stride, project=stride != 1 or channels != width, name=f"layer{s}_{i}")
                x, total = block(x)
                channels, k = width, k + 1
                feats[f"block{k}"], feats[f"block{k}_sum"] = x, total
            feats[f"layer{s}"] = x
        x = L.global_avg_pool(x)
        feats["pre_logits"] = x
        return nn.Dense(c.num_classes, name="fc")(x), feats


VARIANTS = {f"cifar_resnet{d}": CifarResNetConfig(depth=d) for d in (20, 32, 44, 56, 110)}

register(Family(name="cifar_resnet", variants=VARIANTS, build=CifarResNet, input_spec=cifar_input_spec))
