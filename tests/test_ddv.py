"""ModelDiff DDV: PGD twins stay in their box and are reproducible, signatures are unit vectors that
score 1 against themselves, dead models are flagged instead of NaN, batching changes nothing,
output sizes do not matter. On the MNIST zoo the published PGD budget separates the fine-tuned and
pruned children from every independent model; with the budget scaled to MNIST pixels the distilled
child clears them too.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxprov import models
from jaxprov.engine import EngineConfig, signatures
from jaxprov.errors import JaxprovError
from jaxprov.methods import get
from jaxprov.methods.ddv import DDV
from jaxprov.models.small import MNIST_STD
from jaxprov.probes import Probes

N_SEEDS = 23  # odd on purpose: probe chunks of 7 and 5 leave a padded remainder
SEQUENTIAL = EngineConfig(strategy="sequential", shard=False)


@pytest.fixture(scope="module")
def lenets():
    return [models.init("lenet", jax.random.PRNGKey(i), name=f"lenet{i}") for i in range(5)]


@pytest.fixture(scope="module")
def seeds(lenets):
    raw = jax.random.uniform(jax.random.PRNGKey(99), (N_SEEDS, 28, 28, 1))
    return Probes(lenets[0].input_spec.normalize(raw), {"source": "test"})


@pytest.fixture(scope="module")
def probes(lenets, seeds):
    return DDV().make_probes(seeds, jax.random.PRNGKey(7), lenets[0])


def test_registry_builds_ddv_with_published_defaults():
    method = get("ddv")
    assert isinstance(method, DDV) and method.comparable == "any" and method.similarity == "cosine"
    assert (method.n_seeds, method.eps, method.iters, method.step) == (100, 0.06, 50, 0.01)
    assert (method.random_start, method.diversity_weight, method.target_scale) == (True, 0.1, 1000.0)


def test_twins_stay_in_eps_ball_and_batch_range(seeds, probes):
    x, x_adv = np.asarray(probes.inputs["x"]), np.asarray(probes.inputs["x_adv"])
    np.testing.assert_array_equal(x, np.asarray(seeds.inputs))
    assert x_adv.shape == x.shape
    assert np.max(np.abs(x_adv - x)) <= 0.06 + 1e-6
    assert x_adv.min() >= x.min() and x_adv.max() <= x.max()
    assert np.mean(np.abs(x_adv - x)) > 0.01  # the twins moved


def test_twins_are_deterministic_from_the_key(lenets, seeds, probes):
    again = DDV().make_probes(seeds, jax.random.PRNGKey(7), lenets[0])
    other = DDV().make_probes(seeds, jax.random.PRNGKey(8), lenets[0])
    np.testing.assert_array_equal(np.asarray(again.inputs["x_adv"]), np.asarray(probes.inputs["x_adv"]))
    assert again.digest == probes.digest
    assert not np.array_equal(np.asarray(other.inputs["x_adv"]), np.asarray(probes.inputs["x_adv"]))


def test_probe_meta_records_reference_config_and_key(lenets, probes):
    from jaxprov.store import params_digest

    meta = probes.meta
    assert meta["method"] == "ddv" and meta["config"]["eps"] == 0.06 and meta["pgd_key"]
    assert meta["reference"] == {"name": "lenet0", "arch": "lenet", "params_digest": params_digest(lenets[0].params)}
    assert probes.reference == meta["reference"]  # the probes say they depend on that model


def test_pgd_moves_reference_outputs_more_than_random_noise(lenets, seeds, probes):
    """The twins are crafted: on the reference they change outputs more than random points in the
    same eps ball do (iters=0 leaves only the random start)."""
    ref = lenets[0]
    noise = DDV(iters=0).make_probes(seeds, jax.random.PRNGKey(7), ref)
    crafted = np.asarray(DDV().rows(ref.fns, ref.params, probes.inputs))
    random = np.asarray(DDV().rows(ref.fns, ref.params, noise.inputs))
    assert crafted.mean() > 3 * random.mean()


def test_reference_is_required_and_text_is_refused(seeds, lenets):
    with pytest.raises(JaxprovError, match="reference"):
        DDV().make_probes(seeds, jax.random.PRNGKey(0), None)
    tokens = Probes({"input_ids": jnp.zeros((4, 8), jnp.int32), "attention_mask": jnp.ones((4, 8), jnp.int32)})
    with pytest.raises(JaxprovError, match="token ids"):
        DDV().make_probes(tokens, jax.random.PRNGKey(0), lenets[0])


def test_self_similarity_is_one_and_signatures_are_unit(lenets, probes):
    twin = lenets[1].replace(name="copy-of-lenet1")
    sigs = signatures(DDV(), [lenets[1], twin, lenets[2]], probes, SEQUENTIAL)
    assert sigs.matrix.shape == (3, N_SEEDS)
    np.testing.assert_allclose(np.linalg.norm(sigs.matrix, axis=1), 1.0, atol=1e-5)
    sim = DDV().pairwise(sigs.matrix, sigs.matrix)
    assert abs(sim[0, 1] - 1.0) < 1e-5
    assert np.all(sigs.matrix >= 0)  # cosine distances
    assert not sigs.dead.any()


def test_dead_model_gets_zero_signature_flagged_never_nan(lenets, probes):
    dead = lenets[0].replace(name="dead", params=jax.tree_util.tree_map(jnp.zeros_like, lenets[0].params))
    sigs = signatures(DDV(), [lenets[0], dead], probes, SEQUENTIAL)
    assert np.all(np.isfinite(sigs.matrix))
    assert sigs.dead.tolist() == [False, True]
    np.testing.assert_array_equal(sigs.matrix[1], 0.0)
    assert DDV().pairwise(sigs.matrix, sigs.matrix)[0, 1] == 0.0


@pytest.mark.parametrize("config", [
    EngineConfig(strategy="vmap", model_chunk=3, probe_chunk=7),
    EngineConfig(strategy="vmap", probe_chunk=N_SEEDS),
    EngineConfig(strategy="sequential", probe_chunk=5, shard=False),
])
def test_batching_changes_nothing(lenets, probes, config):
    one_at_a_time = np.stack([signatures(DDV(), [m], probes, SEQUENTIAL).matrix[0] for m in lenets])
    batched = signatures(DDV(), lenets, probes, config).matrix
    np.testing.assert_allclose(batched, one_at_a_time, atol=1e-5)


def test_different_output_sizes_compare(lenets, probes):
    """DDV elements are scalars inside one model: a 5-class and a 10-class LeNet give vectors of one
    length, and a 20-class LeNet whose head repeats a 10-class head twice has the SAME DDV (cosine of
    [y, y] and [y', y'] is cosine of y and y')."""
    five = models.init("lenet[num_classes=5]", jax.random.PRNGKey(3), name="five")
    ten = lenets[1]
    doubled = models.init("lenet[num_classes=20]", jax.random.PRNGKey(4), name="doubled")
    head = ten.params["params"]["head"]
    params = jax.tree_util.tree_map(lambda a: a, ten.params)
    params["params"] = {**params["params"], "head": {"kernel": jnp.concatenate([head["kernel"]] * 2, axis=1),
                                                     "bias": jnp.concatenate([head["bias"]] * 2, axis=0)}}
    doubled = doubled.replace(params=params)
    sigs = signatures(DDV(), [ten, five, doubled], probes, SEQUENTIAL)
    assert sigs.matrix.shape == (3, N_SEEDS) and np.all(np.isfinite(sigs.matrix))
    sim = DDV().pairwise(sigs.matrix, sigs.matrix)
    assert abs(sim[0, 2] - 1.0) < 1e-5
    assert -1.0 <= sim[0, 1] < 1.0 - 1e-3


def _similarity_to_base(mnist_zoo, method: DDV, key: int) -> dict[str, float]:
    """Seeds: `method.n_seeds` real MNIST test digits; twins crafted on "base"; cosine(DDV, DDV_base)."""
    x_test, _ = mnist_zoo["data"]
    seed_key, pgd_key = jax.random.split(jax.random.PRNGKey(key))
    index = np.sort(np.asarray(jax.random.choice(seed_key, len(x_test), (method.n_seeds,), replace=False)))
    probes = method.make_probes(Probes(jnp.asarray(x_test[index]), {"source": "mnist-test"}), pgd_key,
                                mnist_zoo["base"])
    zoo = [mnist_zoo[n] for n in ("base", "finetuned", "pruned", "distilled")] + mnist_zoo["independent"]
    sigs = signatures(method, zoo, probes)
    sim = method.pairwise(sigs.matrix[:1], sigs.matrix)[0]
    scores = dict(zip(sigs.names, np.round(sim, 4).tolist()))
    print(f"DDV similarity to base ({method}):", scores)
    return scores


def test_mnist_zoo_published_budget_separates_finetuned_and_pruned(mnist_zoo):  # noqa: F811
    """The published PGD budget (eps 0.06 normalised, step 0.01): the close derivatives clear every
    independent model. The output-distilled student does not, reliably: 0.06 is 0.018 of a raw MNIST
    pixel, too small to move a LeNet's decisions (about 1% of twins flip the base's label), and over
    all 1,000 test digits its DDV similarity (0.74) ties the independents' (0.72-0.78). 300 seeds:
    with 100, one seed draw in ten let an independent LeNet edge past the fine-tuned child."""
    scores = _similarity_to_base(mnist_zoo, DDV(n_seeds=300), key=0)
    independent = [v for k, v in scores.items() if k.startswith("independent")]
    assert abs(scores["base"] - 1.0) < 1e-5
    assert min(scores["finetuned"], scores["pruned"]) > max(independent), scores


def test_mnist_zoo_every_derived_model_scores_above_every_independent_one(mnist_zoo):  # noqa: F811
    """ModelDiff's criterion (the true parent outranks every unrelated model) for all three children,
    with the PGD budget translated to MNIST: 0.3 of a raw pixel (the usual MNIST L-inf budget; the
    published 0.06 is ~3.4/255 of an ImageNet pixel) and step = eps / 6, the published ratio; 300
    seeds because DDV entries are heavy-tailed and 100 leave the distilled student's rank to luck."""
    eps = 0.3 / MNIST_STD[0]
    scores = _similarity_to_base(mnist_zoo, DDV(n_seeds=300, eps=eps, step=eps / 6), key=0)
    derived = [scores[k] for k in ("finetuned", "pruned", "distilled")]
    independent = [v for k, v in scores.items() if k.startswith("independent")]
    assert min(derived) > max(independent), scores
