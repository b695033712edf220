"""MAP mask pruning (jaxprov.protect): a mask learned on a small BatchNorm LeNet keeps the authorised
domain and removes the unauthorised one; the mask is binary, the frozen weights are unchanged bit for
bit, the protected model is a normal stored model; runs resume; synthesis, metric, baselines and the
CLI's one-line errors. One source model (MNIST-M-trained lenet_bn on a subset) is shared by the module."""

import dataclasses
import json
import zipfile

import jax
import numpy as np
import pytest

import jaxprov
from jaxprov import datasets, models, protect, store
from jaxprov.cli import main
from jaxprov.errors import JaxprovError
from jaxprov.protect import baselines, losses, masks, synth
from jaxprov.training import derive
from jaxprov.training.loop import accuracy, predict

# The run the outcome test asserts on: small enough for CI (2 cores), large enough to show it. Its
# weights are the first defaults (alpha 0.3, no separation term), not today's (alpha 0.6, beta 1):
# those push harder and need their 600 steps for the distillation to bring the authorised domain
# back (at 150 steps of 64 they kept 0.654 of 0.846, measured), which CI cannot afford.
CONFIG = protect.MapConfig(steps=150, batch=64, alpha=0.3, beta=0.0)
TINY_SYNTH = protect.SynthConfig(n=64, batch=64, steps=30)


@pytest.fixture(scope="module")
def domains():
    spec = models.create("lenet_bn")[2]
    xa, ya = datasets.inputs("mnistm:train", spec)
    xu, yu = datasets.inputs("mnist:base", spec)
    ta, tya = datasets.inputs("mnistm:test", spec)
    tu, tyu = datasets.inputs("mnist:test", spec)
    return {"train_a": (xa[:1500], ya[:1500]), "train_u": (xu[:1000], yu[:1000]),
            "test_a": (ta[:500], tya[:500]), "test_u": (tu[:500], tyu[:500])}


@pytest.fixture(scope="module")
def source(domains):
    x, y = domains["train_a"]
    return derive.train("lenet_bn", x, y, jax.random.PRNGKey(1), epochs=3, lr=2e-3, batch=64, name="src")


@pytest.fixture(scope="module")
def protected(source, domains):
    before = jax.tree_util.tree_map(np.array, source.params)
    result = protect.protect(source, "source-available", jax.random.PRNGKey(2), CONFIG,
                             authorised=domains["train_a"][0], unauthorised=domains["train_u"][0])
    return result, before


def test_the_mask_removes_the_unauthorised_domain_and_keeps_the_authorised_one(source, protected, domains):
    result, _ = protected
    e = protect.evaluate(source, result.model, domains["test_a"], domains["test_u"])
    assert e["unauthorised_before"] > 0.8  # an MNIST-M model reads MNIST digits: there is skill to remove
    # The small CI run's bounds (the targets, chance + 10 and a 2-point drop, are measured on
    # the full runs in docs/results.md): at least a third of the skill above chance removed, at most
    # 10 points of authorised accuracy lost.
    assert e["removed"] >= 1 / 3, e
    assert e["authorised_before"] - e["authorised_after"] <= 0.10, e
    assert e["st_d"] > 0.45, e


def test_the_mask_is_binary_and_the_frozen_weights_are_unchanged_bit_for_bit(source, protected):
    result, before = protected
    for a, b in zip(jax.tree_util.tree_leaves(before), jax.tree_util.tree_leaves(source.params)):
        assert np.asarray(a).tobytes() == np.asarray(b).tobytes()
    assert all(m.dtype == bool for m in result.run.masks.values())
    full = masks.per_weight(result.run.masks, source.params)
    kernels = {"/".join(str(getattr(k, "key", k)) for k in p): (np.asarray(w), np.asarray(v))
               for (p, w), (_, v) in zip(jax.tree_util.tree_flatten_with_path(source.params["params"])[0],
                                         jax.tree_util.tree_flatten_with_path(result.model.params["params"])[0])}
    for path, (w, v) in kernels.items():
        if path in full:  # kept weights are the source's bit for bit, removed ones are zero
            assert np.array_equal(v[full[path]], w[full[path]]) and not np.any(v[~full[path]])
        else:  # biases and BatchNorm are never masked
            assert v.tobytes() == w.tobytes()
    assert 0.0 < result.run.density < 1.0
    assert result.model.params["batch_stats"]["bn1"]["mean"].tobytes() == before["batch_stats"]["bn1"]["mean"].tobytes()


