"""Shallow-Deep Network CIFAR ResNets (Kaya et al., "Shallow-Deep Networks", ICML 2019): a CIFAR ResNet
(6n+2 layers, three stages of n basic blocks, 16/32/64 wide, projection shortcuts) with internal
classifiers after chosen blocks; a multi-exit model (jaxprov.models.multi_exit).

Layout of the SDN code's ResNet_SDN (so its checkpoints convert, converters/sdn.py): `init_conv`
(3x3 conv 16, BN, ReLU), `layers.{i}` blocks of `layers.0` (conv, BN, ReLU, conv, BN), `layers.1`
(the 1x1 conv + BN shortcut where the shape changes) and `output`, an `InternalClassifier` that reads
the block's sum before its last ReLU; `end_layers` (8x8 average pool, flatten, linear). SDN's
ResNet-56 ICs sit after blocks 4, 8, 12, 16, 20, 24 (1-based, of 27); for the ResNet-20 (9 blocks)
ours are after blocks 2, 4, 6, 8 (every other block; no published placement).
"""

from __future__ import annotations

import dataclasses

import flax.linen as nn

from jaxprov.models.registry import Family, register
from jaxprov.models import layers as L
from jaxprov.models.cifar_resnet import WIDTHS, cifar_input_spec
from jaxprov.models.multi_exit import EXITS, run_segments, segment_blocks


@dataclasses.dataclass(frozen=True)
class SDNResNetConfig:
    depth: int = 56
    num_classes: int = 10
    ics: tuple[int, ...] = (4, 8, 12, 16, 20, 24)  # 1-based blocks whose sum an internal classifier reads

    @property
    def blocks_per_stage(self) -> int:
        if self.depth < 8 or (self.depth - 2) % 6:
            raise ValueError(f"SDN ResNet depth must be 6n+2 with n >= 1, got {self.depth}")
        return (self.depth - 2) // 6

    def check(self) -> None:
        blocks = 3 * self.blocks_per_stage
        if list(self.ics) != sorted(set(self.ics)) or not self.ics or not 1 <= self.ics[0] or self.ics[-1] >= blocks:
            raise ValueError(f"SDN ResNet ics must be increasing block numbers in 1..{blocks - 1}, got {self.ics}")


class SDNBlock(nn.Module):
    features: int
    stride: int
    project: bool
    num_classes: int | None  # an internal classifier reads this block, or None

    @nn.compact
    def __call__(self, x):
        y = nn.relu(L.batch_norm(name="layers_0_1")(L.conv(self.features, 3, self.stride, name="layers_0_0")(x)))
        y = L.batch_norm(name="layers_0_4")(L.conv(self.features, 3, name="layers_0_3")(y))
        if self.project:
            x = L.batch_norm(name="layers_1_1")(L.conv(self.features, 1, self.stride, name="layers_1_0")(x))
        total = y + x
        logits = None if self.num_classes is None else L.InternalClassifier(self.num_classes, name="output")(total)
        return nn.relu(total), total, logits


class SDNResNet(nn.Module):
    config: SDNResNetConfig

    @property
    def num_exits(self) -> int:
        return len(self.config.ics) + 1

    def setup(self):
        c = self.config
        c.check()
        self.init_conv_0 = L.conv(WIDTHS[0], 3)
        self.init_conv_1 = L.batch_norm()
        blocks, channels, k = [], WIDTHS[0], 0
        for s, width in enumerate(WIDTHS):
            for i in range(c.blocks_per_stage):
                k += 1
                stride = 2 if s > 0 and i == 0 else 1
                blocks.append(SDNBlock(width, stride, stride != 1 or channels != width,
                                       c.num_classes if k in c.ics else None))
                channels = width
        self.layers = blocks
        self.end_layers_2 = nn.Dense(c.num_classes)

    def segment(self, k: int, h):
        if not 0 <= k < self.num_exits:
            raise ValueError(f"exit {k} of a {self.num_exits}-exit SDN ResNet")
        if k == 0:
            h = nn.relu(self.init_conv_1(self.init_conv_0(h)))
        logits = None
        for b in segment_blocks(self.config.ics, len(self.layers), k):
            h, _, logits = self.layers[b](h)
        if k == self.num_exits - 1:
            logits = self.end_layers_2(L.global_avg_pool(h))  # AvgPool2d(8) on the 8x8 map, flatten
        return h, logits

    def __call__(self, x):
        states, exits = run_segments(self, x)
        return exits[:, -1], {"pre_logits": L.global_avg_pool(states[-1]), EXITS: exits}


VARIANTS = {"sdn_resnet56": SDNResNetConfig(), "sdn_resnet20": SDNResNetConfig(depth=20, ics=(2, 4, 6, 8))}

register(Family(name="sdn_resnet", variants=VARIANTS, build=SDNResNet, input_spec=cifar_input_spec))
