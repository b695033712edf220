"""The peers' baselines (SAC, IPGuard, weight cosine, linear CKA) on the shared engine: each matches
its defining formula computed directly in numpy, and the engine's batching changes nothing."""

import dataclasses

import jax
import numpy as np
import pytest

from jaxprov import datasets, models
from jaxprov.engine import EngineConfig, signatures
from jaxprov.errors import JaxprovError
from jaxprov.methods import baselines, similarity
from jaxprov.methods.base import Method
from jaxprov.probes import Probes, adapt, seeds

N_PROBES = 12
SEQUENTIAL = EngineConfig(strategy="sequential", probe_chunk=7, shard=False)
VMAPPED = EngineConfig(strategy="vmap", model_chunk=2, probe_chunk=5)  # padded last chunks, 4 devices


def _scaled(model, factor: float, name: str):
    """`model` with every param multiplied by `factor` (a ReLU MLP's argmax is unchanged)."""
    return model.replace(name=name, params=jax.tree_util.tree_map(lambda a: a * factor, model.params))


@pytest.fixture(scope="module")
def zoo():
    """Three MLPs of one arch, one with a narrower last hidden layer (16 vs 24 features), one with
    5 outputs instead of 10. Every param x2 (logits x4 to x8), so the top-2 gaps at the seeds are wide."""
    base = [models.init("mlp[hidden=32:16]", jax.random.PRNGKey(i), name=f"mlp{i}") for i in range(3)]
    narrow = models.init("mlp[hidden=24]", jax.random.PRNGKey(7), name="narrow")
    five = models.init("mlp[hidden=32:16,num_classes=5]", jax.random.PRNGKey(8), name="five")
    return [_scaled(m, 2.0, m.name) for m in (*base, narrow, five)]


@pytest.fixture(scope="module")
def seed_probes(zoo):
    return seeds("digits", zoo[0].input_spec, N_PROBES, jax.random.PRNGKey(1))


def _x(probes) -> np.ndarray:
    return np.asarray(probes.inputs["x"], np.float64)


def _outputs(model, x) -> np.ndarray:
    return np.asarray(model.apply(model.params, x), np.float64)


def _pairwise(method, zoo, probes, config=EngineConfig()):
    sigs = signatures(method, zoo, probes, config)
    return sigs, np.asarray(method.pairwise(sigs.matrix, sigs.matrix), np.float64)


# ---------------------------------------------------------------------------------------------
# SAC


