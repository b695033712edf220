"""Shallow-Deep Network CIFAR MobileNet v1 (Kaya et al., ICML 2019), multi-exit (jaxprov.models.multi_exit).

Layout of the SDN code's MobileNet_SDN: `init_conv` (3x3 conv 32, BN, ReLU); `layers.{0..12}`
depthwise-separable blocks (`layers.0` 3x3 depthwise conv, `layers.1` BN, ReLU, `layers.3` 1x1 conv,
`layers.4` BN, ReLU), each optionally with an `output` InternalClassifier on the block's output;
`end_layers` (2x2 average pool, flatten, `end_layers.2` linear 1024 -> C). ICs after blocks 3, 5,
7, 9, 12 (1-based).
"""

from __future__ import annotations

import dataclasses

import flax.linen as nn

from jaxprov.models.registry import Family, register
from jaxprov.models import layers as L
from jaxprov.models.cifar_resnet import cifar_input_spec
from jaxprov.models.multi_exit import EXITS, run_segments, segment_blocks

STEM = 32
BLOCKS = ((64, 1), (128, 2), (128, 1), (256, 2), (256, 1), (512, 2), (512, 1), (512, 1), (512, 1), (512, 1),
          (512, 1), (1024, 2), (1024, 1))  # (out channels, stride)


@dataclasses.dataclass(frozen=True)
class SDNMobileNetConfig:
    num_classes: int = 10
    ics: tuple[int, ...] = (3, 5, 7, 9, 12)

    def check(self) -> None:
        if list(self.ics) != sorted(set(self.ics)) or not self.ics or self.ics[0] < 1 or self.ics[-1] >= len(BLOCKS):
            raise ValueError(f"SDN MobileNet ics must be increasing block numbers in 1..{len(BLOCKS) - 1}, "
                             f"got {self.ics}")


class Block(nn.Module):
    cin: int
    cout: int
    stride: int
    num_classes: int | None

    @nn.compact
    def __call__(self, x):
        x = nn.relu(L.batch_norm(name="layers_1")(L.conv(self.cin, 3, self.stride, groups=self.cin, name="layers_0")(x)))
        x = nn.relu(L.batch_norm(name="layers_4")(L.conv(self.cout, 1, padding=0, name="layers_3")(x)))
        logits = None if self.num_classes is None else L.InternalClassifier(self.num_classes, name="output")(x)
        return x, logits


class SDNMobileNet(nn.Module):
    config: SDNMobileNetConfig

    @property
    def num_exits(self) -> int:
        return len(self.config.ics) + 1

    def setup(self):
        c = self.config
        c.check()
        self.init_conv_0 = L.conv(STEM, 3)
        self.init_conv_1 = L.batch_norm()
        cins = [STEM] + [w for w, _ in BLOCKS[:-1]]
        self.layers = [Block(cin, w, s, c.num_classes if i + 1 in c.ics else None)
                       for i, (cin, (w, s)) in enumerate(zip(cins, BLOCKS))]
        self.end_layers_2 = nn.Dense(c.num_classes)

    def segment(self, k: int, h):
        if not 0 <= k < self.num_exits:
            raise ValueError(f"exit {k} of a {self.num_exits}-exit SDN MobileNet")
        if k == 0:
            h = nn.relu(self.init_conv_1(self.init_conv_0(h)))
        logits = None
        for b in segment_blocks(self.config.ics, len(self.layers), k):
            h, logits = self.layers[b](h)
        if k == self.num_exits - 1:
            logits = self.end_layers_2(L.flatten_nchw(L.avg_pool(h, 2)))
        return h, logits

    def __call__(self, x):
        states, exits = run_segments(self, x)
        return exits[:, -1], {"pre_logits": L.global_avg_pool(states[-1]), EXITS: exits}


register(Family(name="sdn_mobilenet", variants={"sdn_mobilenet": SDNMobileNetConfig()}, build=SDNMobileNet,
                input_spec=cifar_input_spec))
