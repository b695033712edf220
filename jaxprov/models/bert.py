"""BERT encoders (Devlin et al. 2019, arXiv:1810.04805) as Hugging Face transformers 5 computes them in eval mode.

Flax names mirror `BertModel`'s state dict ("encoder.layer.3.attention.self.query" ->
"encoder/layer_3/attention_self/query"), so converters/hf_bert.py is a short rule table.
The traps: HF "gelu" is the exact erf GELU ("gelu_new" is the tanh one); LayerNorm eps is 1e-12,
not 1e-5; masked keys get the float32 minimum added to their scores (not -inf, so a fully
masked row softmaxes to uniform instead of NaN); and the pooler reads token 0, whereas
sentence-transformers (all-MiniLM-L6-v2) mean-pools the tokens under the attention mask.

Input: {"input_ids" | "inputs_embeds", "attention_mask"?, "token_type_ids"?}; output:
last_hidden_state (family "bert") or classifier logits on the pooled output (family "bert_cls").
"""

from __future__ import annotations

import dataclasses
from functools import partial
from typing import Mapping

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxprov.errors import ArchitectureError
from jaxprov.model import InputSpec
from jaxprov.models.registry import Family, register
from jaxprov.models import layers as L

ACTIVATIONS = {
    "gelu": L.gelu_exact,
    "gelu_new": partial(nn.gelu, approximate=True),
    "gelu_pytorch_tanh": partial(nn.gelu, approximate=True),
    "relu": nn.relu,
}


@dataclasses.dataclass(frozen=True)
class BertConfig:
    """Every BertConfig field that changes shapes or numerics (dropout is identity in eval)."""

    vocab_size: int = 30522
    hidden_size: int = 768
    num_layers: int = 12
    num_heads: int = 12
    intermediate_size: int = 3072
    max_position_embeddings: int = 512
    type_vocab_size: int = 2
    layer_norm_eps: float = 1e-12
    hidden_act: str = "gelu"
    with_pooler: bool = True
    num_labels: int = 0  # 0: bare encoder (family "bert"); >0: sequence classifier (family "bert_cls")


class BertEmbeddings(nn.Module):
    config: BertConfig

    @nn.compact
    def __call__(self, input_ids, token_type_ids, inputs_embeds):
        c = self.config
        if inputs_embeds is None:
            inputs_embeds = nn.Embed(c.vocab_size, c.hidden_size, name="word_embeddings")(input_ids)
        positions = jnp.arange(inputs_embeds.shape[1])[None, :]
        x = (inputs_embeds
             + nn.Embed(c.type_vocab_size, c.hidden_size, name="token_type_embeddings")(token_type_ids)
             + nn.Embed(c.max_position_embeddings, c.hidden_size, name="position_embeddings")(positions))
        return L.layer_norm("LayerNorm", c.layer_norm_eps)(x)


class BertSelfAttention(nn.Module):
    config: BertConfig

    @nn.compact
    def __call__(self, x, bias):
        c = self.config
        head_dim = c.hidden_size // c.num_heads
        split = lambda t: t.reshape(*t.shape[:2], c.num_heads, head_dim)  # noqa: E731
        q, k, v = (split(nn.Dense(c.hidden_size, name=n)(x)) for n in ("query", "key", "value"))
        scores = jnp.einsum("bqhd,bkhd->bhqk", q, k) * head_dim ** -0.5 + bias
        out = jnp.einsum("bhqk,bkhd->bqhd", jax.nn.softmax(scores, axis=-1), v)
        return out.reshape(*x.shape[:2], c.hidden_size)


class DenseLayerNorm(nn.Module):
    """BertSelfOutput / BertOutput: LayerNorm(dense(x) + residual)."""

    config: BertConfig

    @nn.compact
    def __call__(self, x, residual):
        x = nn.Dense(self.config.hidden_size, name="dense")(x)
        return L.layer_norm("LayerNorm", self.config.layer_norm_eps)(x + residual)


class BertIntermediate(nn.Module):
    config: BertConfig

    @nn.compact
    def __call__(self, x):
        return ACTIVATIONS[self.config.hidden_act](nn.Dense(self.config.intermediate_size, name="dense")(x))


class BertLayer(nn.Module):
    config: BertConfig

    @nn.compact
    def __call__(self, x, bias):
        c = self.config
        x = DenseLayerNorm(c, name="attention_output")(BertSelfAttention(c, name="attention_self")(x, bias), x)
        return DenseLayerNorm(c, name="output")(BertIntermediate(c, name="intermediate")(x), x)


class BertEncoder(nn.Module):
    config: BertConfig

    @nn.compact
    def __call__(self, x, bias):
        hidden = []
        for i in range(self.config.num_layers):
            x = BertLayer(self.config, name=f"layer_{i}")(x, bias)
            hidden.append(x)
        return hidden


def mean_pool(hidden: jax.Array, attention_mask: jax.Array) -> jax.Array:
    """sentence-transformers' mean pooling: the average of the unmasked tokens' vectors."""
    mask = attention_mask.astype(hidden.dtype)[..., None]
    return jnp.sum(hidden * mask, axis=1) / jnp.maximum(jnp.sum(mask, axis=1), 1e-9)


