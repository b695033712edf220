"""`mnist_zoo`: the small MNIST zoo of jaxprov.training.mnist, trained once and cached across pytest runs.

The cache is keyed by the zoo builder's ZOO_VERSION (and, inside it, by each entry's recipe digest),
not by the source code: an edit that changes nothing built reuses the trained zoo."""

from __future__ import annotations

import pytest

from jaxprov.training import ZOO_VERSION
from jaxprov.training.mnist import LINEAGE, build_or_load


@pytest.fixture(scope="session")
def mnist_zoo(request, tmp_path_factory) -> dict:
    """The zoo: {"base", "finetuned", "pruned", "distilled": Model, "independent": [4 Models],
    "data": (x_test, y_test), "x_train": (x_base, y_base), "splits": {split: (x, y)}} with the
    splits of jaxprov.datasets' "mnist" domain (base, finetune, query, test).

    Children derive from "base"; "independent" are 2 LeNets and 2 MLPs trained from other seeds on
    the base's data. Every model's meta holds "lineage" and "accuracy" ({"fit", "test"}).
    """
    cache = getattr(request.config, "cache", None)  # absent under `-p no:cacheprovider`: train every run
    models, data = build_or_load(cache.mkdir(f"mnist_zoo_v{ZOO_VERSION}") if cache else tmp_path_factory.mktemp("mnist_zoo"))
    names = list(models)
    return {
        **{n: models[n] for n in LINEAGE},
        "independent": [models[n] for n in names[len(LINEAGE):]],
        "data": data["test"],
        "x_train": data["base"],
        "splits": data,
    }