def test_sac_is_the_mean_abs_difference_of_cosine_matrices(zoo, seed_probes, monkeypatch):
    method = baselines.SAC()
    probes = method.make_probes(seed_probes, jax.random.PRNGKey(2))
    sigs, sim = _pairwise(method, zoo, probes)

    def cosine_matrix(model):
        out = _outputs(model, _x(probes))
        unit = out / np.linalg.norm(out, axis=1, keepdims=True)
        return unit @ unit.T

    mats = [cosine_matrix(m) for m in zoo]  # the 5-output model compares too: the matrix is n x n
    upper = np.triu_indices(N_PROBES, 1)
    expected = np.array([[1 - np.abs(a[upper] - b[upper]).mean() for b in mats] for a in mats])
    np.testing.assert_allclose(sim, expected, atol=1e-5)
    np.testing.assert_allclose(np.diag(sim), 1.0, atol=1e-5)
    assert sigs.matrix.shape == (len(zoo), N_PROBES * (N_PROBES - 1) // 2)
    assert sim[0, 1] < 0.999  # distinct models are told apart

    # Chunked over a few rows at a time: the same numbers.
    monkeypatch.setattr(similarity, "PAIRWISE_CHUNK_ELEMENTS", 2 * sigs.matrix.shape[1] * len(zoo))
    np.testing.assert_allclose(method.pairwise(sigs.matrix, sigs.matrix), sim, atol=1e-6)


def test_cutmix_pastes_a_box_of_another_seed_deterministically(seed_probes):
    method = baselines.SAC(cutmix=True)
    x = np.asarray(seed_probes.inputs)
    a = method.make_probes(seed_probes, jax.random.PRNGKey(3))
    b = method.make_probes(seed_probes, jax.random.PRNGKey(3))
    c = method.make_probes(seed_probes, jax.random.PRNGKey(4))
    assert a.digest == b.digest and a.digest != c.digest
    mixed = np.asarray(a.inputs["x"])
    fractions = []
    for i in range(len(x)):
        changed = np.any(mixed[i] != x[i], axis=-1)  # [H, W]
        if changed.any():
            rows, cols = np.nonzero(changed)
            box = (slice(rows.min(), rows.max() + 1), slice(cols.min(), cols.max() + 1))
            sources = [j for j in range(len(x)) if j != i and np.array_equal(mixed[i][box], x[j][box])]
            assert sources, f"probe {i}: the pasted box comes from no other seed"
        fractions.append(changed.mean())
    assert 0.0 < np.mean(fractions) < 1.0


# ---------------------------------------------------------------------------------------------
# IPGuard


def test_ipguard_points_lie_just_past_the_reference_boundary(zoo, seed_probes):
    method = baselines.IPGuard(iters=20, margin=0.1)
    reference = zoo[0]
    probes = method.make_probes(seed_probes, jax.random.PRNGKey(5), reference)
    at_seeds, at_points = _outputs(reference, np.asarray(seed_probes.inputs)), _outputs(reference, _x(probes))
    top1, top2 = np.argsort(at_seeds, axis=1)[:, -1], np.argsort(at_seeds, axis=1)[:, -2]
    rows = np.arange(N_PROBES)
    seed_gap = at_seeds[rows, top1] - at_seeds[rows, top2]
    crossed = at_points[rows, top2] - at_points[rows, top1]  # the runner-up now leads by the margin
    top = np.sort(at_points, axis=1)
    assert np.median(seed_gap) > 5 * method.margin  # the seeds start far from the boundary
    assert np.mean(np.abs(crossed - method.margin) < 0.02) >= 0.9  # ... and end just past it
    assert np.mean(np.abs(top[:, -1] - top[:, -2] - method.margin) < 0.02) >= 0.9  # no third label took over
    assert np.mean(np.argmax(at_points, axis=1) == top2) >= 0.9
    lo, hi = reference.input_spec.bounds()
    assert _x(probes).min() >= float(np.min(lo)) - 1e-6 and _x(probes).max() <= float(np.max(hi)) + 1e-6

    same_labels = [reference, _scaled(reference, 3.0, "scaled"), *zoo[1:4]]
    sigs, sim = _pairwise(method, same_labels, probes)
    labels = [np.argmax(_outputs(m, _x(probes)), axis=1) for m in same_labels]
    expected = np.array([[np.mean(a == b) for b in labels] for a in labels])
    np.testing.assert_allclose(sim, expected, atol=1e-6)
    assert sim[0, 0] == pytest.approx(1.0) and sim[0, 1] == pytest.approx(1.0)  # itself, a scaled copy
    assert sim[0, 2] < 1.0  # an unrelated model disagrees near the reference's boundary


def test_ipguard_pads_and_flags_models_with_other_label_spaces(zoo, seed_probes):
    method = baselines.IPGuard(iters=3)
    assert method.comparable == "output_size"
    probes = method.make_probes(seed_probes, jax.random.PRNGKey(5), zoo[0])
    sigs = signatures(method, [zoo[0], zoo[4]], probes)
    assert sigs.matrix.shape == (2, N_PROBES * 10)  # the 5-class signature is zero-padded
    assert np.count_nonzero(sigs.matrix[1, N_PROBES * 5:]) == 0


def test_ipguard_needs_a_reference(seed_probes):
    with pytest.raises(JaxprovError, match="reference"):
        baselines.IPGuard().make_probes(seed_probes, jax.random.PRNGKey(0))


# ---------------------------------------------------------------------------------------------
# Mistake agreement


def test_mistakes_probes_are_the_reference_errors_and_similarity_is_agreement_there(zoo):
    labelled = seeds("digits", zoo[0].input_spec, 200, jax.random.PRNGKey(3))
    method = baselines.Mistakes(min_probes=5)
    reference = zoo[0]
    probes = method.make_probes(labelled, jax.random.PRNGKey(0), reference)
    predicted = np.argmax(_outputs(reference, np.asarray(labelled.inputs)), axis=1)
    wrong = predicted != labelled.labels
    assert 5 <= wrong.sum() < 200  # an untrained net gets some digits right by chance, most wrong
    np.testing.assert_array_equal(_x(probes), np.asarray(labelled.inputs, np.float64)[wrong])
    assert probes.meta["n_mistakes"] == int(wrong.sum())
    assert probes.meta["reference"]["name"] == reference.name

    same_labels = [reference, _scaled(reference, 3.0, "scaled"), *zoo[1:4]]
    sigs, sim = _pairwise(method, same_labels, probes)
    labels = [np.argmax(_outputs(m, _x(probes)), axis=1) for m in same_labels]
    np.testing.assert_allclose(sim, [[np.mean(a == b) for b in labels] for a in labels], atol=1e-6)
    assert sim[0, 1] == pytest.approx(1.0)  # a rescaled copy makes every mistake of the reference
    assert sim[0, 2] < 0.9

    capped = baselines.Mistakes(max_probes=7, min_probes=5).make_probes(labelled, jax.random.PRNGKey(0), reference)
    np.testing.assert_array_equal(_x(capped), _x(probes)[:7])  # the first mistakes in seed order


def test_mistakes_needs_labelled_seeds_and_enough_mistakes(zoo, tmp_path):
    unlabelled = seeds("synthetic", zoo[0].input_spec, 50, jax.random.PRNGKey(3))
    with pytest.raises(JaxprovError, match="labelled seeds .*mnist:test"):
        baselines.Mistakes().make_probes(unlabelled, jax.random.PRNGKey(0), zoo[0])
    labelled = seeds("digits", zoo[0].input_spec, 30, jax.random.PRNGKey(3))
    with pytest.raises(JaxprovError, match="misclassifies only .* of 30 labelled seeds"):
        baselines.Mistakes(min_probes=31).make_probes(labelled, jax.random.PRNGKey(0), zoo[0])
    with pytest.raises(JaxprovError, match="reference"):
        baselines.Mistakes().make_probes(labelled, jax.random.PRNGKey(0))


def test_labelled_seed_sources():
    from jaxprov import datasets as data

    spec = models.init("mlp[hidden=8]", jax.random.PRNGKey(0)).input_spec
    drawn = seeds("mnist:test", spec, 40, jax.random.PRNGKey(2))
    raw, labels = data.domain("mnist")["test"]
    # The same digits, in order, with their labels (find each drawn image among the split's).
    normalised = np.asarray(data.inputs("mnist:test", spec)[0]).reshape(len(raw), -1)
    index = [int(np.argmin(np.abs(normalised - row).sum(axis=1))) for row in np.asarray(drawn.inputs).reshape(40, -1)]
    np.testing.assert_array_equal(drawn.labels, labels[index])
    assert index == sorted(index) and len(set(index)) == 40
    with pytest.raises(JaxprovError, match="unknown data split 'mnist:nope'"):
        seeds("mnist:nope", spec, 4, jax.random.PRNGKey(2))


def test_npz_seeds_carry_labels_and_bad_labels_are_one_clear_error(tmp_path):
    spec = models.init("mlp[hidden=8]", jax.random.PRNGKey(0)).input_spec
    x = np.random.default_rng(0).uniform(size=(10, 28, 28, 1)).astype(np.float32)
    np.savez(tmp_path / "ok.npz", x=x, y=np.arange(10))
    drawn = seeds(str(tmp_path / "ok.npz"), spec, 4, jax.random.PRNGKey(2))
    normalised = np.asarray(adapt(x, spec)).reshape(10, -1)
    picked = [int(np.argmin(np.abs(normalised - row).sum(axis=1))) for row in np.asarray(drawn.inputs).reshape(4, -1)]
    np.testing.assert_array_equal(drawn.labels, picked)
    np.savez(tmp_path / "bad.npz", x=x, y=np.zeros(3))
    with pytest.raises(JaxprovError, match="bad.npz: 'y' must hold one integer label per image"):
        seeds(str(tmp_path / "bad.npz"), spec, 4, jax.random.PRNGKey(2))
    assert seeds(str(tmp_path / "ok.npz"), spec, 4, jax.random.PRNGKey(2)).digest != Probes(drawn.inputs,
                                                                                              drawn.meta).digest


def test_seeds_adapted_in_jitted_chunks_equal_the_op_by_op_adapt():
    # 70 digits resized to 40 x 40, grey repeated to RGB, ImageNet-normalised: one chunk of 64 and
    # a padded one of 6, each a jitted program; the values are adapt's on all 70 at once, bit for bit.
    from jaxprov.model import InputSpec
    from jaxprov.probes import _adapt_in_chunks

    spec = InputSpec("image", "NHWC", (40, 40, 3), mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225))
    raw = datasets.mnist_images()[0][:70]
    chunked = _adapt_in_chunks(raw, spec)
    assert chunked.shape == (70, 40, 40, 3) and chunked.dtype == np.float32
    np.testing.assert_array_equal(chunked, np.asarray(adapt(raw, spec)))
    assert _adapt_in_chunks(raw[:0], spec).shape == (0, 40, 40, 3)


