"""Model zoos with known lineage: train models and derive children (fine-tune, prune, distill, quantise,
cast to fp16, average), one by one or as a declarative zoo recipe.

Provenance methods are judged on pairs whose relation is known by construction; every model made
here carries `meta["lineage"] = {"parent": ..., "derivation": ..., ...settings}`.

  loop     the training loop every derivation runs (Adam, BatchNorm statistics, adversarial batches)
  derive   the derivations: train, train_exits (multi-exit), finetune, prune, distill, quantize_int8,
           cast_fp16, average
  recipe   the zoo builder: a recipe (a JSON-able list of entries) built deterministically and resumably
  mnist    the small MNIST zoo of the tests and `jaxprov demo`, a recipe of that builder
The data splits these train on are `jaxprov.datasets`'s.
"""

from jaxprov.training import derive, loop, recipe  # noqa: F401
from jaxprov.training.derive import (
    average, cast_fp16, distill, finetune, head_name, prune, quantize_int8, train, train_exits)
from jaxprov.training.loop import accuracy, predict
from jaxprov.training.recipe import ZOO_VERSION, build as build_recipe

__all__ = ["ZOO_VERSION", "accuracy", "average", "build_recipe", "cast_fp16", "derive", "distill", "finetune",
           "head_name", "loop", "predict", "prune", "quantize_int8", "recipe", "train", "train_exits"]
