"""The method contract: what the comparison layer reads is declared (n_seeds, comparable, similarity,
Probes.reference), probe builders are batched by the engine, and renamed settings still load."""

import dataclasses
import warnings

import jax
import numpy as np
import pytest

from jaxprov import engine, methods, models
from jaxprov.comparison import Zoo
from jaxprov.engine import EngineConfig
from jaxprov.errors import JaxprovError
from jaxprov.methods import similarity
from jaxprov.methods.base import Method
from jaxprov.probes import seeds as make_seeds
from jaxprov.verdict import Verdict

KEY = jax.random.PRNGKey(0)


@pytest.fixture(scope="module")
def nets():
    return ([models.init("mlp", jax.random.PRNGKey(i), name=f"mlp{i}") for i in range(3)]
            + [models.init("lenet", jax.random.PRNGKey(10 + i), name=f"lenet{i}") for i in range(2)])


@pytest.fixture(scope="module")
def labelled(nets):
    return make_seeds("mnist:test", nets[0].input_spec, 30, jax.random.PRNGKey(1))


# mistakes with max_probes 12: the engine stops once the first 12 are found (`until`), same probes.
@pytest.mark.parametrize("name, config", [("ddv", {"iters": 2}), ("ipguard", {"iters": 2}),
                                          ("mistakes", {"max_probes": 12, "min_probes": 2})])
def test_probe_builders_run_in_engine_chunks_like_one_batch(nets, labelled, name, config):
    method = methods.get(name, **config)
    ref = nets[3]  # a LeNet: convolutions, whose batch size is what chunking changes
    whole = method.make_probes(labelled, KEY, ref)
    chunked = engine.probes_for(method, labelled, KEY, ref, EngineConfig(probe_chunk=7))
    assert chunked.reference == whole.reference == {"name": "lenet0", "arch": "lenet",
                                                    "params_digest": whole.meta["reference"]["params_digest"]}
    for leaf in whole.inputs:
        a, b = np.asarray(whole.inputs[leaf]), np.asarray(chunked.inputs[leaf])
        assert a.shape == b.shape
        # PGD steps by the gradient's sign: a last-bit difference of a near-zero gradient may flip
        # one step of one pixel (2 x step), never more.
        off = np.abs(a - b) > 1e-5
        assert off.mean() < 0.01, f"{name}/{leaf}: {off.mean():.3%} of the values moved"
    if name == "ddv":  # bfloat16 casts the reference and the seeds; the probes come back as float32
        half = engine.probes_for(method, labelled, KEY, ref, EngineConfig(dtype="bfloat16"))
        assert all(np.asarray(v).dtype == np.float32 and np.isfinite(v).all() for v in half.inputs.values())


def test_map_inputs_stops_when_told_and_returns_the_prefix(nets, labelled):
    from jaxprov.methods.labels import predicted_labels

    x = labelled.inputs
    full = np.asarray(engine.map_inputs(predicted_labels, None, nets[3], x))
    seen = []
    part = engine.map_inputs(predicted_labels, None, nets[3], x, config=EngineConfig(probe_chunk=7),
                             until=lambda out: seen.append(out.shape[0]) or out.shape[0] >= 14)
    assert seen == [7, 14] and part.shape == (14,)
    np.testing.assert_array_equal(np.asarray(part), full[:14])


def test_reference_free_probes_record_no_reference(nets, labelled):
    for name in ("gradient_field", "sac", "cka", "weights"):
        probes = Zoo(nets, seeds=labelled, key=KEY, method_config={"gradient_field": {"n_seeds": 4, "steps": 2}}
                     ).probes(name)
        assert probes.reference is None, name
    zoo = Zoo(nets, seeds="mnist:test", key=KEY, method_config={"ddv": {"n_seeds": 8, "iters": 1}})
    assert zoo.per_reference("ddv") is True and zoo.per_reference("cka") is False
    assert zoo.per_reference("mistakes") is True  # a random MLP gets most labelled seeds wrong


@dataclasses.dataclass(frozen=True)
class _Outputs(Method):
    """Raw outputs, compared by SAC's kind and only within one arch: exercises both declarations."""

    name = "test_outputs"
    comparable = "arch"
    similarity = "mean_abs_difference"
    n_seeds: int = 6

    def rows(self, fns, params, probes):
        return fns.apply(params, probes["x"])


def test_declared_similarity_and_comparability_drive_matrices_and_neighbours(nets):
    zoo = Zoo(nets, seeds="synthetic", key=KEY)
    method = _Outputs()
    sigs = zoo.signatures(method)
    assert sigs.matrix.shape == (5, 6 * 10)
    sim = zoo.similarity(method).values
    expected = similarity.pairwise("mean_abs_difference", sigs.matrix, sigs.matrix)
    same = np.equal.outer(np.asarray(sigs.archs), np.asarray(sigs.archs))
    np.testing.assert_allclose(sim[same], expected[same], rtol=1e-6)
    assert np.isnan(sim[~same]).all()
    near = zoo.neighbours(method, k=3)
    for i, name in enumerate(zoo.names):
        others = [j for j in range(5) if j != i and same[i, j]]
        best = sorted(others, key=lambda j: -expected[i, j])
        assert [n for n, _ in near[name]] == [zoo.names[j] for j in best]  # never across archs


