"""`mnist_zoo`: the small MNIST zoo of jaxprov.zoo.mnist, trained once and cached across pytest runs."""

from __future__ import annotations

import pytest

from jaxprov.zoo.mnist import LINEAGE, build_or_load


@pytest.fixture(scope="session")
def mnist_zoo(request, tmp_path_factory) -> dict:
    """The zoo: {"base", "finetuned", "pruned", "distilled": Model, "independent": [4 Models],
    "data": (x_test, y_test), "x_train": (x_base, y_base), "splits": {split: (x, y)}}.

    Children derive from "base"; "independent" are 2 LeNets and 2 MLPs trained from other seeds on
    the base's data. Every model's meta holds "lineage" and "accuracy" ({"fit", "test"}).
    """
    cache = getattr(request.config, "cache", None)  # absent under `-p no:cacheprovider`: train every run
    models, data = build_or_load(cache.mkdir("mnist_zoo_v1") if cache else tmp_path_factory.mktemp("mnist_zoo"))
    names = list(models)
    return {
        **{n: models[n] for n in LINEAGE},
        "independent": [models[n] for n in names[len(LINEAGE):]],
        "data": data["test"],
        "x_train": data["base"],
        "splits": data,
    }
