"""ModelGiF gradient fields: the path integral is right (completeness), signatures are unit vectors
whose dot product is the mean cosine over points, batching changes nothing, the sketch keeps
similarities, text models work through their embeddings, and on the MNIST zoo every derived model
scores above every independent one.

CI sizes: 32 anchors x 20 steps on the zoo (the defaults are 256 x 50) to stay fast on CPU.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxprov import models
from jaxprov.engine import EngineConfig, signatures
from jaxprov.errors import JaxprovError
from jaxprov.methods import get
from jaxprov.methods.gradfield import GradientField, gauss_legendre, projection_vector
from jaxprov.model import ModelFns
from jaxprov.models.bert import mean_pool
from jaxprov.probes import Probes

SEQUENTIAL = EngineConfig(strategy="sequential", shard=False)
ZOO_ANCHORS, ZOO_STEPS = 32, 20
TINY_BERT = "minilm-l6[vocab_size=50,hidden_size=16,num_layers=1,num_heads=2,intermediate_size=32," \
            "max_position_embeddings=12]"


def _tanh_mlp(params, x):
    """A smooth model (analytic in x), so 20-point Gauss-Legendre is exact to float32 rounding."""
    return jnp.tanh(x @ params["w1"]) @ params["w2"]


def _tanh_params(key, d_in=12, hidden=16, d_out=5):
    k1, k2 = jax.random.split(key)
    return {"w1": jax.random.normal(k1, (d_in, hidden)) / np.sqrt(d_in),
            "w2": jax.random.normal(k2, (hidden, d_out)) * 2.0}


def _scalar(out, target, cls):
    if target == "top1":
        return out[jnp.arange(out.shape[0]), cls]
    if target == "sum":
        return out.sum(-1)
    return out @ projection_vector(out.shape[-1], 0)


def test_gauss_legendre_nodes_and_weights_on_unit_interval():
    nodes, weights = gauss_legendre(7)
    assert np.all(np.diff(nodes) > 0) and 0 < nodes[0] and nodes[-1] < 1
    # 7 points integrate polynomials up to degree 13 exactly: int_0^1 a^13 da = 1/14.
    np.testing.assert_allclose(np.sum(weights * nodes ** 13), 1 / 14, rtol=1e-6)


def test_projection_direction_does_not_depend_on_the_output_size():
    np.testing.assert_array_equal(projection_vector(3, 0), projection_vector(7, 0)[:3])
    assert not np.allclose(projection_vector(3, 0), projection_vector(3, 1))


@pytest.mark.parametrize("target", ["top1", "sum", "projection"])
@pytest.mark.parametrize("reference", ["zeros", "random"])
def test_field_completeness_on_a_smooth_model(target, reference):
    """Integrated gradients' completeness: the field at the last step sums to f(x) - f(x0)."""
    params = _tanh_params(jax.random.PRNGKey(0))
    method = GradientField(steps=20, n_seeds=6, target=target, reference=reference)
    x = jax.random.normal(jax.random.PRNGKey(1), (6, 12))
    probes = method.make_probes(Probes(x), jax.random.PRNGKey(2))
    x0 = probes.inputs["x0"]
    assert bool(jnp.any(x0 != 0)) == (reference == "random")
    field = jax.jit(lambda p, i: method.field(ModelFns(_tanh_mlp), p, i))(params, probes.inputs)
    assert field.shape == (6, 20, 12)
    cls = jnp.argmax(_tanh_mlp(params, x), axis=-1)  # the class at the anchor, fixed along the path
    expected = _scalar(_tanh_mlp(params, x), target, cls) - _scalar(_tanh_mlp(params, x0), target, cls)
    np.testing.assert_allclose(field[:, -1].sum(-1), expected, rtol=1e-4, atol=1e-5)