# ---------------------------------------------------------------------------------------------
# Weight cosine


def test_weight_cosine(zoo):
    method = baselines.WeightCosine()
    probes = method.make_probes(None, jax.random.PRNGKey(0))
    family = [zoo[0], _scaled(zoo[0], 2.5, "scaled"), zoo[1], zoo[3]]  # zoo[3]: another arch
    sigs, sim = _pairwise(method, family, probes)
    np.testing.assert_allclose(np.diag(sim), 1.0, atol=1e-5)
    assert sim[0, 1] == pytest.approx(1.0, abs=1e-5)  # a scaled copy points the same way
    assert abs(sim[0, 2]) < 0.2  # independent inits are near-orthogonal
    flat = np.concatenate([np.ravel(a) for a in jax.tree_util.tree_leaves(zoo[0].params)])
    np.testing.assert_allclose(sigs.matrix[0, :flat.size], flat / np.linalg.norm(flat), atol=1e-6)
    assert np.count_nonzero(sigs.matrix[0, flat.size:]) == 0  # padded to the other arch's length


def test_weight_cosine_ignores_batch_stats_and_integers():
    method = baselines.WeightCosine()
    w = {"conv": {"kernel": np.arange(6.0, dtype=np.float32).reshape(2, 3)}, "bias": np.ones(2, np.float32)}
    a = {"params": w, "batch_stats": {"mean": np.zeros(3, np.float32)}, "step": {"count": np.int32(7)}}
    b = {"params": w, "batch_stats": {"mean": np.full(3, 5.0, np.float32)}, "step": {"count": np.int32(9)}}
    sa, sb = (np.asarray(method.finalize(method.rows(None, p, None))) for p in (a, b))
    np.testing.assert_array_equal(sa, sb)
    flat = np.concatenate([np.ones(2), np.arange(6.0)])  # tree order: "bias" before "conv"
    np.testing.assert_allclose(sa, flat / np.linalg.norm(flat), atol=1e-7)


