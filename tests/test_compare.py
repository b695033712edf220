"""The comparison layer: labelled matrices, memory-bounded neighbours, calibrated verdicts, masks."""

import json

import jax
import numpy as np
import pytest

from jaxprov import models
from jaxprov.comparison import Zoo, check_compatible, compare, empirical_p
from jaxprov.errors import ArgumentError, JaxprovError


@pytest.fixture(scope="module")
def zoo(mnist_zoo):
    members = [mnist_zoo[k] for k in ("base", "finetuned", "pruned", "distilled")] + mnist_zoo["independent"]
    return Zoo(members, seeds="mnist", key=jax.random.PRNGKey(0), method_config={"cka": {"n_seeds": 64}})


def test_similarity_matrix_is_labelled_and_symmetric(zoo):
    sim = zoo.similarity("cka")
    n = len(zoo.models)
    assert sim.values.shape == (n, n) and sim.labels == tuple(zoo.names)
    np.testing.assert_allclose(np.diag(sim.values), 1.0, atol=1e-5)
    np.testing.assert_allclose(sim.values, sim.values.T, atol=1e-6)
    assert sim["base", "finetuned"] == pytest.approx(sim.values[0, 1])
    json.dumps(sim.to_json())


@pytest.mark.parametrize("method", ["cka", "sac"])  # device top-k path, numpy pairwise path
def test_neighbours_in_blocks_match_the_full_matrix(zoo, method):
    full = zoo.similarity(method).values.copy()
    np.fill_diagonal(full, -np.inf)
    got = zoo.neighbours(method, k=3, block=3)  # several blocks: never the whole matrix at once
    for i, name in enumerate(zoo.names):
        expected = [zoo.names[j] for j in np.argsort(-full[i])[:3]]
        assert [n for n, _ in got[name]] == expected
        assert [s for _, s in got[name]] == pytest.approx([full[i, zoo.names.index(n)] for n in expected], abs=1e-5)


def test_verdict_needs_a_null_and_says_so(mnist_zoo):
    result = compare(mnist_zoo["base"], mnist_zoo["finetuned"], ["cka"])
    assert result.verdict == "inconclusive" and "no null distribution" in result.reason
    assert result["cka"].p_value is None


def test_verdict_with_a_small_null_is_honest_about_its_resolution(mnist_zoo):
    result = compare(mnist_zoo["base"], mnist_zoo["finetuned"], ["cka"], null=mnist_zoo["independent"])
    cka = result["cka"]
    assert cka.p_value == pytest.approx(1 / 5)  # above all 4 independents: the best p 4 nulls allow
    assert cka.similarity > max(cka.null)
    assert result.verdict == "inconclusive" and "at least 19" in result.reason
    assert json.loads(json.dumps(result.to_json()))["methods"]["cka"]["null_n"] == 4


def test_derived_verdict_when_the_null_is_large_enough(mnist_zoo):
    # 19 independent "null" models: random-init LeNets/MLPs are independent of the trained base.
    null = [models.init("lenet" if i % 2 else "mlp", jax.random.PRNGKey(100 + i), name=f"null{i}")
            for i in range(19)]
    result = compare(mnist_zoo["base"], mnist_zoo["finetuned"], ["cka"], null=null)
    assert result["cka"].p_value == pytest.approx(1 / 20)
    assert result.verdict == "derived"
    independent = compare(mnist_zoo["base"], null[0], ["cka"], null=null[1:])
    assert independent.verdict in ("independent", "inconclusive") and independent["cka"].p_value > 0.05


def test_empirical_p_value():
    assert empirical_p(0.9, [0.1, 0.2, 0.95]) == pytest.approx(2 / 4)
    assert empirical_p(1.0, []) == 1.0