def test_the_protected_model_is_a_normal_stored_model(source, protected, tmp_path):
    result, _ = protected
    out = store.save_model(result.model, tmp_path / "protected")
    loaded = jaxprov.load(out)
    assert loaded.arch == source.arch and loaded.meta["lineage"]["parent"] == "src"
    assert loaded.meta["lineage"]["derivation"] == "map" and loaded.meta["protection"]["setting"] == "source-available"
    for a, b in zip(jax.tree_util.tree_leaves(result.model.params), jax.tree_util.tree_leaves(loaded.params)):
        assert np.asarray(a).tobytes() == np.asarray(b).tobytes()
    fresh = models.init("lenet_bn", jax.random.PRNGKey(7), name="fresh")
    sim = jaxprov.Zoo([source, loaded, fresh], seeds="mnist:test").similarity("weights")
    assert sim.values[0, 1] > 0.9 > sim.values[0, 2]


def test_a_run_resumes_from_its_checkpoint_exactly(source, domains, tmp_path):
    xa, xu = domains["train_a"][0][:256], domains["train_u"][0][:256]
    config = protect.MapConfig(steps=12, batch=32, checkpoint_every=4)
    straight = protect.learn(source, xa, xu, config, jax.random.PRNGKey(3))
    checkpoint = tmp_path / "run.npz"
    first = protect.learn(source, xa, xu, protect.MapConfig(steps=8, batch=32, checkpoint_every=4),
                          jax.random.PRNGKey(3), checkpoint)
    assert first.resumed_from == 0 and checkpoint.exists()
    resumed = protect.learn(source, xa, xu, config, jax.random.PRNGKey(3), checkpoint)
    assert resumed.resumed_from == 8
    for k in straight.scores:
        assert np.array_equal(straight.scores[k], resumed.scores[k])
    # jaxprov.checkpoint's rule: another run's checkpoint is ignored with a line (and overwritten) ...
    # (this other run also trains against a simulated attacker: MapConfig.gamma)
    with pytest.warns(UserWarning, match=f"{checkpoint}: a checkpoint of another MAP mask run"):
        other = protect.learn(source, xa, xu, protect.MapConfig(steps=4, batch=32, gamma=1.0),
                              jax.random.PRNGKey(3), checkpoint)
    assert other.resumed_from == 0
    assert other.history[-1]["after_attack"] > 0.0 and np.isfinite(other.history[-1]["after_attack"])
    # ... one of this run that does not fit its state, or a damaged file, is refused with one line.
    with zipfile.ZipFile(checkpoint) as z:
        members = {n: z.read(n) for n in z.namelist()}
    with zipfile.ZipFile(checkpoint, "w") as z:
        for n, raw in members.items():
            z.writestr(n, raw if n != "leaf0.npy" else raw[:-4])
    with pytest.raises(JaxprovError, match="does not fit this run") as err:
        protect.learn(source, xa, xu, protect.MapConfig(steps=4, batch=32, gamma=1.0), jax.random.PRNGKey(3),
                      checkpoint)
    assert str(err.value).startswith(f"{checkpoint}: ") and "delete it" in str(err.value)
    checkpoint.write_bytes(b"not an npz")
    with pytest.raises(JaxprovError, match="not a readable training checkpoint"):
        protect.learn(source, xa, xu, config, jax.random.PRNGKey(3), checkpoint)


def _bn_gap(model, inputs):
    """How far `inputs` leave every BatchNorm's batch statistics from the stored running ones."""
    return float(losses.bn_statistics(synth.bn_moments(model.module, model.params, inputs)[1]))


def test_batchnorm_synthesis_matches_the_running_statistics(source):
    x, record = synth.pseudo_source(source, jax.random.PRNGKey(4), TINY_SYNTH, "auto")
    assert record["method"] == "bn" and x.shape == (64, 28, 28, 3)
    start = source.input_spec.example(64, jax.random.fold_in(jax.random.PRNGKey(4), 0))

    assert _bn_gap(source, x) < 0.5 * _bn_gap(source, start)
    predicted = np.argmax(np.asarray(source(x)), axis=-1)
    assert np.mean(predicted == np.arange(64) % 10) > 0.9  # each input is read as its target class
    lo, hi = source.input_spec.bounds()
    assert np.all(x >= lo.min() - 1e-6) and np.all(x <= hi.max() + 1e-6)