class Bert(nn.Module):
    """BertModel (num_labels == 0) or BertForSequenceClassification (num_labels > 0), eval mode."""

    config: BertConfig

    @staticmethod
    def embed_tokens(params, input_ids: jax.Array) -> jax.Array:
        """The word embeddings of `input_ids` [batch, seq, hidden]: what `inputs_embeds` takes (the
        hook through which gradient methods differentiate a text model, `jaxprov.model.ModelFns`)."""
        return jnp.take(params["params"]["embeddings"]["word_embeddings"]["embedding"], input_ids, axis=0)

    @nn.compact
    def __call__(self, x: Mapping[str, jax.Array]):
        c = self.config
        if not isinstance(x, Mapping) or ("input_ids" in x) == ("inputs_embeds" in x):
            raise TypeError("BERT takes a dict with exactly one of 'input_ids' [batch, seq] or "
                            "'inputs_embeds' [batch, seq, hidden], plus optional 'attention_mask', 'token_type_ids'")
        input_ids, inputs_embeds = x.get("input_ids"), x.get("inputs_embeds")
        shape = input_ids.shape if inputs_embeds is None else inputs_embeds.shape[:2]
        if shape[1] > c.max_position_embeddings:  # jnp.take would silently clip the position ids
            raise ValueError(f"sequence length {shape[1]} exceeds max_position_embeddings {c.max_position_embeddings}")
        attention_mask = x.get("attention_mask")
        attention_mask = jnp.ones(shape, jnp.int32) if attention_mask is None else attention_mask
        token_type_ids = x.get("token_type_ids")
        token_type_ids = jnp.zeros(shape, jnp.int32) if token_type_ids is None else token_type_ids

        h = BertEmbeddings(c, name="embeddings")(input_ids, token_type_ids, inputs_embeds)
        # As transformers' eager mask: the dtype minimum added to the scores of masked keys.
        bias = jnp.where(attention_mask != 0, 0.0, jnp.finfo(h.dtype).min).astype(h.dtype)[:, None, None, :]
        hidden = BertEncoder(c, name="encoder")(h, bias)
        last = hidden[-1]
        feats = {"embeddings": h, **{f"layer{i}": v for i, v in enumerate(hidden)}}
        if c.with_pooler:
            feats["pooled"] = jnp.tanh(nn.Dense(c.hidden_size, name="pooler_dense")(last[:, 0]))
        if c.num_labels:
            feats["pre_logits"] = feats["pooled"]
            return nn.Dense(c.num_labels, name="classifier")(feats["pooled"]), feats
        feats["pre_logits"] = mean_pool(last, attention_mask)
        return last, feats


def _check(config: BertConfig) -> None:
    if config.hidden_act not in ACTIVATIONS:
        raise ArchitectureError(f"BERT hidden_act {config.hidden_act!r} is not supported; "
                                f"supported: {', '.join(ACTIVATIONS)}")
    if config.hidden_size % config.num_heads:
        raise ArchitectureError(f"BERT hidden_size {config.hidden_size} is not divisible by "
                                f"num_heads {config.num_heads}")


def _build_encoder(config: BertConfig) -> nn.Module:
    _check(config)
    if config.num_labels:
        raise ArchitectureError("the 'bert' family is the bare encoder (num_labels=0); "
                                "use a '-cls' variant for a sequence classifier")
    return Bert(config)


def _build_classifier(config: BertConfig) -> nn.Module:
    _check(config)
    if config.num_labels < 1 or not config.with_pooler:
        raise ArchitectureError("a BERT sequence classifier needs num_labels >= 1 and with_pooler=true")
    return Bert(config)


def _input_spec(config: BertConfig) -> InputSpec:
    return InputSpec("text", "tokens", (config.max_position_embeddings,), dtype="int32", raw_range=None,
                     vocab_size=config.vocab_size)


BERT_BASE = BertConfig()
MINILM_L6 = BertConfig(hidden_size=384, num_layers=6, num_heads=12, intermediate_size=1536)
# Tiny classifiers of the text domain (jaxprov.text_corpus: 32 tokens of a 2,000-token vocabulary,
# 6 classes), small enough to train on a CPU in seconds: the text preset's base config and its
# smaller config (independents of another size, extraction into a smaller student).
BERT_TEXT = BertConfig(vocab_size=2000, hidden_size=64, num_layers=2, num_heads=2, intermediate_size=128,
                       max_position_embeddings=32, num_labels=6)
BERT_TEXT_SMALL = dataclasses.replace(BERT_TEXT, hidden_size=32, num_layers=1, intermediate_size=64)

register(Family(
    name="bert",
    variants={"bert-base": BERT_BASE, "minilm-l6": MINILM_L6},
    build=_build_encoder,
    input_spec=_input_spec,
    output_kind="last_hidden_state",
))
register(Family(
    name="bert_cls",
    variants={"bert-base-cls": dataclasses.replace(BERT_BASE, num_labels=2),
              "minilm-l6-cls": dataclasses.replace(MINILM_L6, num_labels=2),
              "bert-text": BERT_TEXT, "bert-text-small": BERT_TEXT_SMALL},
    build=_build_classifier,
    input_spec=_input_spec,
    output_kind="logits",
))
