"""Shallow-Deep Network CIFAR VGG-16-BN (Kaya et al., ICML 2019), multi-exit (jaxprov.models.multi_exit).

Layout of the SDN code's VGG_SDN: `layers.{0..12}` conv blocks (3x3 conv with bias, BN, ReLU, and a
2x2 max-pool after convs 2, 4, 7, 10, 13), each optionally with an `output` InternalClassifier on
the block's output; `layers.13` the first fully connected block (flatten, linear 512, ReLU,
dropout); `end_layers` (linear 512, dropout, linear C: no ReLU between them, as in the SDN code).
ICs after convs 2, 4, 6, 7, 9, 10 (1-based). Dropout is inactive (inference and our training alike).
"""

from __future__ import annotations

import dataclasses

import flax.linen as nn

from jaxprov.models.registry import Family, register
from jaxprov.models import layers as L
from jaxprov.models.cifar_resnet import cifar_input_spec
from jaxprov.models.multi_exit import EXITS, run_segments, segment_blocks

CHANNELS = (64, 64, 128, 128, 256, 256, 256, 512, 512, 512, 512, 512, 512)
POOLED = (2, 4, 7, 10, 13)  # 1-based convs followed by a 2x2 max-pool
HIDDEN = 512


@dataclasses.dataclass(frozen=True)
class SDNVGGConfig:
    num_classes: int = 10
    ics: tuple[int, ...] = (2, 4, 6, 7, 9, 10)  # 1-based convs whose block output an IC reads

    def check(self) -> None:
        if list(self.ics) != sorted(set(self.ics)) or not self.ics or self.ics[0] < 1 or self.ics[-1] > len(CHANNELS):
            raise ValueError(f"SDN VGG ics must be increasing conv numbers in 1..{len(CHANNELS)}, got {self.ics}")


class ConvBlock(nn.Module):
    features: int
    pool: bool
    num_classes: int | None

    @nn.compact
    def __call__(self, x):
        x = nn.relu(L.batch_norm(name="layers_1")(L.conv(self.features, 3, bias=True, name="layers_0")(x)))
        if self.pool:
            x = L.max_pool(x, 2)
        logits = None if self.num_classes is None else L.InternalClassifier(self.num_classes, name="output")(x)
        return x, logits


class FcBlock(nn.Module):
    @nn.compact
    def __call__(self, x):
        return nn.relu(nn.Dense(HIDDEN, name="layers_1")(L.flatten_nchw(x))), None


class SDNVGG(nn.Module):
    config: SDNVGGConfig

    @property
    def num_exits(self) -> int:
        return len(self.config.ics) + 1

    def setup(self):
        c = self.config
        c.check()
        self.layers = [ConvBlock(w, i + 1 in POOLED, c.num_classes if i + 1 in c.ics else None)
                       for i, w in enumerate(CHANNELS)] + [FcBlock()]
        self.end_layers_0 = nn.Dense(HIDDEN)
        self.end_layers_2 = nn.Dense(c.num_classes)

    def segment(self, k: int, h):
        if not 0 <= k < self.num_exits:
            raise ValueError(f"exit {k} of a {self.num_exits}-exit SDN VGG")
        logits = None
        for b in segment_blocks(self.config.ics, len(self.layers), k):
            h, logits = self.layers[b](h)
        if k == self.num_exits - 1:
            logits = self.end_layers_2(self.end_layers_0(h))
        return h, logits

    def __call__(self, x):
        states, exits = run_segments(self, x)
        return exits[:, -1], {"pre_logits": states[-1], EXITS: exits}


register(Family(name="sdn_vgg", variants={"sdn_vgg16_bn": SDNVGGConfig()}, build=SDNVGG, input_spec=cifar_input_spec))