def test_synthesis_started_from_unauthorised_inputs_restyles_them(source, domains):
    xu = domains["train_u"][0][:96]
    config = protect.SynthConfig(n=64, batch=32, steps=30, start="unauthorised")
    x, record = synth.pseudo_source(source, jax.random.PRNGKey(4), config, "bn", unauthorised=xu)
    assert record["start"] == "unauthorised" and x.shape == (64, 28, 28, 3)
    pick = np.sort(np.asarray(jax.random.permutation(jax.random.fold_in(jax.random.PRNGKey(4), synth.START_FOLD), 96))[:64])
    start = xu[pick]

    assert _bn_gap(source, x) < 0.5 * _bn_gap(source, start)  # restyled toward what the source's BatchNorm layers saw
    # each keeps the class the source gave its start (the content stays a digit the source reads)
    assert np.mean(np.argmax(np.asarray(source(x)), -1) == np.argmax(np.asarray(source(start)), -1)) > 0.9
    few, _ = synth.pseudo_source(source, jax.random.PRNGKey(4), config, "bn", unauthorised=xu[:40])
    assert few.shape[0] == 40  # fewer unauthorised inputs than n: each is started from once
    with pytest.raises(JaxprovError, match="needs unauthorised data.*data-free"):
        protect.protect(source, "data-free", jax.random.PRNGKey(0), protect.MapConfig(steps=2), synth_config=config)
    with pytest.raises(JaxprovError, match="unknown synthesis start 'photos'"):
        protect.SynthConfig(start="photos")


def test_flipped_synthesis_sees_mirrored_batches_and_stays_in_the_box(source):
    config = protect.SynthConfig(n=32, batch=32, steps=30, flip=True)
    x, record = synth.pseudo_source(source, jax.random.PRNGKey(4), config, "bn")
    plain, _ = synth.pseudo_source(source, jax.random.PRNGKey(4), protect.SynthConfig(n=32, batch=32, steps=30), "bn")
    assert record["flip"] is True and x.shape == plain.shape and not np.allclose(x, plain)
    lo, hi = source.input_spec.bounds()
    assert np.all(x >= lo.min() - 1e-6) and np.all(x <= hi.max() + 1e-6)


def test_the_keep_terms_hold_the_batchnorm_statistics_and_the_features_they_keep(source, domains):
    xa, xu = domains["train_a"][0][:256], domains["train_u"][0][:256]

    def gaps(config):
        run = protect.learn(source, xa, xu, config, jax.random.PRNGKey(3))
        masked = masks.apply(source.params, run.masks)
        (_, feats), moments = synth.bn_moments(source.module, masked, xa)
        return float(losses.bn_statistics(moments)), float(losses.features(feats, source.module.apply(source.params, xa)[1])), run

    hard = dict(steps=40, batch=64, alpha=3.0)
    free_bn, free_features, _ = gaps(protect.MapConfig(**hard))
    kept_bn, _, run = gaps(protect.MapConfig(**hard, bn_keep=1.0))
    assert "bn_keep" in run.history[-1] and kept_bn < free_bn
    _, kept_features, run = gaps(protect.MapConfig(**hard, feature_keep=10.0))
    assert "feature_keep" in run.history[-1] and kept_features < 0.8 * free_features
    _refused("bn_keep", "feature_keep")


def _refused(batchnorm_term: str, signed_term: str):
    """A model without BatchNorm is refused `batchnorm_term`, and a negative `signed_term` is refused,
    each with one line naming it."""
    plain = models.init("lenet", jax.random.PRNGKey(0), name="plain")
    with pytest.raises(JaxprovError, match=f"no BatchNorm layers.*{batchnorm_term}"):
        protect.learn(plain, np.zeros((4, 28, 28, 1), np.float32), np.zeros((4, 28, 28, 1), np.float32),
                      protect.MapConfig(steps=2, **{batchnorm_term: 1.0}), jax.random.PRNGKey(0))
    with pytest.raises(JaxprovError, match=f"{signed_term} must be >= 0"):
        protect.MapConfig(**{signed_term: -1.0})


