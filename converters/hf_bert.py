"""Rules for Hugging Face BERT state dicts: BertModel (bare keys) and the "bert."-prefixed layouts
(BertForSequenceClassification, and the pretraining classes whose "cls.*" heads are dropped).

The trap: a state dict does not record the number of attention heads, the LayerNorm eps or the
activation. `detect` assumes the BERT conventions (64-dim heads, 12 heads at hidden 384 as in
MiniLM, eps 1e-12, exact GELU); converters/huggingface.py reads them from config.json instead.
RoBERTa-style dicts (514 positions, 1 token type) share the key names but offset their position
ids, so `detect` leaves them alone.
"""

from __future__ import annotations

import re
from typing import Mapping

from converters.registry import SourceFamily, register_source
from converters.rules import DEFAULT_IGNORE, Rule, torch_layer_rules
from jaxprov import models
from jaxprov.errors import ArchitectureError

_P = r"(?:bert\.)?"  # BertFor* wrappers keep the encoder under "bert."
_LAYER = _P + r"encoder\.layer\.(\d+)\."
_DENSE_PARTS = (  # torch sub-path under encoder.layer.{i} -> Flax path under encoder/layer_{i}
    (r"attention\.self\.query", "attention_self/query"),
    (r"attention\.self\.key", "attention_self/key"),
    (r"attention\.self\.value", "attention_self/value"),
    (r"attention\.output\.dense", "attention_output/dense"),
    (r"intermediate\.dense", "intermediate/dense"),
    (r"output\.dense", "output/dense"),
)
_LN_PARTS = ((r"attention\.output\.LayerNorm", "attention_output/LayerNorm"),
             (r"output\.LayerNorm", "output/LayerNorm"))


def rules(arch: str) -> list[Rule]:
    _, _, config = models.resolve(arch)
    table = [r for name in ("word_embeddings", "position_embeddings", "token_type_embeddings")
             for r in torch_layer_rules(rf"{_P}embeddings\.{name}", f"embeddings/{name}", "embed")]
    table += torch_layer_rules(rf"{_P}embeddings\.LayerNorm", "embeddings/LayerNorm", "ln")
    for parts, kind in ((_DENSE_PARTS, "linear"), (_LN_PARTS, "ln")):
        table += [r for src, dst in parts for r in torch_layer_rules(_LAYER + src, rf"encoder/layer_\1/{dst}", kind)]
    if config.with_pooler:
        table += torch_layer_rules(rf"{_P}pooler\.dense", "pooler_dense", "linear")
    if config.num_labels:
        table += torch_layer_rules(r"classifier", "classifier", "linear")
    return table


def closest_key(fields: Mapping[str, object]) -> str:
    """The canonical arch key for these BertConfig fields, written against the nearest variant."""
    names = ("bert-base-cls", "minilm-l6-cls") if fields.get("num_labels") else ("bert-base", "minilm-l6")

    def distance(name):
        base = models.resolve(name)[2]
        return sum(getattr(base, k) != v for k, v in fields.items())

    return models.canonical(min(names, key=distance), **fields)


def _heads(hidden: int) -> int | None:
    if hidden == 384:  # MiniLM-H384 (all-MiniLM-L6/L12) uses 12 heads of 32
        return 12
    return hidden // 64 if hidden % 64 == 0 else None


def detect(shapes: Mapping[str, tuple[int, ...]]) -> str | None:
    prefix = next((p for p in ("", "bert.") if f"{p}embeddings.word_embeddings.weight" in shapes), None)
    needed = ("embeddings.position_embeddings.weight", "embeddings.token_type_embeddings.weight",
              "encoder.layer.0.attention.self.query.weight", "encoder.layer.0.intermediate.dense.weight")
    if prefix is None or any(prefix + k not in shapes for k in needed):
        return None
    vocab, hidden = shapes[f"{prefix}embeddings.word_embeddings.weight"]
    positions = shapes[f"{prefix}embeddings.position_embeddings.weight"][0]
    types = shapes[f"{prefix}embeddings.token_type_embeddings.weight"][0]
    heads = _heads(hidden)
    with_pooler = f"{prefix}pooler.dense.weight" in shapes
    # A classifier without a pooler is a per-token head (BertForTokenClassification): not ours.
    if heads is None or (positions, types) == (514, 1) or ("classifier.weight" in shapes and not with_pooler):
        return None
    query = re.compile(rf"{re.escape(prefix)}encoder\.layer\.\d+\.attention\.self\.query\.weight")
    layers = sum(1 for k in shapes if query.fullmatch(k))
    fields = dict(vocab_size=vocab, hidden_size=hidden, num_layers=layers, num_heads=heads,
                  intermediate_size=shapes[f"{prefix}encoder.layer.0.intermediate.dense.weight"][0],
                  max_position_embeddings=positions, type_vocab_size=types,
                  with_pooler=with_pooler,
                  num_labels=shapes["classifier.weight"][0] if "classifier.weight" in shapes else 0)
    return closest_key(fields)


