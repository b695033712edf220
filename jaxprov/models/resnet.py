"""ResNet (He et al., 2016, arXiv:1512.03385) exactly as torchvision 0.29 builds it ("ResNet v1.5").

Module names mirror torchvision's (conv1, bn1, layer{s}.{i}.conv{k}/bn{k}/downsample.{0,1}, fc), so the
converter is a plain rule table. The traps: torchvision's Bottleneck puts the stride on the 3x3 conv
(v1.5), not on the first 1x1 as the paper does; the stem max-pool pads with -inf, not zeros; the
shortcut gets a 1x1 conv + BN exactly when the stride or the channel count changes.
"""

from __future__ import annotations

import dataclasses

import flax.linen as nn

from jaxprov.model import InputSpec
from jaxprov.models.registry import Family, register
from jaxprov.models import layers as L

IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def imagenet_input_spec(_config=None) -> InputSpec:
    """224x224 RGB NHWC, normalised with the ImageNet mean/std that torchvision's weights expect."""
    return InputSpec("image", "NHWC", (224, 224, 3), mean=IMAGENET_MEAN, std=IMAGENET_STD)


@dataclasses.dataclass(frozen=True)
class ResNetConfig:
    stage_sizes: tuple[int, ...] = (2, 2, 2, 2)
    bottleneck: bool = False
    num_classes: int = 1000


class Block(nn.Module):
    """BasicBlock (two 3x3) or Bottleneck (1x1, 3x3 with the stride, 1x1 to 4x width)."""

    planes: int
    stride: int
    bottleneck: bool

    @nn.compact
    def __call__(self, x):
        p, s = self.planes, self.stride
        if self.bottleneck:
            convs = [L.conv(p, 1, name="conv1"), L.conv(p, 3, s, name="conv2"), L.conv(4 * p, 1, name="conv3")]
        else:
            convs = [L.conv(p, 3, s, name="conv1"), L.conv(p, 3, name="conv2")]
        y = x
        for k, conv in enumerate(convs, 1):
            y = L.batch_norm(f"bn{k}")(conv(y))
            y = nn.relu(y) if k < len(convs) else y
        shortcut = x
        if s != 1 or x.shape[-1] != y.shape[-1]:
            shortcut = L.batch_norm("downsample_1")(L.conv(y.shape[-1], 1, s, name="downsample_0")(x))
        return nn.relu(y + shortcut)


class ResNet(nn.Module):
    config: ResNetConfig

    @nn.compact
    def __call__(self, x):
        c = self.config
        x = nn.relu(L.batch_norm("bn1")(L.conv(64, 7, 2, name="conv1")(x)))
        x = L.max_pool(x, 3, 2, padding=1)
        feats = {"stem": x}
        for s, size in enumerate(c.stage_sizes):
            for i in range(size):
                stride = 2 if s > 0 and i == 0 else 1
                x = Block(64 * 2 ** s, stride, c.bottleneck, name=f"layer{s + 1}_{i}")(x)
            feats[f"layer{s + 1}"] = x
        x = L.global_avg_pool(x)
        feats["pre_logits"] = x
        return nn.Dense(c.num_classes, name="fc")(x), feats


VARIANTS = {
    "resnet18": ResNetConfig((2, 2, 2, 2), bottleneck=False),
    "resnet34": ResNetConfig((3, 4, 6, 3), bottleneck=False),
    "resnet50": ResNetConfig((3, 4, 6, 3), bottleneck=True),
    "resnet101": ResNetConfig((3, 4, 23, 3), bottleneck=True),
    "resnet152": ResNetConfig((3, 8, 36, 3), bottleneck=True),
}

register(Family(name="resnet", variants=VARIANTS, build=ResNet, input_spec=imagenet_input_spec))