def test_declarations_are_checked_when_a_method_is_defined():
    with pytest.raises(TypeError, match="comparable"):
        type("Bad", (Method,), {"comparable": "same_arch"})
    with pytest.raises(TypeError, match="similarity"):
        type("Bad", (Method,), {"similarity": "euclid"})


def test_text_gradients_need_the_models_embedding_hook(nets):
    method = methods.get("gradient_field", n_seeds=2, steps=2)
    tokens = {"input_ids": np.ones((2, 4), np.int32)}
    with pytest.raises(JaxprovError, match="token-embedding hook"):
        method.field(nets[0].fns, nets[0].params, {"x": tokens})


def test_renamed_n_anchors_still_loads_with_a_warning(nets):
    with pytest.warns(DeprecationWarning, match="'n_anchors' is now called 'n_seeds'"):
        assert methods.get("gradient_field", n_anchors=8).n_seeds == 8
    with pytest.raises(JaxprovError, match="both 'n_anchors' and"):
        methods.get("gradient_field", n_anchors=8, n_seeds=8)
    with pytest.warns(DeprecationWarning):
        zoo = Zoo(nets[:2], seeds="synthetic", key=KEY, method_config={"gradient_field": {"n_anchors": 3}})
        assert zoo.method("gradient_field").n_seeds == 3
    data = {"methods": ["gradient_field"], "weights": [1.0], "bias": 0.0,
            "method_config": {"gradient_field": {"n_anchors": 128, "steps": 50}}}
    with pytest.warns(DeprecationWarning):
        verdict = Verdict.from_json(data)
    assert dict(verdict.method_config["gradient_field"]) == {"n_seeds": 128, "steps": 50}


def test_store_argument_is_the_deprecated_name_of_cache(nets, tmp_path):
    with pytest.warns(DeprecationWarning, match="store= is now called cache="):
        zoo = Zoo(nets[:2], seeds="synthetic", key=KEY, store=tmp_path / "sigs")
    zoo.signatures("weights")
    assert list((tmp_path / "sigs" / "signatures").rglob("*.npy"))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        Zoo(nets[:2], seeds="synthetic", key=KEY, cache=tmp_path / "sigs").signatures("weights")


def test_reference_rows_from_the_probe_builder_equal_a_second_forward_pass(nets, labelled):
    # mistakes hands the engine its reference's rows (predicted labels on its mistakes, computed in
    # the builder's chunks of 7 seeds); a second pass over the probes in the signature's chunks of 5
    # gives the same rows, bit for bit (LeNet: convolutions at another batch size), and the engine
    # takes the handed rows for that model only, looping over convnets or vmapping MLPs.
    method = methods.get("mistakes", max_probes=12, min_probes=2)
    for zoo, strategy in ((nets[3:], "sequential"), (nets[:2], "vmap")):
        zoo = [*zoo, dataclasses.replace(zoo[0], name="copy")]  # the reference again: it takes the rows too
        probes = engine.probes_for(method, labelled, KEY, zoo[0], EngineConfig(probe_chunk=7))
        assert probes.reference_rows.shape == (12, 10)
        config = EngineConfig(strategy=strategy, probe_chunk=5)
        handed = engine.signatures(method, zoo, probes, config)
        again = engine.signatures(method, zoo, dataclasses.replace(probes, reference_rows=None), config)
        np.testing.assert_array_equal(handed.matrix, again.matrix)
        rolled = dataclasses.replace(probes, reference_rows=np.roll(np.asarray(probes.reference_rows), 1, axis=1))
        taken = engine.signatures(method, zoo, rolled, config)
        assert taken.matrix[0] @ again.matrix[0] < 0.5 and taken.matrix[2] @ again.matrix[2] < 0.5  # taken ...
        np.testing.assert_array_equal(taken.matrix[1], again.matrix[1])  # ... for the reference only
    half = engine.signatures(method, zoo, rolled, EngineConfig(strategy="vmap", dtype="bfloat16"))
    assert half.matrix[0] @ again.matrix[0] > 0.9  # bfloat16 casts the reference: it runs again


def test_default_compare_is_the_same_with_the_reference_rows_handed_over(nets, monkeypatch):
    # The default verdict as fitted (mistakes on 1,000 "mnist:test" seeds, up to 500 probes) gives
    # the same JSON whether the engine takes the reference's rows from the probe builder or runs it.
    import jaxprov

    a, b, null = nets[3], nets[4], nets[:2]
    handed = jaxprov.compare(a, b, null=null, key=KEY)
    assert handed["mistakes"].similarity > 0 and handed.answer.probability is not None
    monkeypatch.setattr(engine, "_reference_positions", lambda *args: [])
    assert jaxprov.compare(a, b, null=null, key=KEY).to_json() == handed.to_json()
