"""Rules and detection for torchvision's ResNet, VGG and MobileNetV2 state dicts (torchvision 0.29 keys).

Detection reads structure from key names alone (block counts, Sequential indices, running stats)
and the head's shape for num_classes; it declines (None) on look-alikes it does not convert, such
as ResNeXt / Wide ResNet (grouped or wider bottlenecks) and AlexNet (`classifier.1`, 11x11 stem).
"""

from __future__ import annotations

import re

from converters.registry import SourceFamily, register_source
from converters.rules import torch_layer_rules
from jaxprov import models
from jaxprov.models import mobilenet_v2, resnet, vgg


def resnet_rules() -> list:
    """One table for every depth: block indices are back-references, and the plan checks them all."""
    block = r"layer(\d)\.(\d+)"
    return (torch_layer_rules("conv1", "conv1", "conv") + torch_layer_rules("bn1", "bn1", "bn")
            + torch_layer_rules(rf"{block}\.conv(\d)", r"layer\1_\2/conv\3", "conv")
            + torch_layer_rules(rf"{block}\.bn(\d)", r"layer\1_\2/bn\3", "bn")
            + torch_layer_rules(rf"{block}\.downsample\.0", r"layer\1_\2/downsample_0", "conv")
            + torch_layer_rules(rf"{block}\.downsample\.1", r"layer\1_\2/downsample_1", "bn")
            + torch_layer_rules("fc", "fc", "linear"))


def _vgg_rules(config) -> list:
    table = []
    for i in vgg.feature_indices(config):
        table += torch_layer_rules(rf"features\.{i}", f"features_{i}", "conv")
        if config.batch_norm:
            table += torch_layer_rules(rf"features\.{i + 1}", f"features_{i + 1}", "bn")
    for i in (0, 3, 6):
        table += torch_layer_rules(rf"classifier\.{i}", f"classifier_{i}", "linear")
    return table


def _mobilenet_v2_rules() -> list:
    last = len(mobilenet_v2.block_expansions()) + 1
    table = []
    for n in (0, last):  # Conv2dNormActivation: .0 conv, .1 BatchNorm
        table += torch_layer_rules(rf"features\.{n}\.0", f"features_{n}_0", "conv")
        table += torch_layer_rules(rf"features\.{n}\.1", f"features_{n}_1", "bn")
    for n, expand in enumerate(mobilenet_v2.block_expansions(), 1):
        k = 2 if expand != 1 else 1  # the projecting conv's index: no expanding conv when expand == 1
        table += torch_layer_rules(rf"features\.{n}\.conv\.(\d)\.0", rf"features_{n}/conv_\1_0", "conv")
        table += torch_layer_rules(rf"features\.{n}\.conv\.(\d)\.1", rf"features_{n}/conv_\1_1", "bn")
        table += torch_layer_rules(rf"features\.{n}\.conv\.{k}", f"features_{n}/conv_{k}", "conv")
        table += torch_layer_rules(rf"features\.{n}\.conv\.{k + 1}", f"features_{n}/conv_{k + 1}", "bn")
    return table + torch_layer_rules(r"classifier\.1", "classifier_1", "linear")


def rules(arch: str) -> list:
    """The rule table for a ResNet, VGG or MobileNetV2 arch key."""
    family, _, config = models.resolve(arch)
    if family.name == "vgg":
        return _vgg_rules(config)
    return resnet_rules() if family.name == "resnet" else _mobilenet_v2_rules()


def _variant(variants, num_classes: int, **structure) -> str | None:
    """The variant whose structural fields equal `structure`, keyed with num_classes; None if none does."""
    for name, config in variants.items():
        if all(getattr(config, k) == v for k, v in structure.items()):
            return models.canonical(name, num_classes=num_classes)
    return None


def _detect_resnet(shapes) -> str | None:
    if "fc.weight" not in shapes or shapes.get("conv1.weight") != (64, 3, 7, 7):
        return None
    if shapes.get("layer1.0.conv2.weight") != (64, 64, 3, 3):  # ResNeXt is grouped, Wide ResNet wider
        return None
    counts = [len({m.group(1) for k in shapes if (m := re.fullmatch(rf"layer{s}\.(\d+)\.conv1\.weight", k))})
              for s in range(1, 5)]
    bottleneck = "layer1.0.conv3.weight" in shapes
    return _variant(resnet.VARIANTS, shapes["fc.weight"][0], stage_sizes=tuple(counts), bottleneck=bottleneck)


def _detect_vgg(shapes) -> str | None:
    if not {"features.0.weight", "classifier.0.weight", "classifier.3.weight", "classifier.6.weight"} <= set(shapes):
        return None
    convs = sorted(int(m.group(1)) for k, s in shapes.items()
                   if (m := re.fullmatch(r"features\.(\d+)\.weight", k)) and len(s) == 4)
    if not convs or convs[0] != 0:
        return None
    batch_norm = "features.1.running_mean" in shapes
    step = 3 if batch_norm else 2
    depths = [1]
    for a, b in zip(convs, convs[1:]):
        if b - a == step:
            depths[-1] += 1
        elif b - a == step + 1:  # a max-pool in between starts the next stage
            depths.append(1)
        else:
            return None
    return _variant(vgg.VARIANTS, shapes["classifier.6.weight"][0], stage_depths=tuple(depths),
                    batch_norm=batch_norm)


def _detect_mobilenet_v2(shapes) -> str | None:
    last = len(mobilenet_v2.block_expansions()) + 1
    if "features.1.conv.0.0.weight" not in shapes or "classifier.1.weight" not in shapes:
        return None
    width = (mobilenet_v2.STEM_WIDTH, 3, 3, 3), (mobilenet_v2.LAST_WIDTH, mobilenet_v2.SETTING[-1][1], 1, 1)
    if (shapes.get("features.0.0.weight"), shapes.get(f"features.{last}.0.weight")) != width:
        return None  # another width multiplier or block setting
    return models.canonical("mobilenet_v2", num_classes=shapes["classifier.1.weight"][0])


def detect(shapes) -> str | None:
    """The torchvision ResNet / VGG / MobileNetV2 arch key these shapes suggest, or None."""
    for guess in (_detect_resnet, _detect_vgg, _detect_mobilenet_v2):
        if (arch := guess(shapes)) is not None:
            return arch
    return None


register_source(SourceFamily("torchvision", ("resnet", "vgg", "mobilenet_v2"), detect, rules))