def test_the_push_stops_on_batches_already_close_to_the_fixed_answer(source, domains):
    xa, xu = domains["train_a"][0][:256], domains["train_u"][0][:256]
    hard = dict(steps=75, batch=64, alpha=3.0)
    always = protect.learn(source, xa, xu, protect.MapConfig(**hard), jax.random.PRNGKey(3))
    gated = protect.learn(source, xa, xu, protect.MapConfig(**hard, push_until=0.5), jax.random.PRNGKey(3))
    assert all(h["push"] == 1.0 for h in always.history)
    # pushed exactly on the batches still above the threshold, and some were below it
    assert all(h["push"] == float(h["unauthorised"] > 0.5) for h in gated.history)
    assert min(h["unauthorised"] for h in gated.history) <= 0.5
    assert gated.density > always.density  # removal stopped on those batches, so fewer weights were taken
    with pytest.raises(JaxprovError, match="push_until must be >= 0"):
        protect.MapConfig(push_until=-1.0)


def test_the_mask_is_chosen_on_held_out_inputs_by_its_rule_and_resumes_to_the_same_choice(source, domains,
                                                                                          tmp_path):
    xa, xu = domains["train_a"][0][:256], domains["train_u"][0][:256]
    config = protect.MapConfig(steps=50, batch=32, alpha=3.0, select_n=48)
    traced = {}
    run = protect.learn(source, xa, xu, config, jax.random.PRNGKey(3),
                        trace=lambda row, hard: traced.setdefault(row["step"], hard))
    assert sorted(traced) == [h["step"] for h in run.history] == [25, 50]
    assert all(np.array_equal(traced[run.selected["step"]][k], run.masks[k]) for k in run.masks)  # that step's mask
    held = {role: np.asarray(run.held_out[role]) for role in ("authorised", "unauthorised")}
    assert all(len(idx) == 48 == len(set(idx.tolist())) for idx in held.values())
    # the chosen mask's recorded agreements are what it does on the held-out inputs
    chosen = source.replace(params=masks.apply(source.params, run.masks))
    for role, x in (("authorised", xa), ("unauthorised", xu)):
        answers = [np.argmax(np.asarray(predict(m, x[held[role]])), -1) for m in (source, chosen)]
        assert run.selected[f"held_{role}"] == pytest.approx(float(np.mean(answers[0] == answers[1])))
    # the rule: among steps from half the run on, the most authorised agreement within chance + 0.1
    # unauthorised agreement, else the best balance of the two
    rows = [h for h in run.history if h["step"] >= 25]
    assert run.selected["step"] in [h["step"] for h in rows] and all("held_authorised" in h for h in run.history)
    within = [h for h in rows if h["held_unauthorised"] <= 0.2]
    if within:
        assert run.selected["held_authorised"] == max(h["held_authorised"] for h in within)
    else:
        balance = [protect.st_d(1.0, h["held_authorised"], 1.0, h["held_unauthorised"], 0.1)["st_d"] for h in rows]
        assert protect.st_d(1.0, run.selected["held_authorised"], 1.0, run.selected["held_unauthorised"],
                            0.1)["st_d"] == max(balance)
    # a run interrupted at step 25 (its last checkpoint at 20) and resumed makes the same choice
    checkpoint = tmp_path / "run.npz"

    def stop(stage, done, total):
        if done == 25:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        protect.learn(source, xa, xu, dataclasses.replace(config, checkpoint_every=10), jax.random.PRNGKey(3),
                      checkpoint, progress=stop)
    resumed = protect.learn(source, xa, xu, dataclasses.replace(config, checkpoint_every=10), jax.random.PRNGKey(3),
                            checkpoint)
    assert resumed.resumed_from == 20 and resumed.selected == run.selected
    assert all(np.array_equal(resumed.masks[k], run.masks[k]) for k in run.masks)
    with pytest.raises(JaxprovError, match=r"select_n \(256\) holds out at least every authorised input"):
        protect.learn(source, xa, xu, protect.MapConfig(steps=2, select_n=256), jax.random.PRNGKey(3))
    for bad in ({"select_from": 0.0}, {"select_n": -1}, {"alpha": -1.0}):
        with pytest.raises(JaxprovError, match=f"{next(iter(bad))} must be"):
            protect.MapConfig(**bad)


