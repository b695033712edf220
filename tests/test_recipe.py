"""Data domains and zoo recipes: lineage, determinism, resuming, selective rebuilds, bad recipes."""

import copy
import shutil

import jax
import numpy as np
import pytest

import jaxprov
from jaxprov import training
from jaxprov.errors import JaxprovError
from jaxprov import datasets as data
from jaxprov.training import derive, mnist, recipe

MLP = "mlp[hidden=32]"
SPEC = jaxprov.models.create(MLP)[2]
TINY = {"name": "tiny", "models": [
    {"name": "b0", "op": "train", "arch": MLP, "data": "mnist:base", "seed": 1, "epochs": 1, "lr": 3e-3,
     "role": "base"},
    {"name": "b0-ft", "op": "finetune", "parent": "b0", "data": "mnist:finetune", "seed": 2, "epochs": 1,
     "lr": 3e-4, "role": "positive", "reuse": "finetune"},
    {"name": "b0-p50", "op": "prune", "parent": "b0", "fraction": 0.5, "data": "mnist:finetune", "seed": 3,
     "finetune_epochs": 1},
    {"name": "b0-q", "op": "quantize_int8", "parent": "b0"},
    {"name": "b0-h", "op": "cast_fp16", "parent": "b0"},
    # Listed before its parents: the builder orders by dependency.
    {"name": "b0-avg", "op": "average", "parents": ["b0-ft", "b0-p50"], "parent": "b0", "group": "test"},
    {"name": "b0-x", "op": "distill", "parent": "b0", "arch": MLP, "data": "mnist:query", "seed": 4,
     "epochs": 1, "hard_labels": True, "batch": 100},
    {"name": "b0-lfw", "op": "finetune", "parent": "b0", "data": "lfw:train", "seed": 5, "epochs": 2,
     "num_classes": 2},
    {"name": "i0", "op": "train", "arch": MLP, "data": "digits:train", "seed": 6, "epochs": 1,
     "role": "independent"},
]}
DERIVATIONS = {"b0": "train", "b0-ft": "finetune", "b0-p50": "prune", "b0-q": "quantize_int8",
               "b0-h": "cast_fp16", "b0-avg": "average", "b0-x": "distill", "b0-lfw": "transfer", "i0": "train"}


def _leaves(model):
    return [np.asarray(leaf) for leaf in jax.tree_util.tree_leaves(model.params)]


def _same(a, b) -> bool:
    return all(np.array_equal(u, v) for u, v in zip(_leaves(a), _leaves(b), strict=True))


def _entry(recipe_dict, name):
    return next(e for e in recipe_dict["models"] if e["name"] == name)


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    root = tmp_path_factory.mktemp("zoo")
    log = []
    models = recipe.build(TINY, root, progress=lambda name, action: log.append((name, action)))
    return root, models, log


# -- data -------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["mnist", "digits", "lfw"])
def test_domains_are_raw_disjoint_deterministic_copies(name):
    splits = data.domain(name)
    assert set(splits) == set(data.SPLITS[name])
    images = np.concatenate([x for x, _ in splits.values()])
    assert images.shape[1:] == (28, 28, 1) and images.dtype == np.float32
    assert 0.0 <= images.min() and images.max() <= 1.0
    flat = images.reshape(len(images), -1)
    assert len(np.unique(flat, axis=0)) == len(flat)  # no image in two splits
    for split, (x, y) in splits.items():
        assert y.dtype == np.int32 and len(x) == len(y)
        x[:] = -1.0  # callers get copies: the next call is unaffected
    again = data.domain(name)
    assert all(np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])
               for a, b in zip(data.domain(name).values(), again.values()))
    assert min(x.min() for x, _ in again.values()) >= 0.0