# ---------------------------------------------------------------------------------------------
# Linear CKA


def _linear_cka(x: np.ndarray, y: np.ndarray) -> float:
    """Kornblith et al. (2019), eq. for linear CKA on column-centred features."""
    x, y = x - x.mean(0), y - y.mean(0)
    return float(np.linalg.norm(y.T @ x) ** 2 / (np.linalg.norm(x.T @ x) * np.linalg.norm(y.T @ y)))


def test_cka_equals_the_direct_formula(zoo, seed_probes):
    method = baselines.CKA()
    probes = method.make_probes(seed_probes, jax.random.PRNGKey(0))
    sigs, sim = _pairwise(method, zoo, probes)
    feats = [np.asarray(m.features(m.params, _x(probes))["pre_logits"], np.float64) for m in zoo]
    assert {f.shape[1] for f in feats} == {16, 24}  # different widths compare
    expected = np.array([[_linear_cka(a, b) for b in feats] for a in feats])
    np.testing.assert_allclose(sim, expected, atol=1e-5)
    np.testing.assert_allclose(np.diag(sim), 1.0, atol=1e-5)
    assert sigs.matrix.shape == (len(zoo), N_PROBES * (N_PROBES + 1) // 2)


def test_cka_is_invariant_to_rotation_and_scale_not_to_any_linear_map():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(N_PROBES, 20)).astype(np.float32)
    q, _ = np.linalg.qr(rng.normal(size=(20, 20)))
    method = baselines.CKA()
    s = np.asarray(method.finalize(x))
    rotated = np.asarray(method.finalize((3.0 * x @ q).astype(np.float32)))
    skewed = np.asarray(method.finalize(x @ np.diag(np.linspace(0.1, 10.0, 20)).astype(np.float32)))
    np.testing.assert_allclose(rotated, s, atol=1e-5)
    assert float(s @ rotated) == pytest.approx(1.0, abs=1e-5)
    assert float(s @ skewed) < 0.99