def test_the_held_out_choice_reads_the_labels_it_is_given_and_the_source_answers_otherwise(source, domains):
    (xa, ya), (xu, yu) = ((x[:256], y[:256]) for x, y in (domains["train_a"], domains["train_u"]))
    config = protect.MapConfig(steps=50, batch=32, alpha=3.0, select_n=48)
    run = protect.learn(source, xa, xu, config, jax.random.PRNGKey(3), authorised_y=ya, unauthorised_y=yu)
    assert run.selected["scored_on"] == {"authorised": "labels", "unauthorised": "labels"}
    chosen = source.replace(params=masks.apply(source.params, run.masks))
    for role, x, y in (("authorised", xa, ya), ("unauthorised", xu, yu)):
        idx = np.asarray(run.held_out[role])
        assert run.selected[f"held_{role}"] == pytest.approx(accuracy(chosen, x[idx], y[idx]))
    # labels that are the source's own answers make the same run as no labels: the answers stand in for them
    answers = np.argmax(np.asarray(predict(source, xa)), -1)
    short = dataclasses.replace(config, steps=25)
    as_answers = protect.learn(source, xa, xu, short, jax.random.PRNGKey(3), authorised_y=answers)
    plain = protect.learn(source, xa, xu, short, jax.random.PRNGKey(3))
    assert as_answers.selected["scored_on"] == {"authorised": "labels", "unauthorised": "source answers"}
    assert plain.selected["scored_on"] == {"authorised": "source answers", "unauthorised": "source answers"}
    assert [h["held_authorised"] for h in as_answers.history] == [h["held_authorised"] for h in plain.history]
    with pytest.raises(JaxprovError, match="unauthorised labels must be 256 integers, one per input"):
        protect.learn(source, xa, xu, config, jax.random.PRNGKey(3), unauthorised_y=yu[:10])
    with pytest.raises(JaxprovError, match="authorised labels span 1..10; the model has 10 classes"):
        protect.learn(source, xa, xu, config, jax.random.PRNGKey(3), authorised_y=np.where(ya == 0, 10, ya))
    with pytest.raises(JaxprovError, match="authorised labels given without authorised data"):
        protect.protect(source, "source-free", jax.random.PRNGKey(3), config, unauthorised=xu, authorised_y=ya)


def test_batchnorm_synthesis_on_a_model_without_batchnorm_is_one_line():
    plain = models.init("lenet", jax.random.PRNGKey(0), name="plain")
    with pytest.raises(JaxprovError, match="has no BatchNorm layers.*--synthesis inversion"):
        protect.protect(plain, "source-free", jax.random.PRNGKey(0), unauthorised=np.zeros((4, 28, 28, 1), np.float32),
                        synthesis="bn")
    assert synth.resolve_method(plain, "auto") == "inversion"


def test_data_free_learns_from_synthesised_domains_only(source):
    result = protect.protect(source, "data-free", jax.random.PRNGKey(5), protect.MapConfig(steps=10, batch=32),
                             synth_config=TINY_SYNTH)
    assert result.record["n_unauthorised"] == 3 * result.record["n_authorised"] == 3 * 64
    assert result.record["synthesis"]["method"] == "bn" and result.model.meta["protection"]["setting"] == "data-free"
    with pytest.raises(JaxprovError, match="takes no authorised data"):
        protect.protect(source, "data-free", jax.random.PRNGKey(5), authorised=np.zeros((2, 28, 28, 3), np.float32))


def test_st_d_balances_retention_and_removal():
    chance = 0.1
    assert protect.st_d(0.9, 0.9, 0.8, 0.8, chance)["st_d"] == 0.0  # no protection removes nothing
    assert protect.st_d(0.9, 0.1, 0.8, 0.1, chance)["st_d"] == 0.0  # noise everywhere retains nothing
    assert protect.st_d(0.9, 0.9, 0.8, 0.1, chance)["st_d"] == 1.0
    half = protect.st_d(0.9, 0.5, 0.8, 0.1, chance)
    assert half["retained"] == pytest.approx(0.5) and half["st_d"] == pytest.approx(2 / 3)
    assert protect.st_d(0.9, 0.9, 0.05, 0.05, chance)["removed"] == 1.0  # nothing above chance to remove