def test_split_sizes_and_labels():
    sizes = {f"{d}:{s}": len(y) for d in data.SPLITS for s, (_, y) in data.domain(d).items()}
    assert sizes == {"mnist:base": 2000, "mnist:finetune": 1000, "mnist:query": 1000, "mnist:test": 1000,
                     "digits:train": 1300, "digits:test": 497, "lfw:train": 140, "lfw:test": 60,
                     **{f"{d}:{s}": n for d in ("mnistm", "syn", "mnist_invert", "mnist_colour", "mnist_texture")
                        for s, n in (("train", 4000), ("test", 1000))},
                     "text:base": 1200, "text:finetune": 400, "text:query": 400, "text:test": 400}
    assert {name: data.size(name) for name in sizes} == sizes
    lfw = np.concatenate([y for _, y in data.domain("lfw").values()])
    assert np.bincount(lfw).tolist() == [100, 100]  # 100 faces, 100 non-faces
    # The MNIST zoo trains and queries on these same splits, under the same names.
    assert {e["data"] for e in mnist.RECIPE["models"]} == {"mnist:base", "mnist:finetune", "mnist:query"}


def test_inputs_adapts_to_the_model_spec():
    x, y = data.inputs("digits:test", SPEC)
    raw, labels = data.domain("digits")["test"]
    np.testing.assert_allclose(np.asarray(x), (raw - 0.1307) / 0.3081, rtol=1e-5, atol=1e-6)
    assert np.array_equal(y, labels)
    rgb = jaxprov.model.InputSpec("image", "NHWC", (32, 32, 3), mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))
    assert data.inputs("lfw:test", rgb)[0].shape == (60, 32, 32, 3)
    with pytest.raises(JaxprovError, match="mnist:base"):
        data.inputs("mnist:train", SPEC)


# -- building ---------------------------------------------------------------------------------


def test_build_records_lineage_roles_and_accuracy(built):
    root, models, log = built
    assert list(models) == [e["name"] for e in TINY["models"]]
    assert sorted(log) == sorted((name, "built") for name in models)
    assert [n for n, _ in log].index("b0-avg") > [n for n, _ in log].index("b0-p50")
    for name, model in models.items():
        lineage = model.meta["lineage"]
        assert model.name == name and lineage["derivation"] == DERIVATIONS[name], name
        assert lineage["parent"] == _entry(TINY, name).get("parent", "b0" if name.startswith("b0-") else None)
        assert model.meta["recipe"]["entry"] == _entry(TINY, name)
        assert jaxprov.store.read_meta(root / name)["recipe"]["digest"] == model.meta["recipe"]["digest"]
        assert 0.0 <= model.meta["accuracy"]["test"] <= 1.0
    assert models["b0-avg"].meta["lineage"]["parents"] == ["b0-ft", "b0-p50"]
    assert models["b0-ft"].meta["role"] == "positive" and models["b0-ft"].meta["reuse"] == "finetune"
    assert models["b0-avg"].meta["group"] == "test" and "role" not in models["b0-avg"].meta
    # Accuracy is on the test split of the entry's domain, inherited by ops without data.
    for name, split in [("b0", "mnist:test"), ("b0-q", "mnist:test"), ("b0-lfw", "lfw:test"), ("i0", "digits:test")]:
        model = models[name]
        assert model.meta["accuracy"]["test"] == training.accuracy(model, *data.inputs(split, model.input_spec))
    assert models["b0"].meta["accuracy"]["test"] > 0.6  # one epoch of real training
    assert models["b0-lfw"].params["params"][derive.head_name(models["b0-lfw"])]["bias"].shape == (2,)
    kernels = [leaf for path, leaf in jax.tree_util.tree_flatten_with_path(models["b0-p50"].params)[0]
               if path[-1].key == "kernel"]
    assert np.mean(np.concatenate([np.ravel(k) for k in kernels]) == 0) == pytest.approx(0.5, abs=1e-3)