# ---------------------------------------------------------------------------------------------
# Engine: batching changes nothing; lengths must agree unless the method says they may not


@pytest.mark.parametrize("method", [baselines.SAC(), baselines.IPGuard(iters=5), baselines.CKA(),
                                    baselines.Mistakes(min_probes=1)], ids=lambda m: m.name)
def test_vmapped_equals_sequential(zoo, seed_probes, method):
    probes = method.make_probes(seed_probes, jax.random.PRNGKey(6), zoo[0])
    same_labels = zoo[:4]
    vmapped = signatures(method, same_labels, probes, VMAPPED).matrix
    sequential = signatures(method, same_labels, probes, SEQUENTIAL).matrix
    np.testing.assert_allclose(vmapped, sequential, atol=1e-5)


@dataclasses.dataclass(frozen=True)
class _RawOutputs(Method):
    name = "raw_outputs"

    def rows(self, fns, params, probes):
        return fns.apply(params, probes["x"])


def test_signatures_of_different_lengths_are_an_error_unless_declared(zoo, seed_probes):
    method = _RawOutputs()
    probes = method.make_probes(seed_probes, jax.random.PRNGKey(0))
    with pytest.raises(JaxprovError, match="different lengths"):
        signatures(method, [zoo[0], zoo[4]], probes)


# ---------------------------------------------------------------------------------------------
# A real zoo with known lineage


def _similarity_to_base(method, probes, mnist_zoo):
    """Similarity of base, its fine-tuned / pruned / distilled children and the 4 independent models
    to base, in that order, and the same as {name: rounded value}."""
    zoo = [mnist_zoo[n] for n in ("base", "finetuned", "pruned", "distilled")] + mnist_zoo["independent"]
    sigs = signatures(method, zoo, probes)
    sim = method.pairwise(sigs.matrix[:1], sigs.matrix)[0]
    return sim, dict(zip(sigs.names, np.round(sim, 4).tolist()))


# IPGuard's labels past the boundary are inherited by fine-tuned and pruned children, not learned by
# a distilled student (REFERENCE: IPGuard is weak on extraction); SAC and CKA catch all three.
@pytest.mark.parametrize("method, derived", [(baselines.SAC(), 3), (baselines.CKA(), 3), (baselines.IPGuard(), 2)],
                         ids=["sac", "cka", "ipguard"])
def test_mnist_zoo_children_score_above_independent_models(mnist_zoo, method, derived):  # noqa: F811
    """Children of "base" (fine-tuned, pruned[, distilled]) are more similar to it than every
    independently trained model (2 LeNets, 2 MLPs), on 100 real MNIST test digits."""
    x_test, _ = mnist_zoo["data"]
    index = np.sort(np.asarray(jax.random.choice(jax.random.PRNGKey(0), len(x_test), (method.n_seeds,),
                                                 replace=False)))
    probes = method.make_probes(Probes(jax.numpy.asarray(x_test[index]), {"source": "mnist-test"}),
                                jax.random.PRNGKey(1), mnist_zoo["base"])
    sim, scores = _similarity_to_base(method, probes, mnist_zoo)
    print(f"{method.name} similarity to base:", scores)
    assert abs(sim[0] - 1.0) < 1e-5
    assert sim[1:1 + derived].min() > sim[4:].max(), scores


def test_mnist_zoo_children_make_the_base_models_mistakes(mnist_zoo):  # noqa: F811
    """On the held-out MNIST digits the base misclassifies, its distilled copy predicts the base's
    wrong labels more often than any independently trained model does. (Fine-tuning on more
    labelled digits repairs many of the mistakes: on this zoo the fine-tuned child makes fewer of
    them than the independents, which is why the default verdict combines methods.)"""
    x_test, y_test = mnist_zoo["data"]
    method = baselines.Mistakes()
    probes = method.make_probes(Probes(jax.numpy.asarray(x_test), {"source": "mnist-test"}, np.asarray(y_test)),
                                jax.random.PRNGKey(1), mnist_zoo["base"])
    sim, scores = _similarity_to_base(method, probes, mnist_zoo)
    print(f"mistakes: {probes.n} probes; agreement with base:", scores)
    assert probes.n >= method.min_probes and abs(sim[0] - 1.0) < 1e-5
    assert sim[3] > sim[4:].max() + 0.1, scores
