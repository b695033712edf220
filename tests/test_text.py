"""Text for Model DNA (issue 11 point 4): the docstring corpus that ships with Python
(jaxprov.text_corpus) as the "text" data domain, tiny BERT classifiers trained on it through the zoo
builder (the text-ci preset's zoo), and DNA on their token inputs."""

from __future__ import annotations

import dataclasses

import jax
import numpy as np
import pytest

from jaxprov import datasets, models, probes, text_corpus
from jaxprov.bench.protocol import ancestors
from jaxprov.errors import JaxprovError

TEXT_SPEC = models.create("bert-text")[2]


def test_the_corpus_is_balanced_fixed_and_split_into_disjoint_named_splits():
    text, labels = text_corpus.sentences()
    assert len(text) == len(set(text)) == text_corpus.PER_CLASS * len(text_corpus.CLASSES)
    assert np.array_equal(np.bincount(labels), [text_corpus.PER_CLASS] * len(text_corpus.CLASSES))
    assert text_corpus.digest() == text_corpus.digest() and len(text_corpus.vocab_digest()) == 64
    vocab = text_corpus.vocabulary()
    assert len(vocab) == len(set(vocab)) == TEXT_SPEC.vocab_size and vocab[:3] == text_corpus.SPECIALS
    ids = text_corpus.tokenize(["the file is closed", "zzzz qqqq"])
    assert ids.shape == (2, TEXT_SPEC.shape[0]) and ids[0, 0] == text_corpus.CLS
    assert list(ids[1, 1:3]) == [text_corpus.UNK] * 2 and ids[1, 3:].max() == text_corpus.PAD
    rows = {}
    for split in datasets.SPLITS["text"]:
        x, y = datasets.inputs(f"text:{split}", TEXT_SPEC)
        assert set(x) == {"input_ids", "attention_mask", "token_type_ids"} and x["input_ids"].dtype == np.int32
        assert np.array_equal(x["attention_mask"], (x["input_ids"] != 0).astype(np.int32))
        assert len(np.unique(y)) == len(text_corpus.CLASSES)
        rows[split] = {r.tobytes() for r in x["input_ids"]}
    splits = list(rows)
    assert all(not rows[a] & rows[b] for i, a in enumerate(splits) for b in splits[i + 1:])
    words = np.concatenate([datasets.inputs(f"text:{s}", TEXT_SPEC)[0]["input_ids"] for s in splits])
    words = words[words > text_corpus.CLS]
    assert np.mean(words == text_corpus.UNK) < 0.1  # the vocabulary covers the text


def test_the_text_domain_refuses_models_that_do_not_read_its_tokens_with_one_line():
    for spec, what in [(models.create("lenet")[2], "cannot feed a image model"),
                       (models.create("minilm-l6-cls")[2], "32 tokens of a 2000-token vocabulary")]:
        with pytest.raises(JaxprovError, match=what) as err:
            datasets.inputs("text:test", spec)
        assert "\n" not in str(err.value)
    with pytest.raises(JaxprovError, match="cannot adapt images to a text model"):
        datasets.inputs("mnist:test", TEXT_SPEC)
    seeds = probes.seeds("text:test", TEXT_SPEC, 50, jax.random.PRNGKey(0))
    assert seeds.inputs["input_ids"].shape == (50, 32) and seeds.labels.shape == (50,)
    assert seeds.meta["source"] == "text:test"


def test_the_text_preset_zoo_trains_through_the_zoo_builder_with_its_lineage(text_ci_zoo):
    root, zoo, recipe = text_ci_zoo
    entries = {e["name"]: e for e in recipe["models"]}
    chance = 1 / len(text_corpus.CLASSES)
    for name, model in zoo.items():
        assert model.arch == "bert-text-small" and model.meta["recipe"]["entry"] == entries[name]
        assert model.meta["accuracy"]["test"] > chance + 0.15, (name, model.meta["accuracy"])
        parent = entries[name].get("parent")
        assert model.meta["lineage"]["parent"] == parent
    base = "test-b0-bert-text-small"
    assert ancestors(f"{base}--prune-50", entries) == {base}
    assert zoo[f"{base}--quantize-int8"].meta["lineage"]["derivation"] == "quantize_int8"
    pruned = np.concatenate([np.ravel(leaf) for path, leaf in jax.tree_util.tree_flatten_with_path(
        zoo[f"{base}--prune-50"].params)[0] if "kernel" in jax.tree_util.keystr(path)])
    assert 0.49 < np.mean(pruned == 0) < 0.51