def test_same_recipe_same_params_and_registered_lineage(built, tmp_path):
    _, first, _ = built
    store = jaxprov.cache.SignatureCache(tmp_path / "store")
    second = recipe.build(TINY, tmp_path / "zoo", cache=store)
    for name in first:
        assert _same(first[name], second[name]), name
        assert first[name].meta["recipe"]["digest"] == second[name].meta["recipe"]["digest"]
    rows = dict(store.query("SELECT name, lineage FROM models"))
    assert set(rows) == set(first)
    assert '"derivation": "average"' in rows["b0-avg"] and '"parent": "b0"' in rows["b0-avg"]


def test_resume_loads_without_training(built, monkeypatch):
    root, first, _ = built

    def refuse(*args, **kwargs):
        raise AssertionError("a current model was rebuilt")

    for op in ("train", "finetune", "prune", "distill", "quantize_int8", "cast_fp16", "average"):
        monkeypatch.setattr(derive, op, refuse)
    log = []
    again = recipe.build(TINY, root, progress=lambda name, action: log.append(action))
    assert log == ["loaded"] * len(TINY["models"])
    assert all(_same(first[n], again[n]) and again[n].meta == first[n].meta for n in first)


def test_changed_entry_rebuilds_it_and_its_descendants_only(built, tmp_path, monkeypatch):
    root, first, _ = built
    shutil.copytree(root, tmp_path / "zoo")
    changed = copy.deepcopy(TINY)
    _entry(changed, "b0-ft")["lr"] = 1e-3
    _entry(changed, "b0-x")["role"] = "extraction"  # a label only: stored meta updated, no retraining
    monkeypatch.setattr(derive, "distill", lambda *a, **k: pytest.fail("relabelling retrained b0-x"))
    log = {}
    rebuilt = recipe.build(changed, tmp_path / "zoo", progress=lambda name, action: log.__setitem__(name, action))
    assert {n for n, a in log.items() if a == "built"} == {"b0-ft", "b0-avg"}
    for name in first:
        assert _same(first[name], rebuilt[name]) == (name not in ("b0-ft", "b0-avg")), name
    assert jaxprov.store.read_meta(tmp_path / "zoo" / "b0-x")["role"] == "extraction"
    assert jaxprov.load_model(tmp_path / "zoo" / "b0-x").meta["recipe"]["entry"]["role"] == "extraction"


def test_zoo_version_decides_what_is_current(built, tmp_path, monkeypatch):
    root, first, _ = built
    shutil.copytree(root, tmp_path / "zoo")
    part = {"name": "tiny", "models": [_entry(TINY, "b0"), _entry(TINY, "b0-q")]}
    log = []
    recipe.build(part, tmp_path / "zoo", progress=lambda name, action: log.append(action))
    assert log == ["loaded", "loaded"]  # the digest is the entry, its parents and ZOO_VERSION: unchanged
    monkeypatch.setattr(recipe, "ZOO_VERSION", recipe.ZOO_VERSION + 1)
    log.clear()
    again = recipe.build(part, tmp_path / "zoo", progress=lambda name, action: log.append(action))
    assert log == ["built", "built"]  # a bumped version rebuilds everything ...
    assert _same(first["b0"], again["b0"])  # ... and, the training being unchanged, bitwise the same
    assert again["b0"].meta["recipe"]["digest"] != first["b0"].meta["recipe"]["digest"]


def test_adversarial_distill_entry(tmp_path):
    small = {"name": "adv", "models": [
        {"name": "t", "op": "train", "arch": MLP, "data": "lfw:train", "seed": 1, "epochs": 1},
        {"name": "s", "op": "distill", "parent": "t", "arch": MLP, "data": "lfw:test", "seed": 2, "epochs": 1,
         "temperature": 1.0, "adversarial": {"eps": 0.1, "steps": 1, "step_size": 0.1}}]}
    student = recipe.build(small, tmp_path)["s"]
    assert student.meta["lineage"]["derivation"] == "distill"
    assert student.meta["lineage"]["adversarial"]["eps"] == 0.1