def test_incomparable_pairs_are_nan_not_garbage():
    ten = models.init("lenet", jax.random.PRNGKey(0), name="ten")
    five = models.init("lenet[num_classes=5]", jax.random.PRNGKey(1), name="five")
    mlp = models.init("mlp", jax.random.PRNGKey(2), name="mlp")
    zoo = Zoo([ten, five, mlp], seeds="synthetic", key=jax.random.PRNGKey(0),
              method_config={"ipguard": {"n_seeds": 16}})
    weights = zoo.similarity("weights").values
    assert np.isnan(weights[0, 2]) and np.isnan(weights[0, 1])  # other arch / other head shape
    assert weights[0, 0] == pytest.approx(1.0, abs=1e-5)
    labels = zoo.similarity("ipguard").values
    assert np.isnan(labels[0, 1]) and not np.isnan(labels[0, 2])  # 10 vs 5 outputs; 10 vs 10 fine


def test_models_with_different_inputs_cannot_share_probes():
    # The check reads input specs only: models over abstract params (no init, which runs op by op
    # and takes ~25 s for a ResNet-20 on a loaded 2-core CPU).
    lenet, resnet = (models.build(arch, models.abstract_params(arch)) for arch in ("lenet", "cifar_resnet20"))
    with pytest.raises(JaxprovError, match=r"different inputs .*image \(28, 28, 1\).*image \(32, 32, 3\)"):
        check_compatible([lenet, resnet])


def test_default_verdict_combines_methods_against_the_suspects_kind_of_null(mnist_zoo):
    from jaxprov.verdict import Verdict

    # A hand-set combination of two cheap methods (the shipped one is fitted by `jaxprov bench reuse`).
    combo = Verdict(("cka", "weights"), {"cka": {"n_seeds": 64}}, (1.0, 1.0), -2.0)
    lenets = [m for m in mnist_zoo["independent"] if m.arch == "lenet"]
    null = mnist_zoo["independent"]
    derived = compare(mnist_zoo["base"], mnist_zoo["finetuned"], null=null, verdict=combo)
    assert [r.method for r in derived.results] == ["cka", "weights"]
    assert derived.verdict == "derived" and derived.probability > 0.9
    assert "2 null models" in derived.reason  # the two LeNets: the suspect's own kind
    # An independent LeNet against the other one as the null: below the threshold.
    independent = compare(mnist_zoo["base"], lenets[0], null=[lenets[1], *null[2:]], verdict=combo)
    assert independent.probability < derived.probability
    assert independent.verdict == "independent", independent.summary()
    assert json.loads(json.dumps(derived.to_json()))["probability"] == pytest.approx(derived.probability)
    # Too small a null for the combination: the per-method p-values decide, and it says why.
    small = compare(mnist_zoo["base"], mnist_zoo["finetuned"], null=lenets[:1], verdict=combo)
    assert small.probability is None and "at least 2 null models" in small.reason


def test_default_verdict_goes_on_without_a_method_its_seeds_cannot_feed(mnist_zoo):
    from jaxprov.verdict import Verdict

    # `mistakes` needs labelled seeds: with synthetic (unlabelled) ones the combination skips it,
    # says why, and decides on the rest; a caller who names it explicitly gets the error.
    combo = Verdict(("weights", "mistakes"), {}, (1.0, 1.0), -2.0, floors={"weights": 0.01})
    null = mnist_zoo["independent"]
    result = compare(mnist_zoo["base"], mnist_zoo["finetuned"], null=null, seeds="synthetic", verdict=combo)
    skipped = {r.method: r for r in result.results}["mistakes"]
    assert skipped.skipped.startswith("mistakes needs labelled seeds") and skipped.p_value is None
    assert skipped.verdict == "skipped" and not skipped.usable
    assert result.verdict == "derived" and result.probability > 0.9
    with pytest.raises(JaxprovError, match="labelled seeds"):
        compare(mnist_zoo["base"], mnist_zoo["finetuned"], ["mistakes"], null=null, seeds="synthetic")
    # With labelled held-out seeds it runs, and the distilled copy makes the base's mistakes.
    labelled = compare(mnist_zoo["base"], mnist_zoo["distilled"], ["mistakes"], null=null, seeds="mnist:test")
    assert labelled.results[0].similarity > max(labelled.results[0].null)


