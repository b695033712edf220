"""Rules for jaxprov's small networks (MLP, LeNet) as laid out in PyTorch by tests/torch_reference.py."""

from __future__ import annotations

import re

from converters.registry import SourceFamily, register_source
from converters.rules import torch_layer_rules
from jaxprov import models


def rules(arch: str):
    _, _, config = models.resolve(arch)
    if config.kind == "mlp":
        table = [r for i in range(len(config.hidden)) for r in torch_layer_rules(rf"layers\.{i}", f"layers_{i}", "linear")]
    else:
        table = [r for name in ("conv1", "conv2") for r in torch_layer_rules(name, name, "conv")]
        table += [r for name in ("fc1", "fc2") for r in torch_layer_rules(name, name, "linear")]
    return table + torch_layer_rules("head", "head", "linear")


def detect(shapes):
    keys = set(shapes)
    if "head.weight" not in keys:
        return None
    classes = shapes["head.weight"][0]
    if {"conv1.weight", "conv2.weight", "fc1.weight", "fc2.weight"} <= keys:
        c, h = shapes["conv1.weight"][1], shapes["fc1.weight"][0]
        side = int(round((shapes["fc1.weight"][1] / 16) ** 0.5)) * 4 + 8  # pad-2 5x5, pool, 5x5, pool
        return models.canonical("lenet", num_classes=classes, channels=c, image_size=side,
                                hidden=(h, shapes["fc2.weight"][0]))
    layers = sorted(int(m.group(1)) for k in keys if (m := re.fullmatch(r"layers\.(\d+)\.weight", k)))
    if layers and layers == list(range(len(layers))):
        hidden = tuple(shapes[f"layers.{i}.weight"][0] for i in layers)
        features = shapes["layers.0.weight"][1]
        for channels in (1, 3):  # MNIST-like grey or colour square images
            side = int(round((features / channels) ** 0.5))
            if side * side * channels == features:
                return models.canonical("mlp", num_classes=classes, hidden=hidden, image_size=side,
                                        channels=channels)
    return None


register_source(SourceFamily("small", ("small",), detect, rules))