@pytest.fixture(scope="module")
def text_detector(text_ci_zoo, tmp_path_factory):
    """A DNA detector trained on the text-ci zoo's val group only (its test group's lineages are
    disjoint: other bases, other seeds), with the token encoder g."""
    from jaxprov import dna
    from jaxprov.bench import dna as bench_dna

    _, zoo, recipe = text_ci_zoo
    entries = {e["name"]: e for e in recipe["models"]}
    train = [n for n, e in entries.items() if e["group"] == "val"]
    data = bench_dna.training_set(zoo, entries, train, seeds="text:test", n_probes=300)
    arch = bench_dna.default_architecture(zoo[train[0]].input_spec)
    detector = dna.train(data, arch, dna.TrainConfig(stage1_steps=60, stage2_steps=120), log=lambda line: None)
    out = tmp_path_factory.mktemp("text_dna") / "det"
    detector.with_params(detector.params, **bench_dna.input_record(zoo[train[0]].input_spec)).save(out)
    # Without g (the benchmark's no-g ablation) a text detector trains too: DNA is the output view alone.
    no_g = dna.train(data, dataclasses.replace(arch, encoder=None), dna.TrainConfig(stage1_steps=5, stage2_steps=5),
                     log=lambda line: None)
    assert not np.any(np.asarray(no_g.encode(data.x)))
    return out, entries, train


def test_text_dna_ranks_held_out_derived_pairs_above_independent_ones(text_ci_zoo, text_detector):
    from jaxprov import dna, metrics
    from jaxprov.bench import dna as bench_dna
    from jaxprov.bench.presets import REFERENCE_ROLES
    from jaxprov.comparison import Zoo

    _, zoo, _ = text_ci_zoo
    out, entries, train = text_detector
    test = [n for n, e in entries.items() if e["group"] == "test"]
    roots = bench_dna.lineage_roots(entries)
    assert {roots[n] for n in train}.isdisjoint({roots[n] for n in test})
    detector = dna.load(out)
    assert detector.arch.encoder == "tokens" and detector.meta["vocabulary"]["sha256"] == text_corpus.vocab_digest()
    sim = Zoo([zoo[n] for n in test], seeds="text:test", key=jax.random.PRNGKey(0),
              method_config={"dna": {"detector": str(out), "n_seeds": 100}}).similarity("dna")
    pos, neg = [], []
    for i, r in enumerate(test):
        if entries[r]["role"] in REFERENCE_ROLES:
            for j, s in enumerate(test):
                if s != r:
                    (pos if r in ancestors(s, entries) else neg).append(sim.values[i, j])
    auc = metrics.roc_auc(pos, neg)
    print(f"held-out text AUC {auc:.3f} ({len(pos)} derived, {len(neg)} independent pairs)")
    assert len(pos) == 6 and auc > 0.9
    assert detector.probability(np.min(pos)) > detector.probability(np.median(neg))


def test_a_text_detector_refuses_an_image_model_and_another_vocabulary_with_one_line(text_detector):
    from types import SimpleNamespace

    from jaxprov.methods.dna import DNA

    out, _, _ = text_detector
    method = DNA(n_seeds=16, detector=str(out))
    seeds = probes.seeds("text:test", TEXT_SPEC, 16, jax.random.PRNGKey(0))
    assert method.make_probes(seeds, jax.random.PRNGKey(0), SimpleNamespace(name="ok", input_spec=TEXT_SPEC)).n == 16
    for arch, name, theirs in [("lenet", "digits-net", "image 28x28x1"),
                               ("bert-text-small[vocab_size=3000]", "other-vocab",
                                "text (32 tokens of a 3000-token vocabulary)")]:
        reference = SimpleNamespace(name=name, input_spec=models.create(arch)[2])  # no params needed
        with pytest.raises(JaxprovError) as err:
            method.make_probes(seeds, jax.random.PRNGKey(0), reference)
        line = str(err.value)
        assert "\n" not in line and f"'{name}' takes {theirs}" in line and "jaxprov dna train" in line
        assert "trained on text (32 tokens of a 2000-token vocabulary)" in line


def test_cli_shows_a_text_detector_and_compares_bert_models_with_it(text_ci_zoo, text_detector, capsys):
    """`jaxprov dna info` and `jaxprov compare --dna` end to end on stored BERT folders (the CLI's
    `dna train` path is tests/test_dna.py's, the same for every input space)."""
    import json

    from jaxprov import cli

    root, _, _ = text_ci_zoo
    out, _, _ = text_detector
    assert cli.main(["dna", "info", str(out)]) == 0
    info = capsys.readouterr().out
    assert "input space: text 32" in info and "encoder g: tokens" in info and "vocabulary: 2000 tokens" in info
    base = root / "test-b0-bert-text-small"
    similarity = {}
    for suspect in ("test-b0-bert-text-small--prune-50", "test-i0-bert-text-small"):
        assert cli.main(["compare", str(base), str(root / suspect), "--dna", str(out), "--seeds", "text:test",
                         "--json"]) == 0
        similarity[suspect] = json.loads(capsys.readouterr().out)["methods"]["dna"]["similarity"]
    assert similarity["test-b0-bert-text-small--prune-50"] > similarity["test-i0-bert-text-small"]
