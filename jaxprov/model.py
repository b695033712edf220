"""The model contract: a pure function, a plain params tree, and a description of its input.

Every later stage (probes, signatures, the engine) sees a network only through `Model`:
`apply(params, x)` is pure, `params` is a nested dict of arrays, and models whose `arch` keys are
equal have identical param trees, so their params stack along a new leading axis for `jax.vmap`.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Callable, Mapping, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxprov.errors import JaxprovError

Params = dict  # {"params": {...}, "batch_stats": {...}} for Flax linen modules: plain nested dicts.

MODALITIES = ("image", "text", "vector")
OUTPUT_KINDS = ("logits", "last_hidden_state", "embedding")


@dataclasses.dataclass(frozen=True)
class InputSpec:
    """What a model takes, in the model's own (normalised) input space.

    Images are NHWC float arrays already normalised: x = (raw - mean) / std with raw in
    `raw_range`. Text is a dict of int arrays `input_ids`, `attention_mask` and optionally
    `token_type_ids`, each [batch, seq_len] with seq_len <= shape[0].
    """

    modality: str
    layout: str  # "NHWC" for images, "tokens" for text, "NF" for flat vectors
    shape: tuple[int, ...]  # one example, without the batch axis
    dtype: str = "float32"
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    raw_range: tuple[float, float] | None = (0.0, 1.0)
    vocab_size: int | None = None

    def __post_init__(self):
        if self.modality not in MODALITIES:
            raise ValueError(f"modality must be one of {MODALITIES}, got {self.modality!r}")
        object.__setattr__(self, "shape", tuple(int(s) for s in self.shape))
        for field in ("mean", "std", "raw_range"):
            value = getattr(self, field)
            if value is not None:
                object.__setattr__(self, field, tuple(float(v) for v in value))

    def normalize(self, raw: jax.Array) -> jax.Array:
        """Raw pixels (in raw_range, channels last) -> the model's input space."""
        if self.mean is None:
            return raw
        mean, std = self._channel_stats(raw.ndim)
        return (raw - mean) / std

    def denormalize(self, x: jax.Array) -> jax.Array:
        if self.mean is None:
            return x
        mean, std = self._channel_stats(x.ndim)
        return x * std + mean

    def _channel_stats(self, ndim: int) -> tuple[jax.Array, jax.Array]:
        # Explicit rank: channels are the last axis (NHWC); no implicit rank promotion.
        shape = (1,) * (ndim - 1) + (-1,)
        return jnp.asarray(self.mean).reshape(shape), jnp.asarray(self.std).reshape(shape)

    def bounds(self) -> tuple[np.ndarray, np.ndarray] | None:
        """Per-channel (low, high) of valid inputs in the normalised space, or None if unbounded."""
        if self.raw_range is None or self.modality == "text":
            return None
        lo, hi = self.raw_range
        if self.mean is None:
            return np.float32(lo), np.float32(hi)
        mean, std = np.asarray(self.mean, np.float32), np.asarray(self.std, np.float32)
        return (lo - mean) / std, (hi - mean) / std

    def example(self, batch: int = 1, key: jax.Array | None = None) -> Any:
        """A random valid input batch, deterministic from `key` (for tests, shape checks, tracing)."""
        key = jax.random.PRNGKey(0) if key is None else key
        if self.modality == "text":
            ids = jax.random.randint(key, (batch, *self.shape), 0, self.vocab_size or 100)
            ones = jnp.ones((batch, *self.shape), jnp.int32)
            return {"input_ids": ids.astype(jnp.int32), "attention_mask": ones,
                    "token_type_ids": jnp.zeros_like(ones)}
        lo, hi = self.raw_range or (0.0, 1.0)
        raw = jax.random.uniform(key, (batch, *self.shape), jnp.float32, lo, hi)
        return self.normalize(raw) if self.modality == "image" else raw

    def to_json(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, data: Mapping) -> "InputSpec":
        data = dict(data)
        for field in ("shape", "mean", "std", "raw_range"):
            if data.get(field) is not None:
                data[field] = tuple(data[field])
        return cls(**data)


def as_inputs(x, xp=np):
    """Inputs as models take them: a text model's dict of int32 token-id arrays, any other input one
    float32 array. `xp=np` keeps them on the host, as probes and DNA training sets hold them (the
    engine moves them to the device chunk by chunk); `xp=jnp` gives device arrays, for code that
    hands them to jitted functions itself (the training loop, the DNA detector)."""
    if isinstance(x, Mapping):
        return {str(k): xp.asarray(v, xp.int32) for k, v in x.items()}
    return xp.asarray(x, xp.float32)


def n_items(x) -> int:
    """The number of examples in inputs `x` (an array, or a dict of arrays with one leading axis)."""
    return int(jax.tree_util.tree_leaves(x)[0].shape[0])