def test_default_compare_runs_as_fitted_and_names_its_answers(mnist_zoo):
    from jaxprov import verdict

    combo = verdict.load_default()
    result = compare(mnist_zoo["base"], mnist_zoo["distilled"], null=mnist_zoo["independent"])
    # Only the methods with non-zero weight, on the seeds the verdict was fitted with.
    assert [r.method for r in result.results] == list(combo.active_methods)
    assert set(combo.active_methods) < set(combo.methods)
    assert result.seeds == combo.provenance["seeds"] == "mnist:test"
    assert [a.name for a in result.answers] == ["default verdict", "per-method tests"]
    assert result.answer.name == "default verdict" and result.probability == result.answers[0].probability
    assert result.answers[1].probability is None  # the tests are p-values, never a P(derived)
    saved = json.loads(json.dumps(result.to_json()))
    assert saved["answer"] == "default verdict"
    assert saved["default_verdict"]["probability"] == pytest.approx(result.probability)
    assert saved["per_method_tests"]["verdict"] == result.answers[1].verdict
    text = result.summary()
    assert "default verdict: " in text and "per-method tests: " in text and "verdict (default verdict)" in text


def test_methods_take_a_name_a_list_or_all_and_bad_arguments_are_typed_errors(mnist_zoo):
    base, ft = mnist_zoo["base"], mnist_zoo["finetuned"]
    one = compare(base, ft, "weights")  # one name, not the letters w, e, i, ...
    assert [r.method for r in one.results] == ["weights"] and one.answer.name == "per-method tests"
    assert len(one.answers) == 1
    assert [r.method for r in compare(base, ft, ["weights", "cka"]).results] == ["weights", "cka"]
    every = compare(base, ft, "all", null=mnist_zoo["independent"][:2], seeds="mnist:test")  # MIN_NULL of them
    assert sorted(r.method for r in every.results) == sorted(models_names())
    assert every.answer.name == "default verdict" and every.probability is not None
    with pytest.raises(ArgumentError, match="jaxprov.load"):
        compare(base, "some/checkpoint.pt")
    with pytest.raises(ArgumentError, match="methods must be"):
        compare(base, ft, 5)
    with pytest.raises(ArgumentError, match="null must be"):
        compare(base, ft, "weights", null=[base, "x"])


def models_names():
    from jaxprov import methods

    return methods.names()


def _dead(model, name):
    return model.replace(params=jax.tree_util.tree_map(np.zeros_like, model.params), name=name)


def test_dead_models_have_similarity_zero_under_every_method_and_no_verdict(mnist_zoo):
    base = mnist_zoo["base"]
    dead, dead2 = _dead(base, "dead"), _dead(base, "dead2")
    nan = base.replace(params=jax.tree_util.tree_map(lambda a: np.full_like(a, np.nan), base.params), name="nan")
    untrained = models.init("lenet", jax.random.PRNGKey(5), name="untrained")
    config = {m: {"n_seeds": 32} for m in ("ddv", "sac", "ipguard", "cka")}
    config["ddv"]["iters"] = 3
    config["gradient_field"] = {"n_seeds": 8, "steps": 4}
    zoo = Zoo([dead, dead2, nan, untrained, base], seeds="mnist:test", key=jax.random.PRNGKey(0),
              method_config=config)
    for method in models_names():
        sim = zoo.similarity(method)
        assert sim.dead == (True, True, True, False, False), method
        assert np.all(sim.values[:3] == 0) and np.all(sim.values[:, :3] == 0), method  # each other included
        assert sim.values[4, 4] > 0, method  # live models keep their similarities
    # An all-zero model against an untrained parent: no evidence, so no verdict (it was "derived").
    result = compare(untrained, dead, null=mnist_zoo["independent"])
    assert not result.has_evidence and result.verdict == "inconclusive" and result.probability is None
    assert "no evidence" in result.reason and "dead model" in result.reason
    assert all(a.verdict == "inconclusive" for a in result.answers)