def test_random_reference_lies_in_the_valid_box_and_follows_the_key(mnist_zoo):
    model = mnist_zoo["base"]
    method = GradientField(n_seeds=3, reference="random")
    seeds = Probes(jnp.asarray(mnist_zoo["data"][0][:3]))
    a = method.make_probes(seeds, jax.random.PRNGKey(5), reference=model)
    b = method.make_probes(seeds, jax.random.PRNGKey(5), reference=model)
    c = method.make_probes(seeds, jax.random.PRNGKey(6), reference=model)
    lo, hi = model.input_spec.bounds()
    x0 = np.asarray(a.inputs["x0"])
    assert x0.min() >= lo.min() and x0.max() <= hi.max() and x0.std() > 0.5 * (hi - lo).max() / np.sqrt(12)
    assert a.digest == b.digest != c.digest
    explicit = method.make_probes(seeds, jax.random.PRNGKey(5), reference=np.ones((28, 28, 1), np.float32))
    np.testing.assert_array_equal(explicit.inputs["x0"], np.ones((3, 28, 28, 1)))


def test_bad_config_is_a_clear_error():
    with pytest.raises(JaxprovError, match="target"):
        get("gradient_field", target="top5")
    with pytest.raises(JaxprovError, match="reference"):
        GradientField(reference="blur")


# ---------------------------------------------------------------------------------------------
# Text: gradients w.r.t. the word embeddings of a tiny random BERT.


def _text_probes(method, n=4, seq=8):
    ids = jax.random.randint(jax.random.PRNGKey(2), (n, seq), 1, 50).astype(jnp.int32)
    mask = jnp.ones((n, seq), jnp.int32).at[1, 5:].set(0)  # one padded sentence
    return method.make_probes(Probes({"input_ids": ids, "attention_mask": mask}), jax.random.PRNGKey(0))


@pytest.fixture(scope="module")
def tiny_berts():
    """Two random tiny encoders (last_hidden_state) and one sequence classifier (logits)."""
    return {"encoder0": models.init(TINY_BERT, jax.random.PRNGKey(0), name="encoder0"),
            "encoder1": models.init(TINY_BERT, jax.random.PRNGKey(1), name="encoder1"),
            "classifier": models.init(TINY_BERT.replace("l6[", "l6-cls["), jax.random.PRNGKey(2), name="classifier")}


@pytest.mark.parametrize("name, target", [("encoder0", "auto"), ("classifier", "top1")])
def test_text_field_is_taken_on_embeddings_and_complete(tiny_berts, name, target):
    model = tiny_berts[name]
    method = GradientField(steps=10, n_seeds=4, target=target)
    probes = _text_probes(method)
    tokens = probes.inputs["x"]
    field = jax.jit(lambda p, i: method.field(model.fns, p, i))(model.params, probes.inputs)
    assert field.shape == (4, 10, 8 * 16)
    emb = model.params["params"]["embeddings"]["word_embeddings"]["embedding"][tokens["input_ids"]]

    @jax.jit
    def pooled_output(e):
        out = model.apply(model.params, {"inputs_embeds": e, "attention_mask": tokens["attention_mask"]})
        return mean_pool(out, tokens["attention_mask"]) if out.ndim == 3 else out

    out_x, out_0 = pooled_output(emb), pooled_output(jnp.zeros_like(emb))
    # "auto" on a last_hidden_state encoder = the projection of the mask-pooled output.
    chosen = "projection" if target == "auto" else "top1"
    cls = jnp.argmax(out_x, axis=-1)
    expected = _scalar(out_x, chosen, cls) - _scalar(out_0, chosen, cls)
    np.testing.assert_allclose(field[:, -1].sum(-1), expected, rtol=1e-3, atol=1e-4)
    # Padded tokens cannot change the output, so their part of the field is exactly zero.
    padded = field[1].reshape(10, 8, 16)[:, 5:]
    assert float(jnp.abs(padded).max()) == 0.0


def test_text_signatures_through_the_engine(tiny_berts):
    zoo = [tiny_berts["encoder0"], tiny_berts["encoder1"], tiny_berts["encoder0"]]
    method = GradientField(steps=10, n_seeds=4)
    sigs = signatures(method, zoo, _text_probes(method), SEQUENTIAL)
    np.testing.assert_allclose(np.linalg.norm(sigs.matrix, axis=1), 1.0, atol=1e-5)
    sim = sigs.matrix @ sigs.matrix.T
    assert abs(sim[0, 2] - 1.0) <= 1e-5 and sim[0, 1] < 0.9


# ---------------------------------------------------------------------------------------------
# The MNIST zoo.


