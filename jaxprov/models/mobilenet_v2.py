"""MobileNetV2 (Sandler et al., 2018, arXiv:1801.04381) exactly as torchvision 0.29 builds it (width 1.0).

Flax names carry torchvision's Sequential indices (`features.{n}`, `conv.{k}`, `classifier.1`), so the
converter is a plain rule table. The traps: blocks with expand ratio 1 have no expanding 1x1 conv,
which shifts their later `conv.{k}` indices down by one; activations are ReLU6; the projecting
1x1 conv is linear; only stride-1 blocks whose width does not change add the residual.
"""

from __future__ import annotations

import dataclasses

import flax.linen as nn

from jaxprov.models.registry import Family, register
from jaxprov.models import layers as L
from jaxprov.models.resnet import imagenet_input_spec

STEM_WIDTH, LAST_WIDTH = 32, 1280
# (expand ratio t, output channels c, blocks n, first stride s) per stage, as in the paper's Table 2.
SETTING = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2),
           (6, 320, 1, 1))


@dataclasses.dataclass(frozen=True)
class MobileNetV2Config:
    num_classes: int = 1000


def block_expansions() -> list[int]:
    """The expand ratio of each inverted-residual block, which sit at `features.1` onwards."""
    return [t for t, _, n, _ in SETTING for _ in range(n)]


class InvertedResidual(nn.Module):
    expand: int
    out: int
    stride: int

    @nn.compact
    def __call__(self, x):
        hidden, k, y = x.shape[-1] * self.expand, 0, x
        if self.expand != 1:
            y = nn.relu6(L.batch_norm("conv_0_1")(L.conv(hidden, 1, name="conv_0_0")(y)))
            k = 1
        y = L.conv(hidden, 3, self.stride, groups=hidden, name=f"conv_{k}_0")(y)
        y = nn.relu6(L.batch_norm(f"conv_{k}_1")(y))
        y = L.batch_norm(f"conv_{k + 2}")(L.conv(self.out, 1, name=f"conv_{k + 1}")(y))
        return x + y if self.stride == 1 and x.shape[-1] == self.out else y


class MobileNetV2(nn.Module):
    config: MobileNetV2Config

    @nn.compact
    def __call__(self, x):
        x = nn.relu6(L.batch_norm("features_0_1")(L.conv(STEM_WIDTH, 3, 2, name="features_0_0")(x)))
        feats, n = {"stem": x}, 1
        for stage, (t, c, blocks, s) in enumerate(SETTING, 1):
            for i in range(blocks):
                x = InvertedResidual(t, c, s if i == 0 else 1, name=f"features_{n}")(x)
                n += 1
            feats[f"stage{stage}"] = x
        x = nn.relu6(L.batch_norm(f"features_{n}_1")(L.conv(LAST_WIDTH, 1, name=f"features_{n}_0")(x)))
        feats["last_conv"] = x
        x = L.global_avg_pool(x)
        feats["pre_logits"] = x
        return nn.Dense(self.config.num_classes, name="classifier_1")(x), feats  # classifier.0 is Dropout


register(Family(name="mobilenet_v2", variants={"mobilenet_v2": MobileNetV2Config()}, build=MobileNetV2,
                input_spec=imagenet_input_spec))