def test_baselines_keep_the_learned_masks_per_layer_sparsity(source, protected):
    learned = protected[0].run.masks
    for baseline in (baselines.random_masks(learned, jax.random.PRNGKey(0)),
                     baselines.magnitude_masks(learned, source.params, "weight")):
        for k, m in learned.items():
            assert baseline[k].shape == m.shape and baseline[k].sum() == m.sum()
    kernels = {"/".join(str(getattr(k, "key", k)) for k in p): np.abs(np.asarray(w))
               for p, w in jax.tree_util.tree_flatten_with_path(source.params["params"])[0]}
    magnitude = baselines.magnitude_masks(learned, source.params, "weight")
    for k, m in magnitude.items():
        if 0 < m.sum() < m.size:
            assert kernels[k][m].min() >= kernels[k][~m].max()


def test_a_mask_restricted_to_layers_scores_only_their_kernels(source):
    scores = masks.MaskSpec("weight", ("conv1", "conv2")).init_scores(source.params, 1.0)
    assert sorted(scores) == ["conv1/kernel", "conv2/kernel"]
    assert scores["conv1/kernel"].shape == source.params["params"]["conv1"]["kernel"].shape
    with pytest.raises(JaxprovError, match="no convolution or dense kernels to mask in layers bn1"):
        masks.MaskSpec("weight", ("bn1",)).init_scores(source.params, 1.0)


def _cli_error(argv, capsys) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("jaxprov: error:") and "\n" not in err and "Traceback" not in err
    return err