class ModelFns(NamedTuple):
    """A model's pure functions, all of (params, ...): what a signature method may call.

    `apply(params, x)`: the primary output. `features(params, x)`: intermediates plus "output".
    Text hooks for gradient methods: `embed(params, tokens)` gives the token embeddings [n, L, H]
    of `tokens["input_ids"]` (word embeddings only; positions and types are added inside the
    model), and `apply_embedded(params, embeds, extras)` the output from them, `extras` holding
    `attention_mask` / `token_type_ids`. A family provides `embed` by giving its module a static
    `embed_tokens(params, input_ids)`; without one, calling `embed` is a one-line error.
    `ModelFns(apply)` wraps a bare function (tests, toy models): the other entries are None.
    """

    apply: Callable
    features: Callable | None = None
    embed: Callable | None = None
    apply_embedded: Callable | None = None


@functools.lru_cache(maxsize=None)
def _pure_fns(module) -> ModelFns:
    """One ModelFns per module config, so jit caches are shared by every model of an arch."""

    def features(params, x):
        out, feats = module.apply(params, x)
        return {**feats, "output": out}

    def apply(params, x):
        return module.apply(params, x)[0]

    def embed(params, tokens):
        hook = getattr(module, "embed_tokens", None)
        if hook is None:
            raise JaxprovError(f"{type(module).__name__} has no token-embedding hook (embed_tokens): "
                               "gradient methods on text need a BERT-family model")
        return hook(params, tokens["input_ids"])

    def apply_embedded(params, embeds, extras):
        return module.apply(params, {"inputs_embeds": embeds, **extras})[0]

    return ModelFns(apply, features, embed, apply_embedded)


@dataclasses.dataclass(frozen=True, eq=False)
class Model:
    """A network as data: a Flax module (static), its params, and what it takes and returns.

    Attributes:
      name: human label (file stem, Hugging Face name, ...).
      arch: canonical architecture key, e.g. "resnet18" or "resnet18[num_classes=10]".
        Equal keys guarantee identical param trees (structure, shapes, dtypes).
      module: the Flax linen module; `module.apply(params, x)` returns (output, features dict).
      params: plain nested dict of arrays ({"params": ..., "batch_stats": ...}).
      input_spec: see InputSpec.
      output_kind: "logits" for classifiers, "last_hidden_state" for HF base encoders.
      meta: provenance (source file sha256, converter version, ...), JSON-serialisable.
    """

    name: str
    arch: str
    module: Any
    params: Params
    input_spec: InputSpec
    output_kind: str = "logits"
    meta: Mapping[str, Any] = dataclasses.field(default_factory=dict)

    @property
    def apply(self) -> Callable[[Params, Any], jax.Array]:
        """Pure `apply(params, x) -> primary output`; the same function object for equal archs."""
        return _pure_fns(self.module)[0]

    @property
    def features(self) -> Callable[[Params, Any], dict]:
        """Pure `features(params, x) -> {name: array}`: intermediates plus "output".

        Every family provides "pre_logits" (the representation its head reads) and named
        stage / block outputs that later methods (CKA, multi-exit heads) attach to.
        """
        return _pure_fns(self.module)[1]

    @property
    def fns(self) -> ModelFns:
        """Every pure function of the model (`ModelFns`): what signature methods receive."""
        return _pure_fns(self.module)

    def __call__(self, x):
        return self.apply(self.params, x)

    @property
    def num_params(self) -> int:
        return int(sum(np.size(leaf) for leaf in jax.tree_util.tree_leaves(self.params.get("params", self.params))))

    def replace(self, **changes) -> "Model":
        return dataclasses.replace(self, **changes)

    def summary(self) -> str:
        spec = self.input_spec
        lines = [
            f"name:        {self.name}",
            f"arch:        {self.arch}",
            f"parameters:  {self.num_params:,}",
            f"input:       {spec.modality} {spec.layout} {spec.shape} {spec.dtype}"
            + (f", mean={spec.mean} std={spec.std}" if spec.mean else ""),
            f"output:      {self.output_kind}",
        ]
        source = self.meta.get("source") or {}
        if source.get("sha256"):
            lines.append(f"source:      {source.get('path', '?')} (sha256 {source['sha256'][:16]}...)")
        return "\n".join(lines)


def stack_params(models: list[Model]) -> Params:
    """Stack the params of same-arch models along a new leading axis, ready for `jax.vmap`."""
    if not models:
        raise ValueError("stack_params needs at least one model")
    archs = {m.arch for m in models}
    if len(archs) != 1:
        raise ValueError(f"models of different architectures cannot be stacked: {sorted(archs)}")
    return jax.tree_util.tree_map(lambda *leaves: jnp.stack(leaves), *[m.params for m in models])
