"""Rules for the CIFAR families: chenyaofo-style ResNets and VGG-BN, kuangliu/SDN-style MobileNet v1.

Detection keeps clear of look-alikes: torchvision ResNets have a layer4 and a 7x7 stem (here: a
3x3 stem of 16 and three stages), torchvision VGGs read 25088 features (here: 512), and the
small MLP / LeNet have a `head` (no CIFAR family does).
"""

from __future__ import annotations

import re

from converters.registry import SourceFamily, register_source
from converters.rules import torch_layer_rules
from jaxprov import models
from converters.torchvision import resnet_rules  # CIFAR ResNets use torchvision's block names
from jaxprov.models import cifar_mobilenet, cifar_resnet, cifar_vgg


def _vgg_rules(config):
    table = []
    for i in cifar_vgg.conv_indices(config):
        table += torch_layer_rules(rf"features\.{i}", f"features_{i}", "conv")
        table += torch_layer_rules(rf"features\.{i + 1}", f"features_{i + 1}", "bn")
    return table + [r for i in cifar_vgg.CLASSIFIER
                    for r in torch_layer_rules(rf"classifier\.{i}", f"classifier_{i}", "linear")]


def _mobilenet_rules():
    return (torch_layer_rules("conv1", "conv1", "conv") + torch_layer_rules("bn1", "bn1", "bn")
            + torch_layer_rules(r"layers\.(\d+)\.(conv[12])", r"layers_\1/\2", "conv")
            + torch_layer_rules(r"layers\.(\d+)\.(bn[12])", r"layers_\1/\2", "bn")
            + torch_layer_rules("linear", "linear", "linear"))


def rules(arch: str):
    """The rule table for any CIFAR arch key."""
    family, _, config = models.resolve(arch)
    if family.name == "cifar_resnet":
        return resnet_rules()
    if family.name == "cifar_vgg":
        return _vgg_rules(config)
    return _mobilenet_rules()


def _indices(shapes, pattern: str) -> list[int]:
    return sorted({int(m.group(1)) for k in shapes if (m := re.fullmatch(pattern, k))})


def _detect_resnet(shapes):
    stem, head = shapes.get("conv1.weight"), shapes.get("fc.weight")
    if stem is None or head is None or tuple(stem) != (cifar_resnet.WIDTHS[0], 3, 3, 3):
        return None
    stages = [_indices(shapes, rf"layer{s}\.(\d+)\.conv1\.weight") for s in (1, 2, 3, 4)]
    if stages[3] or not stages[0] or not stages[0] == stages[1] == stages[2]:
        return None
    depth = 6 * len(stages[0]) + 2
    variant = f"cifar_resnet{depth}"
    if variant not in cifar_resnet.VARIANTS:
        return models.canonical("cifar_resnet20", depth=depth, num_classes=head[0])
    return models.canonical(variant, num_classes=head[0])


def _detect_vgg(shapes):
    first, head = shapes.get("classifier.0.weight"), shapes.get("classifier.6.weight")
    if first is None or head is None or tuple(first) != (cifar_vgg.HIDDEN, cifar_vgg.HIDDEN):
        return None
    convs = [i for i in _indices(shapes, r"features\.(\d+)\.weight") if len(shapes[f"features.{i}.weight"]) == 4]
    depth = len(convs) + 3  # plus the three Linear layers
    if f"cifar_vgg{depth}_bn" not in cifar_vgg.VARIANTS or "features.1.running_mean" not in shapes:
        return None
    return models.canonical(f"cifar_vgg{depth}_bn", num_classes=head[0])


def _detect_mobilenet(shapes):
    stem, head = shapes.get("conv1.weight"), shapes.get("linear.weight")
    first = shapes.get("layers.0.conv1.weight")
    if stem is None or head is None or first is None or tuple(first) != (cifar_mobilenet.STEM, 1, 3, 3):
        return None
    return models.canonical("cifar_mobilenet", num_classes=head[0])


def detect(shapes):
    """A CIFAR arch key for a state dict's key -> shape table, or None if it is not one of ours."""
    for guess in (_detect_resnet, _detect_vgg, _detect_mobilenet):
        if (arch := guess(shapes)) is not None:
            return arch
    return None


register_source(SourceFamily("cifar", ("cifar_resnet", "cifar_vgg", "cifar_mobilenet"), detect, rules))
