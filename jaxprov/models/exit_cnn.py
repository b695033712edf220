"""A small multi-exit CNN for MNIST-size inputs, the network that trains on a CPU in seconds (the contract
is jaxprov.models.multi_exit's).

Ours (no published layout). Shallow-Deep Networks place their internal classifiers at equal
fractions of the compute; a LeNet cannot be cut so (its second convolution is most of its cost, so
exits after it differ by microseconds), hence equal segments: segment 0 is a 3x3 stride-2 stem
(28 -> 14) and a 3x3 convolution, segments 1..K-1 one 3x3 convolution each, all `width` wide with
ReLU at 14x14. An SDN internal classifier (`layers.InternalClassifier`: mixed 3x3 pool to 4x4,
linear) reads each of the first K - 1 segments; the last is read by a 3x3 average pool to 4x4,
flatten (NCHW order) and `head` (a global average pool trained too slowly for a CPU zoo). Time per exit then grows in equal steps, which timing fingerprints need.
"""

from __future__ import annotations

import dataclasses

import flax.linen as nn

from jaxprov.model import InputSpec
from jaxprov.models.registry import Family, register
from jaxprov.models import layers as L
from jaxprov.models.multi_exit import EXITS, run_segments
from jaxprov.models.small import MNIST_MEAN, MNIST_STD


@dataclasses.dataclass(frozen=True)
class ExitCNNConfig:
    num_classes: int = 10
    width: int = 16
    exits: int = 4


class ExitCNN(nn.Module):
    config: ExitCNNConfig

    @property
    def num_exits(self) -> int:
        return self.config.exits

    def setup(self):
        c = self.config
        if c.exits < 2:
            raise ValueError(f"a multi-exit CNN needs at least 2 exits, got {c.exits}")
        self.stem = L.conv(c.width, 3, stride=2, bias=True)
        self.convs = [L.conv(c.width, 3, bias=True) for _ in range(c.exits)]
        self.ics = [L.InternalClassifier(c.num_classes) for _ in range(c.exits - 1)]
        self.head = nn.Dense(c.num_classes)

    def segment(self, k: int, h):
        if not 0 <= k < self.config.exits:
            raise ValueError(f"exit {k} of a {self.config.exits}-exit CNN")
        if k == 0:
            h = nn.relu(self.stem(h))
        h = nn.relu(self.convs[k](h))
        return h, (self.ics[k](h) if k < self.config.exits - 1 else self.head(L.flatten_nchw(L.avg_pool(h, 3))))

    def __call__(self, x):
        states, exits = run_segments(self, x)
        feats = {f"segment{k}": h for k, h in enumerate(states)}
        feats["pre_logits"] = L.global_avg_pool(states[-1])
        feats[EXITS] = exits
        return exits[:, -1], feats


def _input_spec(config: ExitCNNConfig) -> InputSpec:
    return InputSpec("image", "NHWC", (28, 28, 1), mean=MNIST_MEAN, std=MNIST_STD)


register(Family(name="exit_cnn", variants={"cnn_exits": ExitCNNConfig()}, build=ExitCNN, input_spec=_input_spec))