@pytest.fixture(scope="module")
def zoo_run(mnist_zoo):
    """The zoo's signatures on 32 test-image anchors x 20 steps, exact and sketched."""
    zoo = mnist_zoo
    derived = [zoo["finetuned"], zoo["pruned"], zoo["distilled"]]
    members = [zoo["base"], *derived, *zoo["independent"]]
    x_test = np.asarray(zoo["data"][0])
    index = np.sort(np.asarray(jax.random.choice(jax.random.PRNGKey(11), len(x_test), (ZOO_ANCHORS,),
                                                 replace=False)))
    sketched = GradientField(steps=ZOO_STEPS, n_seeds=ZOO_ANCHORS)
    exact = GradientField(steps=ZOO_STEPS, n_seeds=ZOO_ANCHORS, sketch_dim=None)
    probes = sketched.make_probes(Probes(jnp.asarray(x_test[index]), {"source": "mnist_zoo test"}),
                                  jax.random.PRNGKey(12))
    return {"members": members, "n_derived": len(derived), "probes": probes, "method": sketched,
            "sketched": signatures(sketched, members, probes, SEQUENTIAL),
            "exact": signatures(exact, members, probes, SEQUENTIAL)}


def test_signatures_are_unit_self_similar_and_match_the_mean_cosine(zoo_run):
    for kind in ("sketched", "exact"):
        sigs = zoo_run[kind]
        assert not sigs.dead.any()
        np.testing.assert_allclose(np.linalg.norm(sigs.matrix, axis=1), 1.0, atol=1e-5)
        np.testing.assert_allclose(np.diag(sigs.matrix @ sigs.matrix.T), 1.0, atol=1e-5)
    # ModelGiF's own formula on the raw fields: 1 - distance = mean over points of cos.
    base, other = zoo_run["members"][0], zoo_run["members"][-1]  # a LeNet and an MLP
    method = GradientField(steps=ZOO_STEPS, n_seeds=ZOO_ANCHORS, sketch_dim=None)
    field = jax.jit(method.field, static_argnums=0)
    fa, fb = (np.asarray(field(m.fns, m.params, zoo_run["probes"].inputs), np.float64) for m in (base, other))
    cos = np.sum(fa * fb, -1) / (np.linalg.norm(fa, axis=-1) * np.linalg.norm(fb, axis=-1))
    exact = zoo_run["exact"].matrix
    assert abs(float(exact[0] @ exact[-1]) - cos.mean()) <= 1e-5


def test_dead_model_is_flagged_without_nan(zoo_run):
    base = zoo_run["members"][0]
    dead = base.replace(name="dead", params=jax.tree_util.tree_map(jnp.zeros_like, base.params))
    sigs = signatures(zoo_run["method"], [base, dead], zoo_run["probes"], SEQUENTIAL)
    assert sigs.dead.tolist() == [False, True]
    assert np.isfinite(sigs.matrix).all() and not sigs.matrix[1].any()


def test_vmapped_zoo_equals_one_model_at_a_time(zoo_run):
    """A few anchors and steps (vmapped convs are grouped convs: slow on CPU); odd chunk sizes."""
    method = GradientField(steps=6, n_seeds=7)
    probes = zoo_run["probes"].take(0, 7)
    members = zoo_run["members"][:3]
    one_by_one = signatures(method, members, probes, EngineConfig(strategy="sequential", probe_chunk=5, shard=False))
    vmapped = signatures(method, members, probes, EngineConfig(strategy="vmap", model_chunk=2, probe_chunk=3))
    np.testing.assert_allclose(vmapped.matrix, one_by_one.matrix, atol=1e-5)


def test_sketch_keeps_similarities(zoo_run):
    sketched = zoo_run["sketched"].matrix @ zoo_run["sketched"].matrix.T
    exact = zoo_run["exact"].matrix @ zoo_run["exact"].matrix.T
    error = np.abs(sketched - exact).max()
    assert error <= 0.02, f"max |sketched - exact| similarity = {error:.4f}"


@pytest.mark.parametrize("kind", ["sketched", "exact"])
def test_every_derived_model_scores_above_every_independent_one(zoo_run, kind):
    sim = zoo_run[kind].matrix[1:] @ zoo_run[kind].matrix[0]
    n = zoo_run["n_derived"]
    assert sim[:n].min() > sim[n:].max(), f"derived {np.round(sim[:n], 3)}, independent {np.round(sim[n:], 3)}"