# transformers classes whose checkpoints convert: the classifier, and classes that are the encoder
# plus heads we drop ("cls.*"). Token / span / multiple-choice heads are refused, not silently lost.
HF_CLASSES = {"BertModel": False, "BertForMaskedLM": False, "BertForPreTraining": False,
              "BertForNextSentencePrediction": False, "BertForSequenceClassification": True}


def hf_class(config: Mapping) -> str:
    """The transformers class a BERT config.json describes; raises ArchitectureError if unsupported."""
    names = config.get("architectures") or ["BertModel"]
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        raise ArchitectureError("config.json's \"architectures\" is not a list of class names")
    name = names[0]
    if name not in HF_CLASSES:
        raise ArchitectureError(f"{name:.80} checkpoints are not supported; jaxprov converts {', '.join(HF_CLASSES)}")
    if config.get("is_decoder") or config.get("add_cross_attention"):
        raise ArchitectureError("decoder BERT configs (is_decoder / add_cross_attention) are not supported")
    if config.get("position_embedding_type", "absolute") != "absolute":
        raise ArchitectureError(f"BERT position_embedding_type {config['position_embedding_type']!r:.40} "
                                "is not supported (only 'absolute')")
    return name


_HF_FIELDS = {"vocab_size": "vocab_size", "hidden_size": "hidden_size", "num_hidden_layers": "num_layers",
              "num_attention_heads": "num_heads", "intermediate_size": "intermediate_size",
              "max_position_embeddings": "max_position_embeddings", "type_vocab_size": "type_vocab_size",
              "layer_norm_eps": "layer_norm_eps", "hidden_act": "hidden_act"}


_MAX_DIM = 2**24  # above any real vocabulary or width; bigger values are a corrupt or hostile config


def _config_value(config: Mapping, hf: str, default):
    """config[hf] checked against the type of BertConfig's default; ArchitectureError otherwise."""
    value = config.get(hf, default)
    if isinstance(default, bool) or isinstance(default, str):
        ok = type(value) is type(default)
    elif isinstance(default, int):
        ok = type(value) is int and 1 <= value <= _MAX_DIM
    else:  # float: layer_norm_eps
        ok = type(value) in (int, float) and 0 < value < 1
    if not ok:
        raise ArchitectureError(f"config.json's {hf} is {value!r:.40}, not a valid {type(default).__name__}"
                                + (f" in 1..{_MAX_DIM}" if type(default) is int else ""))
    return type(default)(value)


def arch_from_hf_config(config: Mapping, shapes: Mapping[str, tuple[int, ...]]) -> str:
    """The exact arch key from a BERT config.json; pooler presence comes from the weights.

    Fields config.json leaves out take transformers' BertConfig defaults, which are bert-base's.
    Raises ArchitectureError for a field of the wrong type or out of range.
    """
    defaults = models.resolve("bert-base")[2]
    fields = {ours: _config_value(config, hf, getattr(defaults, ours)) for hf, ours in _HF_FIELDS.items()}
    fields["with_pooler"] = any(k.endswith("pooler.dense.weight") for k in shapes)
    classifier = HF_CLASSES[hf_class(config)]
    fields["num_labels"] = 0
    if classifier:
        labels = config.get("id2label") or {}
        if not isinstance(labels, dict):
            raise ArchitectureError("config.json's id2label is not an object")
        fields["num_labels"] = len(labels) or _config_value(config, "num_labels", 2)
    return closest_key(fields)


# "cls.*" are the masked-LM / next-sentence heads of BertForPreTraining / BertForMaskedLM checkpoints.
register_source(SourceFamily("hf_bert", ("bert", "bert_cls"), detect, rules,
                             ignore=DEFAULT_IGNORE + (r"cls\..*",)))