def test_cli_map_and_eval_end_to_end(source, tmp_path, capsys):
    src = store.save_model(source, tmp_path / "src")
    out = tmp_path / "protected"
    assert main(["protect", "map", str(src), "--setting", "source-available", "--authorised", "mnistm:train",
                 "--unauthorised", "mnist", "--out", str(out), "--steps", "20", "--batch", "32", "--select-n", "16",
                 "--recalibrated", "0.5"]) == 0
    printed = capsys.readouterr()
    assert "protected:" in printed.out and "--recalibrated" not in printed.err
    meta = jaxprov.load(out).meta
    assert meta["protection"]["data"]["unauthorised"] == "mnist:base"
    assert meta["lineage"]["selected"]["step"] == 20  # the named domains' labels chose the mask
    assert meta["lineage"]["selected"]["scored_on"] == {"authorised": "labels", "unauthorised": "labels"}
    assert not list(tmp_path.glob(".protected.map-checkpoint*"))
    assert main(["protect", "eval", str(out), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["authorised"] == "mnistm:test" and report["unauthorised"] == "mnist:test"
    assert 0.0 <= report["st_d"] <= 1.0 and report["authorised_before"] > 0.5
    # the label-free attack is part of the report: the source still reads MNIST with its statistics
    # re-estimated on it; the protected model's figure is its own
    assert report["recalibrated"]["before"] > 0.5 and 0.0 <= report["recalibrated"]["after"] <= 1.0
    assert meta["lineage"]["config"]["recalibrated"] == 0.5
    # without the term, a BatchNorm model's protection is flagged as one recalibration may undo
    assert main(["protect", "map", str(src), "--setting", "source-available", "--authorised", "mnistm:train",
                 "--unauthorised", "mnist", "--out", str(tmp_path / "plain"), "--steps", "2", "--batch", "8"]) == 0
    warning = capsys.readouterr().err.strip().splitlines()[-1]
    assert warning.startswith("jaxprov: warning:") and "without --recalibrated" in warning


def test_cli_bad_inputs_are_one_line_and_write_nothing(source, tmp_path, capsys):
    src = store.save_model(source, tmp_path / "src")
    out = tmp_path / "out"
    base = ["protect", "map", str(src), "--out", str(out), "--steps", "2"]
    bad_shape = tmp_path / "flat.npz"
    np.savez(bad_shape, x=np.zeros((5, 7), np.float32))
    assert "expected images" in _cli_error(base + ["--setting", "source-free", "--unauthorised", str(bad_shape)], capsys)
    four = tmp_path / "four.npz"
    np.savez(four, x=np.zeros((5, 28, 28, 4), np.float32))
    assert "not [H, W, 1 or 3] images" in _cli_error(base + ["--setting", "source-free", "--unauthorised", str(four)], capsys)
    (tmp_path / "empty").mkdir()
    assert "empty folder" in _cli_error(base + ["--setting", "source-free", "--unauthorised",
                                                str(tmp_path / "empty")], capsys)
    assert "not a named domain" in _cli_error(base + ["--setting", "source-free", "--unauthorised", "nosuch"], capsys)
    assert "feature_keep must be >= 0" in _cli_error(base + ["--setting", "source-free", "--unauthorised", "mnist",
                                                             "--feature-keep", "-1"], capsys)
    assert "select_n must be a non-negative integer" in _cli_error(base + ["--setting", "source-free", "--unauthorised",
                                                                       "mnist", "--select-n", "-1"], capsys)
    assert "needs authorised data" in _cli_error(base + ["--setting", "source-available", "--unauthorised", "mnist"],
                                                 capsys)
    plain = store.save_model(models.init("lenet", jax.random.PRNGKey(0), name="plain"), tmp_path / "plain")
    assert "no BatchNorm" in _cli_error(["protect", "map", str(plain), "--out", str(out), "--setting", "data-free",
                                         "--synthesis", "bn"], capsys)
    assert str(tmp_path / "missing") in _cli_error(["protect", "eval", str(tmp_path / "missing")], capsys)
    images = tmp_path / "images.npz"
    np.savez(images, x=np.zeros((4, 28, 28, 3), np.float32))
    damaged = tmp_path / ".out.map-checkpoint.npz"  # where the CLI keeps the run's checkpoint
    damaged.write_bytes(b"PK\x03\x04 cut short")
    line = _cli_error(base + ["--setting", "source-available", "--authorised", str(images), "--unauthorised",
                              str(images)], capsys)
    assert line.startswith(f"jaxprov: error: {damaged}: not a readable training checkpoint") and "delete it" in line
    assert not out.exists() and damaged.read_bytes() == b"PK\x03\x04 cut short"


def test_recalibrating_batchnorm_undoes_a_mask_learned_on_stored_statistics_and_the_recalibrated_term_holds(
        source, protected, domains):
    from jaxprov.protect import attacks
    from jaxprov.protect.train import _better

    test = {"authorised": domains["test_a"], "unauthorised": domains["test_u"]}
    ev = attacks.evaluator(test)
    xu = domains["train_u"][0]
    plain = protected[0].model
    (undone,) = attacks.recalibrate_unauthorised(plain, xu, (0.01,), jax.random.PRNGKey(6), ev)
    # 10 unlabelled MNIST digits and no weight moved bring MNIST back (measured 0.52 -> 0.84): the mask
    # removed the domain through its mismatch with the stored statistics
    assert undone["n"] == 10 and undone["unauthorised"] > accuracy(plain, *domains["test_u"]) + 0.2
    config = dataclasses.replace(CONFIG, recalibrated=0.3, select_n=100)
    run = protect.protect(source, "source-available", jax.random.PRNGKey(2), config,
                          authorised=domains["train_a"][0], unauthorised=xu)
    (held,) = attacks.recalibrate_unauthorised(run.model, xu, (0.01,), jax.random.PRNGKey(6), ev)
    assert held["unauthorised"] < undone["unauthorised"] - 0.2, (held, undone)  # measured 0.45 vs 0.84
    e = protect.evaluate(source, run.model, *test.values())
    assert e["unauthorised_after"] < e["unauthorised_before"] - 0.3 and e["authorised_after"] > 0.6, e
    assert all("recalibrated" in h and "held_recalibrated" in h for h in run.run.history if "held_authorised" in h)
    assert "held_recalibrated" in run.run.selected
    # the choice reads the worse of the two unauthorised figures: a candidate that is only removed
    # on the stored statistics does not meet the bound
    row = {"held_authorised": 0.9, "held_unauthorised": 0.1, "held_distillation": 0.1}
    assert _better({**row, "held_authorised": 0.5}, {**row, "held_recalibrated": 0.9}, 0.2, 0.1)
    _refused("recalibrated", "recalibrated")


def test_fine_tuning_on_unauthorised_labels_brings_accuracy_back(source, protected, domains):
    from jaxprov.protect import attacks

    model = protected[0].model
    test = {"authorised": domains["test_a"], "unauthorised": domains["test_u"]}
    before = accuracy(model, *domains["test_u"])
    (row,) = attacks.finetune_unauthorised(model, *domains["train_u"], (0.10,), jax.random.PRNGKey(6),
                                           attacks.evaluator(test), steps=40)
    assert row["n"] == 100 and row["steps"] >= 40
    assert row["unauthorised"] > before + 0.1  # the attack is real: it measures what comes back