def test_unreadable_model_is_rebuilt_and_derive_errors_name_the_entry(tmp_path):
    small = {"name": "small", "models": [
        {"name": "t", "op": "train", "arch": MLP, "data": "lfw:train", "seed": 1, "epochs": 1},
        {"name": "t-q", "op": "quantize_int8", "parent": "t"}]}
    first = recipe.build(small, tmp_path)
    (tmp_path / "t-q" / "jaxprov.json").write_text("{not json")
    log = []
    again = recipe.build(small, tmp_path, progress=lambda name, action: log.append(action))
    assert log == ["loaded", "built"] and _same(first["t-q"], again["t-q"])
    small["models"].append({"name": "t-p", "op": "prune", "parent": "t", "fraction": 1.5, "data": "lfw:train",
                            "seed": 1, "finetune_epochs": 0})
    with pytest.raises(JaxprovError, match=r"^recipe 'small', entry 't-p': prune fraction must be in \[0, 1\)"):
        recipe.build(small, tmp_path)


# -- bad recipes ------------------------------------------------------------------------------


def _with(*entries):
    return {"name": "bad", "models": [{"name": "b0", "op": "train", "arch": MLP, "data": "mnist:base",
                                       "seed": 1, "epochs": 1}, *entries]}


@pytest.mark.parametrize("bad, message", [
    (_with({"name": "c", "op": "shrink", "parent": "b0"}), "entry 'c': unknown op 'shrink'"),
    (_with({"name": "c", "op": "quantize_int8", "parent": "b9"}), "entry 'c': unknown parent 'b9'"),
    (_with({"name": "c", "op": "cast_fp16", "parent": "d"}, {"name": "d", "op": "cast_fp16", "parent": "c"}),
     "entry 'c': dependency cycle c -> d -> c"),
    (_with({"name": "c", "op": "prune", "parent": "b0", "fraction": "half", "data": "mnist:base", "seed": 1,
            "finetune_epochs": 0}), "entry 'c': field 'fraction' must be float"),
    (_with({"name": "c", "op": "finetune", "parent": "b0", "data": "mnist:base", "seed": True, "epochs": 1}),
     "entry 'c': field 'seed' must be int"),
    (_with({"name": "c", "op": "quantize_int8", "parent": "b0", "epochs": 3}), "entry 'c': unknown field"),
    (_with({"name": "c", "op": "finetune", "parent": "b0", "data": "mnist:base", "seed": 1}),
     "entry 'c': op finetune needs field"),
    (_with({"name": "c", "op": "finetune", "parent": "b0", "data": "cifar:base", "seed": 1, "epochs": 1}),
     "entry 'c': unknown data split 'cifar:base'"),
    (_with({"name": "c", "op": "distill", "parent": "b0", "arch": "mlq", "data": "mnist:query", "seed": 1,
            "epochs": 1}), "entry 'c': unknown architecture 'mlq'"),
    (_with({"name": "c", "op": "average", "parents": ["b0"]}), "entry 'c': 'parents' must list >= 2"),
    (_with({"name": "b0", "op": "cast_fp16", "parent": "b0"}), "entry 'b0': duplicate name"),
    (_with({"name": "../c", "op": "cast_fp16", "parent": "b0"}), "entry '../c': the name must be"),
    (_with({"name": "c", "op": "cast_fp16", "parent": "b0", "batch": 0}), "entry 'c': field 'batch'"),
    ({"name": "bad", "models": []}, "non-empty list"),
    ({"name": "bad", "model": []}, "unknown field"),
])
def test_bad_recipes_fail_early_on_one_line_naming_the_entry(bad, message, tmp_path):
    with pytest.raises(JaxprovError) as err:
        recipe.build(bad, tmp_path / "zoo")
    assert message in str(err.value) and "\n" not in str(err.value)
    assert not (tmp_path / "zoo").exists()  # nothing trained, nothing written
