"""VGG (Simonyan & Zisserman, 2015, arXiv:1409.1556) exactly as torchvision 0.29 builds it.

Flax names carry torchvision's `features.{i}` / `classifier.{i}` Sequential indices (ReLUs and pools
take indices too), so the converter is a plain rule table. The traps: convs keep their bias even
with BatchNorm; AdaptiveAvgPool2d((7, 7)) replicates or averages uneven bins at input sizes other
than 224; the first classifier Linear reads the 512x7x7 map flattened in NCHW order.
"""

from __future__ import annotations

import dataclasses

import flax.linen as nn

from jaxprov.models.registry import Family, register
from jaxprov.models import layers as L
from jaxprov.models.resnet import imagenet_input_spec

WIDTHS = (64, 128, 256, 512, 512)


@dataclasses.dataclass(frozen=True)
class VGGConfig:
    stage_depths: tuple[int, ...] = (1, 1, 2, 2, 2)  # 3x3 convs per stage, each stage ends in a 2x2 max-pool
    batch_norm: bool = False
    num_classes: int = 1000


def feature_indices(config: VGGConfig) -> list[int]:
    """torchvision's `features` index of every conv (its BatchNorm, if any, is the next index)."""
    indices, i = [], 0
    for depth in config.stage_depths:
        for _ in range(depth):
            indices.append(i)
            i += 3 if config.batch_norm else 2
        i += 1  # the stage's max-pool
    return indices


class VGG(nn.Module):
    config: VGGConfig

    @nn.compact
    def __call__(self, x):
        c = self.config
        feats, convs = {}, iter(feature_indices(c))
        for s, (depth, width) in enumerate(zip(c.stage_depths, WIDTHS)):
            for _ in range(depth):
                i = next(convs)
                x = L.conv(width, 3, bias=True, name=f"features_{i}")(x)
                x = nn.relu(L.batch_norm(f"features_{i + 1}")(x) if c.batch_norm else x)
                feats.setdefault("stem", x)
            x = L.max_pool(x, 2)
            feats[f"stage{s + 1}"] = x
        x = L.flatten_nchw(L.adaptive_avg_pool(x, (7, 7)))
        x = nn.relu(nn.Dense(4096, name="classifier_0")(x))  # Dropout is the identity in eval mode
        x = nn.relu(nn.Dense(4096, name="classifier_3")(x))
        feats["pre_logits"] = x
        return nn.Dense(c.num_classes, name="classifier_6")(x), feats


STAGE_DEPTHS = {11: (1, 1, 2, 2, 2), 13: (2, 2, 2, 2, 2), 16: (2, 2, 3, 3, 3), 19: (2, 2, 4, 4, 4)}
VARIANTS = {f"vgg{depth}{suffix}": VGGConfig(stages, batch_norm=bn)
            for depth, stages in STAGE_DEPTHS.items() for suffix, bn in (("", False), ("_bn", True))}

register(Family(name="vgg", variants=VARIANTS, build=VGG, input_spec=imagenet_input_spec))
