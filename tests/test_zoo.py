"""The zoo: deterministic training, and children that keep (or copy) their parent's behaviour."""

import importlib
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxprov
from jaxprov import training

CHILDREN = {"finetuned": "finetune", "pruned": "prune", "distilled": "distill"}


def _leaves(model):
    return [np.asarray(leaf) for leaf in jax.tree_util.tree_leaves(model.params)]


def _kernels(model):
    return [np.asarray(leaf) for path, leaf in jax.tree_util.tree_flatten_with_path(model.params)[0]
            if path[-1].key == "kernel"]


def _labels(model, x):
    return np.asarray(jnp.argmax(training.predict(model, x), axis=-1))


@pytest.fixture(scope="module")
def tiny_data(mnist_zoo):
    x, y = mnist_zoo["x_train"]
    return x[:256], y[:256]


def test_same_key_same_params_other_key_other_params(tiny_data):
    x, y = tiny_data
    a = training.train("mlp[hidden=32]", x, y, jax.random.PRNGKey(7), epochs=2)
    b = training.train("mlp[hidden=32]", x, y, jax.random.PRNGKey(7), epochs=2)
    c = training.train("mlp[hidden=32]", x, y, jax.random.PRNGKey(8), epochs=2)
    assert all(np.array_equal(u, v) for u, v in zip(_leaves(a), _leaves(b)))
    assert not any(np.array_equal(u, v) for u, v in zip(_kernels(a), _kernels(c)))


def test_base_and_independent_models_generalise(mnist_zoo):
    x_test, y_test = mnist_zoo["data"]
    assert training.accuracy(mnist_zoo["base"], x_test, y_test) > 0.9
    assert len(mnist_zoo["independent"]) >= 4
    for model in mnist_zoo["independent"]:
        assert training.accuracy(model, x_test, y_test) > 0.85, model.name


def test_finetuned_moves_but_keeps_accuracy(mnist_zoo):
    base, child = mnist_zoo["base"], mnist_zoo["finetuned"]
    x_test, y_test = mnist_zoo["data"]
    assert not any(np.array_equal(u, v) for u, v in zip(_kernels(base), _kernels(child)))
    assert training.accuracy(child, x_test, y_test) > 0.9


def test_pruned_has_the_requested_sparsity_and_accuracy(mnist_zoo):
    base, pruned = mnist_zoo["base"], mnist_zoo["pruned"]
    fraction = pruned.meta["lineage"]["fraction"]
    kernels = _kernels(pruned)
    zeros, total = sum(int((k == 0).sum()) for k in kernels), sum(k.size for k in kernels)
    assert zeros == round(fraction * total)
    # Global magnitude pruning: every surviving weight was at least as large in the base as every pruned one.
    before = np.concatenate([k.ravel() for k in _kernels(base)])
    kept = np.concatenate([k.ravel() for k in kernels]) != 0
    assert np.abs(before[kept]).min() >= np.abs(before[~kept]).max()
    x_test, y_test = mnist_zoo["data"]
    assert training.accuracy(pruned, x_test, y_test) > training.accuracy(base, x_test, y_test) - 0.03


def test_distilled_student_agrees_with_its_teacher(mnist_zoo):
    x_test, _ = mnist_zoo["data"]
    teacher, student = mnist_zoo["base"], mnist_zoo["distilled"]
    assert np.mean(_labels(student, x_test) == _labels(teacher, x_test)) > 0.85
    # It learned from outputs only: its weights are unrelated to the teacher's.
    assert not any(np.allclose(u, v, atol=1e-2) for u, v in zip(_kernels(teacher), _kernels(student)))


def test_lineage_is_recorded(mnist_zoo):
    for key, derivation in CHILDREN.items():
        lineage = mnist_zoo[key].meta["lineage"]
        assert (lineage["parent"], lineage["derivation"]) == ("base", derivation)
    assert mnist_zoo["distilled"].meta["lineage"]["temperature"] == 4.0
    for model in [mnist_zoo["base"], *mnist_zoo["independent"]]:
        assert model.meta["lineage"] == {**model.meta["lineage"], "parent": None, "derivation": "train"}
        assert 0.0 <= model.meta["accuracy"]["test"] <= 1.0


def test_last_layer_only_freezes_the_body(tiny_data):
    x, y = tiny_data
    parent = training.train("mlp[hidden=32]", x, y, jax.random.PRNGKey(0), epochs=1, name="p")
    child = training.finetune(parent, x, y % 2, jax.random.PRNGKey(1), epochs=1, last_layer_only=True)
    assert training.head_name(parent) == "head"
    assert np.array_equal(child.params["params"]["layers_0"]["kernel"], parent.params["params"]["layers_0"]["kernel"])
    assert not np.array_equal(child.params["params"]["head"]["kernel"], parent.params["params"]["head"]["kernel"])
    transfer = training.finetune(parent, x, y % 2, jax.random.PRNGKey(1), epochs=1, num_classes=2)
    assert transfer.params["params"]["head"]["kernel"].shape == (32, 2)
    assert transfer.meta["lineage"]["derivation"] == "transfer"
    assert training.predict(transfer, x[:3]).shape == (3, 2)


def test_hard_label_distillation_and_int8_quantisation(mnist_zoo):
    base = mnist_zoo["base"]
    x_query, _ = mnist_zoo["splits"]["query"]
    x_test, _ = mnist_zoo["data"]
    student = training.distill(base, "mlp[hidden=64]", x_query, jax.random.PRNGKey(3), epochs=8, hard_labels=True)
    assert student.meta["lineage"]["hard_labels"] is True
    assert np.mean(_labels(student, x_test) == _labels(base, x_test)) > 0.8
    quantized = training.quantize_int8(base)
    for q, k in zip(_kernels(quantized), _kernels(base)):
        assert len(np.unique(q)) <= 255
        np.testing.assert_allclose(q, k, atol=float(np.abs(k).max()) / 254 * 1.0001)
    assert np.mean(_labels(quantized, x_test) == _labels(base, x_test)) > 0.98


def test_prune_fraction_outside_the_unit_interval_is_refused(tiny_data):
    x, y = tiny_data
    model = jaxprov.models.init("mlp[hidden=8]", jax.random.PRNGKey(0))
    with pytest.raises(jaxprov.JaxprovError, match="fraction"):
        training.prune(model, 1.5, x, y, jax.random.PRNGKey(0), finetune_epochs=0)


def test_the_old_zoo_package_is_a_deprecated_alias_of_training(monkeypatch):
    for name in [n for n in sys.modules if n == "jaxprov.zoo" or n.startswith("jaxprov.zoo.")]:
        monkeypatch.delitem(sys.modules, name)
    with pytest.warns(DeprecationWarning, match="jaxprov.training"):
        old = importlib.import_module("jaxprov.zoo")
    assert old.train is training.train and old.build_recipe is training.build_recipe
    # The old module paths import, as the new modules themselves.
    assert importlib.import_module("jaxprov.zoo.recipe") is training.recipe
    assert importlib.import_module("jaxprov.zoo.derive") is training.derive
    assert importlib.import_module("jaxprov.zoo.data") is jaxprov.datasets
    from jaxprov.zoo.mnist import build_or_load
    assert build_or_load is training.mnist.build_or_load
