"""Model zoos with known lineage: train models and derive children (fine-tune, prune, distill, quantise,
cast to fp16, average).

Provenance methods are judged on pairs whose relation is known by construction; every model made
here carries `meta["lineage"] = {"parent": ..., "derivation": ..., ...settings}`.
"""

from jaxprov.zoo import derive  # noqa: F401  (the module, for its source digest)
from jaxprov.zoo.derive import (
    accuracy, average, cast_fp16, distill, finetune, head_name, predict, prune, quantize_int8, train)

__all__ = ["accuracy", "average", "cast_fp16", "distill", "finetune", "head_name", "predict", "prune",
           "quantize_int8", "train"]

# Named data domains and declarative, resumable zoo recipes.
from jaxprov.zoo import data, recipe  # noqa: E402
from jaxprov.zoo.data import domain, inputs  # noqa: E402
from jaxprov.zoo.recipe import build as build_recipe  # noqa: E402

__all__ += ["build_recipe", "data", "domain", "inputs", "recipe"]
