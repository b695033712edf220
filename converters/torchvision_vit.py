"""Rules and detection for torchvision's VisionTransformer (vit_b_16 ... vit_h_14).

The state dict fixes patch size, image size (from the position-embedding length), widths, depth
and classes, but not the number of attention heads: detection takes it from the torchvision
variant with the same widths and gives up (None) on unknown widths rather than guess a count that
would load cleanly and compute something else. Conv-stem and representation-layer ViTs have keys
this table lacks, so they are not detected either.
"""

from __future__ import annotations

import math
import re

from converters.registry import SourceFamily, register_source
from converters.rules import Rule, torch_layer_rules
from jaxprov import models

_LAYER = re.compile(r"encoder\.layers\.encoder_layer_(\d+)\.ln_1\.weight")


def rules(arch: str) -> list[Rule]:
    del arch  # one table for every variant: layer indices are back-references
    s, t = r"encoder\.layers\.encoder_layer_(\d+)", r"encoder/encoder_layer_\1"
    table = torch_layer_rules("conv_proj", "conv_proj", "conv")
    table += [Rule("class_token", "params/class_token"),
              Rule(r"encoder\.pos_embedding", "params/encoder/pos_embedding"),
              Rule(rf"{s}\.self_attention\.in_proj_weight", rf"params/{t}/self_attention/in_proj/kernel", "linear"),
              Rule(rf"{s}\.self_attention\.in_proj_bias", rf"params/{t}/self_attention/in_proj/bias")]
    table += torch_layer_rules(rf"{s}\.self_attention\.out_proj", rf"{t}/self_attention/out_proj", "linear")
    for name in ("ln_1", "ln_2"):
        table += torch_layer_rules(rf"{s}\.{name}", rf"{t}/{name}", "ln")
    for name in ("mlp.0", "mlp.3"):
        table += torch_layer_rules(rf"{s}\.{re.escape(name)}", rf"{t}/{name.replace('.', '_')}", "linear")
    return table + torch_layer_rules(r"encoder\.ln", "encoder/ln", "ln") + torch_layer_rules(
        r"heads\.head", "heads_head", "linear")


def detect(shapes):
    needed = ("conv_proj.weight", "class_token", "encoder.pos_embedding", "heads.head.weight",
              "encoder.layers.encoder_layer_0.mlp.0.weight")
    if not all(k in shapes for k in needed) or len(shapes["conv_proj.weight"]) != 4:
        return None
    hidden, _, patch, _ = shapes["conv_proj.weight"]
    mlp = shapes["encoder.layers.encoder_layer_0.mlp.0.weight"][0]
    depth = sum(1 for k in shapes if _LAYER.fullmatch(k))
    side = math.isqrt(shapes["encoder.pos_embedding"][1] - 1)
    if side * side + 1 != shapes["encoder.pos_embedding"][1]:
        return None
    family = models.resolve("vit_b_16")[0]
    same_widths = [v for v, c in family.variants.items() if (c.hidden_dim, c.mlp_dim) == (hidden, mlp)]
    if not same_widths:
        return None
    variant = min(same_widths, key=lambda v: (family.variants[v].patch_size != patch,
                                              family.variants[v].num_layers != depth))
    return models.canonical(variant, num_classes=shapes["heads.head.weight"][0], image_size=side * patch,
                            patch_size=patch, num_layers=depth)


register_source(SourceFamily("torchvision_vit", ("vit",), detect, rules))
