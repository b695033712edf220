"""MobileNet v1 for CIFAR (Howard et al. 2017), the variant of kuangliu/pytorch-cifar and the SDN code.

PyTorch layout (kuangliu's): conv1 (3x3, 32, stride 1) + bn1 + ReLU; layers.{i} for the 13
depthwise-separable blocks, each conv1 (3x3 depthwise, groups = channels) + bn1 + ReLU, then
conv2 (1x1 pointwise) + bn2 + ReLU; global average pool; linear. The trap: the stem keeps stride 1
(ImageNet MobileNet uses 2), so 32x32 inputs end as 2x2x1024 maps; the originals pool with
AvgPool2d(2), which equals the global average used here only at that size, i.e. 32x32 inputs.

Features: "stem", "block{k}" (k = 1..13, each block's ReLU output; SDN's ICs read blocks 3, 5, 7,
9, 12) and "pre_logits".
"""

from __future__ import annotations

import dataclasses

import flax.linen as nn

from jaxprov.models.registry import Family, register
from jaxprov.models import layers as L
from jaxprov.models.cifar_resnet import cifar_input_spec

STEM = 32
# Output width of each block; (width, 2) strides its depthwise conv.
CFG = (64, (128, 2), 128, (256, 2), 256, (512, 2), 512, 512, 512, 512, 512, (1024, 2), 1024)


@dataclasses.dataclass(frozen=True)
class CifarMobileNetConfig:
    num_classes: int = 10


class Block(nn.Module):
    features: int
    stride: int

    @nn.compact
    def __call__(self, x):
        channels = x.shape[-1]
        x = L.conv(channels, 3, self.stride, groups=channels, name="conv1")(x)
        x = nn.relu(L.batch_norm(name="bn1")(x))
        return nn.relu(L.batch_norm(name="bn2")(L.conv(self.features, 1, name="conv2")(x)))


class CifarMobileNet(nn.Module):
    config: CifarMobileNetConfig

    @nn.compact
    def __call__(self, x):
        x = nn.relu(L.batch_norm(name="bn1")(L.conv(STEM, 3, name="conv1")(x)))
        feats = {"stem": x}
        for i, item in enumerate(CFG):
            width, stride = item if isinstance(item, tuple) else (item, 1)
            x = Block(width, stride, name=f"layers_{i}")(x)
            feats[f"block{i + 1}"] = x
        x = L.global_avg_pool(x)
        feats["pre_logits"] = x
        return nn.Dense(self.config.num_classes, name="linear")(x), feats


register(Family(name="cifar_mobilenet", variants={"cifar_mobilenet": CifarMobileNetConfig()},
                build=CifarMobileNet, input_spec=cifar_input_spec))
