"""Rules for Shallow-Deep Network checkpoints (the SDN code's ResNet_SDN, VGG_SDN and MobileNet_SDN state
dicts; layouts in jaxprov/models/sdn_resnet.py, sdn_vgg.py, sdn_mobilenet.py). Detection: SDN's
`layers.{i}.layers` nesting and `end_layers` head (no other family has them); the ResNet's depth
from its block count; the internal classifiers' positions from the blocks holding an
`output.linear`."""

from __future__ import annotations

import re

from converters.registry import SourceFamily, register_source
from converters.rules import Rule, torch_layer_rules
from jaxprov import models
from jaxprov.models import sdn_mobilenet, sdn_vgg

BLOCK = r"layers\.(\d+)"


def _ic_rules():
    return ([Rule(rf"{BLOCK}\.output\.alpha", r"params/layers_\1/output/alpha")]
            + torch_layer_rules(rf"{BLOCK}\.output\.linear", r"layers_\1/output/linear", "linear"))


def rules(arch: str):
    family, _, _ = models.resolve(arch)
    if family.name == "sdn_resnet":
        # layers.0 = (conv, BN, ReLU, conv, BN), layers.1 = the shortcut's (conv, BN)
        return (torch_layer_rules(r"init_conv\.0", "init_conv_0", "conv")
                + torch_layer_rules(r"init_conv\.1", "init_conv_1", "bn")
                + torch_layer_rules(rf"{BLOCK}\.layers\.([01])\.([03])", r"layers_\1/layers_\2_\3", "conv")
                + torch_layer_rules(rf"{BLOCK}\.layers\.([01])\.([14])", r"layers_\1/layers_\2_\3", "bn")
                + _ic_rules() + torch_layer_rules(r"end_layers\.2", "end_layers_2", "linear"))
    if family.name == "sdn_vgg":
        convs = "|".join(str(i) for i in range(len(sdn_vgg.CHANNELS)))
        fc = len(sdn_vgg.CHANNELS)
        return (torch_layer_rules(rf"layers\.({convs})\.layers\.0", r"layers_\1/layers_0", "conv")
                + torch_layer_rules(rf"layers\.({convs})\.layers\.1", r"layers_\1/layers_1", "bn")
                + torch_layer_rules(rf"layers\.{fc}\.layers\.1", f"layers_{fc}/layers_1", "linear")
                + _ic_rules() + torch_layer_rules(r"end_layers\.0", "end_layers_0", "linear")
                + torch_layer_rules(r"end_layers\.2", "end_layers_2", "linear"))
    return (torch_layer_rules(r"init_conv\.0", "init_conv_0", "conv")
            + torch_layer_rules(r"init_conv\.1", "init_conv_1", "bn")
            + torch_layer_rules(rf"{BLOCK}\.layers\.([03])", r"layers_\1/layers_\2", "conv")
            + torch_layer_rules(rf"{BLOCK}\.layers\.([14])", r"layers_\1/layers_\2", "bn")
            + _ic_rules() + torch_layer_rules(r"end_layers\.2", "end_layers_2", "linear"))


def detect(shapes):
    head = shapes.get("end_layers.2.weight")
    if head is None:
        return None
    ics = tuple(sorted(int(m.group(1)) + 1 for k in shapes
                       if (m := re.fullmatch(r"layers\.(\d+)\.output\.linear\.weight", k))))
    if "layers.0.layers.0.0.weight" in shapes and "init_conv.0.weight" in shapes:
        blocks = {int(m.group(1)) for k in shapes if (m := re.fullmatch(r"layers\.(\d+)\.layers\.0\.0\.weight", k))}
        if not blocks or len(blocks) % 3:
            return None
        depth = 2 * len(blocks) + 2
        return models.canonical("sdn_resnet56" if depth == 56 else "sdn_resnet20", depth=depth,
                                num_classes=head[0], ics=ics)
    first = shapes.get("layers.0.layers.0.weight")
    if first is None:
        return None
    if "init_conv.0.weight" in shapes and tuple(first) == (sdn_mobilenet.STEM, 1, 3, 3):
        return models.canonical("sdn_mobilenet", num_classes=head[0], ics=ics)
    if "end_layers.0.weight" in shapes and len(first) == 4 and first[1] == 3:
        return models.canonical("sdn_vgg16_bn", num_classes=head[0], ics=ics)
    return None


register_source(SourceFamily("sdn", ("sdn_resnet", "sdn_vgg", "sdn_mobilenet"), detect, rules))
