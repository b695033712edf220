"""Fixtures that train a zoo, each once per session and cached across pytest runs: `mnist_zoo` (the
small MNIST zoo of jaxprov.training.mnist), `ci_run` (the reuse benchmark's `ci` preset) and
`text_ci_zoo` (the text preset at test size: tiny BERT classifiers of Python's docstrings).

The cache is keyed by the zoo builder's ZOO_VERSION (and, inside it, by each entry's recipe digest),
not by the source code: an edit that changes nothing built reuses the trained zoo."""

from __future__ import annotations

import pytest

from jaxprov.bench import reuse
from jaxprov.training import ZOO_VERSION
from jaxprov.training.mnist import LINEAGE, build_or_load


@pytest.fixture(scope="session")
def mnist_zoo(request, tmp_path_factory) -> dict:
    """The zoo: {"base", "finetuned", "pruned", "distilled": Model, "independent": [4 Models],
    "data": (x_test, y_test), "x_train": (x_base, y_base), "splits": {split: (x, y)}, "root": its folder}
    with the splits of jaxprov.datasets' "mnist" domain (base, finetune, query, test); code that
    builds the same zoo itself (the notebook) is pointed at "root" and loads it instead.

    Children derive from "base"; "independent" are 2 LeNets and 2 MLPs trained from other seeds on
    the base's data. Every model's meta holds "lineage" and "accuracy" ({"fit", "test"}).
    """
    cache = getattr(request.config, "cache", None)  # absent under `-p no:cacheprovider`: train every run
    root = cache.mkdir(f"mnist_zoo_v{ZOO_VERSION}") if cache else tmp_path_factory.mktemp("mnist_zoo")
    models, data = build_or_load(root)
    names = list(models)
    return {
        **{n: models[n] for n in LINEAGE},
        "independent": [models[n] for n in names[len(LINEAGE):]],
        "data": data["test"],
        "x_train": data["base"],
        "splits": data,
        "root": root,
    }


@pytest.fixture(scope="session")
def ci_run(request, tmp_path_factory):
    """(folder, document) of `jaxprov bench reuse --preset ci`: its 88-model zoo in folder/zoo.

    tests/test_bench_reuse.py checks the benchmark; tests/test_device_suite.py points the device
    suite's smoke run (whose models are a subset of this zoo) at folder/zoo instead of training.
    The zoo and signatures are reused between local runs (the recipe builder and the store resume);
    a fresh clone (CI), or a run without pytest's cache, builds everything once.
    """
    cache = getattr(request.config, "cache", None)
    out = cache.mkdir("reuse_ci_v1") if cache else tmp_path_factory.mktemp("reuse_ci")
    doc = reuse.run("ci", out, log=lambda line: None)
    return out, doc


@pytest.fixture(scope="session")
def text_ci_zoo(request, tmp_path_factory):
    """(folder, {name: Model}, recipe) of the `text-ci` preset's zoo (jaxprov.bench.presets): per
    group (val, test) two bert-text-small bases on text:base, each fine-tuned, pruned and quantised,
    and two independents; 20 models, built by the zoo builder (lineage recorded) and cached."""
    from jaxprov.bench.presets import PRESETS
    from jaxprov.bench.protocol import make_recipe
    from jaxprov.training import recipe as zoo_recipe

    cache = getattr(request.config, "cache", None)
    root = cache.mkdir(f"text_ci_zoo_v{ZOO_VERSION}") if cache else tmp_path_factory.mktemp("text_ci_zoo")
    recipe = make_recipe(PRESETS["text-ci"])
    return root, zoo_recipe.build(recipe, root), recipe
