"""VGG with BatchNorm for 32x32 inputs (Simonyan & Zisserman 2015; CIFAR head as in chenyaofo/SDN).

PyTorch layout: `features.N` exactly as torchvision's make_layers(cfg, batch_norm=True) (Conv2d at
N, with a bias despite the BatchNorm at N+1, ReLU at N+2; MaxPool2d(2) entries take an index too),
then classifier.0/3/6 = Linear(512, 512)-ReLU-Dropout-Linear(512, 512)-ReLU-Dropout-Linear(512,
num_classes). The trap: there is no adaptive average pool; five max pools take 32x32 to 1x1x512,
so the head reads 512 features (torchvision's ImageNet VGG reads 7*7*512 = 25088), and other input
sizes do not fit.

Features: "conv{k}" = ReLU output of the k-th conv; "block{k}" = SDN's conv block, i.e. conv{k}
followed by the max pool when one comes next (SDN's ICs read those: VGG-16 blocks 2, 4, 6, 7, 9,
10); "flat" (what the classifier reads) and "pre_logits" (what the last Linear reads).
"""

from __future__ import annotations

import dataclasses

import flax.linen as nn

from jaxprov.models.registry import Family, register
from jaxprov.models import layers as L
from jaxprov.models.cifar_resnet import cifar_input_spec

CFGS = {  # torchvision's configs A, B, D, E: ints are conv widths, "M" a 2x2 max pool
    11: (64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"),
    13: (64, 64, "M", 128, 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"),
    16: (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"),
    19: (64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M", 512, 512, 512, 512, "M"),
}
HIDDEN = 512
CLASSIFIER = (0, 3, 6)  # torch indices of the Linear layers in `classifier`


@dataclasses.dataclass(frozen=True)
class CifarVGGConfig:
    depth: int = 16
    num_classes: int = 10

    @property
    def cfg(self) -> tuple:
        if self.depth not in CFGS:
            raise ValueError(f"CIFAR VGG depth must be one of {sorted(CFGS)}, got {self.depth}")
        return CFGS[self.depth]


def conv_indices(config: CifarVGGConfig) -> list[int]:
    """torch `features` indices of the convolutions (each BatchNorm sits at index + 1)."""
    indices, i = [], 0
    for item in config.cfg:
        if item == "M":
            i += 1
        else:
            indices.append(i)
            i += 3
    return indices


class CifarVGG(nn.Module):
    config: CifarVGGConfig

    @nn.compact
    def __call__(self, x):
        c = self.config
        feats, i, k, cfg = {}, 0, 0, c.cfg
        for pos, item in enumerate(cfg):
            if item == "M":
                x = L.max_pool(x, 2)
                i += 1
            else:
                x = L.conv(item, 3, bias=True, name=f"features_{i}")(x)
                x = nn.relu(L.batch_norm(name=f"features_{i + 1}")(x))
                k, i = k + 1, i + 3
                feats[f"conv{k}"] = x
            if pos + 1 == len(cfg) or cfg[pos + 1] != "M":  # a pool belongs to the block before it
                feats[f"block{k}"] = x
        x = L.flatten_nchw(x)
        feats["flat"] = x
        # Dropout is the identity in inference.
        x = nn.relu(nn.Dense(HIDDEN, name="classifier_0")(x))
        x = nn.relu(nn.Dense(HIDDEN, name="classifier_3")(x))
        feats["pre_logits"] = x
        return nn.Dense(c.num_classes, name="classifier_6")(x), feats


VARIANTS = {f"cifar_vgg{d}_bn": CifarVGGConfig(depth=d) for d in CFGS}

register(Family(name="cifar_vgg", variants=VARIANTS, build=CifarVGG, input_spec=cifar_input_spec))
