"""Inputs synthesised from the model itself: MAP's source-free and data-free settings.

Pseudo-source (standing in for the authorised data nobody gave us):
  "bn"         BatchNorm-statistics matching (Yin et al., "Dreaming to Distill: Data-free Knowledge
               Transfer via DeepInversion", CVPR 2020): starting from noise, each batch of inputs is
               optimised with Adam so that, at every BatchNorm layer, the batch mean and variance
               of the layer's input match the running statistics the source model stored, while the
               model assigns each input its target class (cross-entropy) and the image stays smooth
               (total variation) and small (L2). Classes are assigned round-robin, so every class
               is equally represented. Needs BatchNorm layers (`jaxprov.models.layers.BatchNorm`);
  "inversion"  for models without BatchNorm: the same optimisation without the statistics term
               (model inversion from the model's own confident outputs, Fredrikson et al. 2015),
               then only the inputs the model assigns to their target class with probability
               >= MIN_CONFIDENCE are kept.
Every input stays in the model's valid input box.
Where each batch starts (SynthConfig.start):
  "noise"         the input spec's random example (DeepInversion's start): the data-free setting's
                  only choice;
  "unauthorised"  real unauthorised inputs (the source-free setting has them), each optimised toward
                  the class the source gives it: the statistics term restyles their content into what
                  the source's BatchNorm layers saw in training, so the pseudo-source carries real
                  shapes in the authorised domain's statistics. Measured worse than noise on MNIST-M
                  -> MNIST (docs/results.md, "MAP, third round"), so not the default.
Neighbour domains (data-free: no unauthorised data either): synthetic shifts of the pseudo-source
(`jaxprov.domain_shifts`): inverted, recoloured and over procedural noise backgrounds, each applied
to every pseudo-source image.
"""

from __future__ import annotations

import dataclasses
import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxprov import domain_shifts
from jaxprov.attacks import valid_box
from jaxprov.errors import JaxprovError
from jaxprov.model import Model
from jaxprov.models.layers import BatchNorm
from jaxprov.protect import losses

METHODS = ("bn", "inversion")
NEIGHBOUR_SHIFTS = ("invert", "colour", "noise")
MIN_CONFIDENCE = 0.5
STARTS = ("noise", "unauthorised")
START_FOLD = 2 ** 31 - 1  # fold_in(key, START_FOLD) draws which unauthorised inputs a batch starts from


@dataclasses.dataclass(frozen=True)
class SynthConfig:
    """n inputs, made in batches of `batch`, each batch optimised for `steps` Adam steps at `lr`;
    loss weights: BatchNorm statistics (bn), class cross-entropy (ce), total variation (tv), L2 (l2);
    jitter: each step's loss is taken on the batch rolled by a random shift of up to `jitter` pixels
    in each direction (DeepInversion's jitter; 0 = off), so the inputs cannot lean on exact pixel
    positions; flip: each step's loss is also taken, with probability 1/2, on the batch mirrored left to
    right (DeepInversion's flip; off by default: a mirrored digit is not always a digit); start: where each
    batch starts, "noise" or "unauthorised" (the module docstring)."""

    n: int = 1024
    batch: int = 128
    steps: int = 200
    lr: float = 0.1
    bn: float = 1.0
    ce: float = 1.0
    tv: float = 1e-3
    l2: float = 1e-4
    jitter: int = 0
    flip: bool = False
    start: str = "noise"

    def __post_init__(self):
        if self.start not in STARTS:
            raise JaxprovError(f"unknown synthesis start {self.start!r}; use one of {', '.join(STARTS)}")

    def to_json(self) -> dict:
        return dataclasses.asdict(self)


def has_batchnorm(model: Model) -> bool:
    return bool(jax.tree_util.tree_leaves(model.params.get("batch_stats", {})))


def resolve_method(model: Model, method: str) -> str:
    """"auto" -> "bn" for models with BatchNorm, else "inversion"; "bn" on a model without BatchNorm is
    one line."""
    if method == "auto":
        return "bn" if has_batchnorm(model) else "inversion"
    if method not in METHODS:
        raise JaxprovError(f"unknown synthesis {method!r}; use auto, {', '.join(METHODS)}")
    if method == "bn" and not has_batchnorm(model):
        raise JaxprovError(f"{model.name} ({model.arch}) has no BatchNorm layers, which BatchNorm-statistics "
                           "synthesis matches; use --synthesis inversion (or auto)")
    return method


def pseudo_source(model: Model, key: jax.Array, config: SynthConfig = SynthConfig(), method: str = "auto",
                  progress=None, unauthorised=None) -> tuple[np.ndarray, dict]:
    """Synthesised pseudo-source inputs [<= n, ...] in the model's input space, and a record of how.

    unauthorised: the real unauthorised inputs a "unauthorised" start draws from (n of them, drawn with
    `key`, or all when there are fewer; each keeps the class the source gives it)."""
    method = resolve_method(model, method)
    if model.output_kind != "logits" or model.input_spec.modality != "image":
        raise JaxprovError(f"{model.name}: MAP's synthesis needs an image classifier, not a "
                           f"{model.input_spec.modality} model with {model.output_kind} outputs")
    classes = int(jax.eval_shape(model.apply, model.params, model.input_spec.example(1)).shape[-1])
    lo, hi = valid_box(model.input_spec, 4)
    run = _batch_fn(model.module, config, method == "bn")
    n, starts = config.n, None
    if config.start == "unauthorised":
        if unauthorised is None or len(unauthorised) == 0:
            raise JaxprovError("a pseudo-source started from unauthorised inputs needs unauthorised data "
                               "(the data-free setting has none: use start noise)")
        pick = np.asarray(jax.random.permutation(jax.random.fold_in(key, START_FOLD), len(unauthorised)))[:n]
        starts = jnp.asarray(np.asarray(unauthorised, np.float32)[np.sort(pick)])
        n = int(starts.shape[0])
    out, conf, total = [], [], -(-n // config.batch)
    for b in range(total):
        kb = jax.random.fold_in(key, b)
        size = min(config.batch, n - b * config.batch)
        if starts is None:
            x0 = model.input_spec.example(size, kb)
            targets = (jnp.arange(size) + b * config.batch) % classes
        else:
            x0 = starts[b * config.batch: b * config.batch + size]
            targets = jnp.argmax(model.apply(model.params, x0), axis=-1)
        x, p = run(model.params, x0, targets.astype(jnp.int32), lo, hi, jax.random.fold_in(kb, 1))
        out.append(np.asarray(x))
        conf.append(np.asarray(p))
        if progress is not None:
            progress("synthesis", b + 1, total)
    x, conf = np.concatenate(out), np.concatenate(conf)
    keep = conf >= MIN_CONFIDENCE if method == "inversion" else np.ones(len(x), bool)
    if not keep.any():
        raise JaxprovError(f"{model.name}: model inversion found no input the model is confident about; "
                           "give authorised data (--setting source-available)")
    record = {"method": method, **config.to_json(), "kept": int(keep.sum()),
              "mean_confidence": float(conf.mean())}
    return x[keep], record


def neighbours(model: Model, pseudo: np.ndarray, seed: int) -> np.ndarray:
    """Neighbour domains of a pseudo-source: each of NEIGHBOUR_SHIFTS applied to every image."""
    spec = model.input_spec
    raw = np.clip(np.asarray(spec.denormalize(jnp.asarray(pseudo))), 0.0, 1.0)
    rng = np.random.default_rng(seed)
    shifted = [domain_shifts.shift(raw, kind, rng) for kind in NEIGHBOUR_SHIFTS]
    if raw.shape[3] == 1:
        shifted = [s.mean(axis=3, keepdims=True) for s in shifted]
    return np.asarray(spec.normalize(jnp.asarray(np.concatenate(shifted), jnp.float32)))


def bn_moments(module, params, x):
    """((output, features), [(batch mean, batch var, running mean, running var) per BatchNorm call]):
    what the model's apply gives on x and, at every BatchNorm, the statistics of the batch reaching it
    beside the stored ones (read by the synthesis here and by the mask's `bn_keep` term, `protect.train`)."""
    captured = []

    def interceptor(next_fun, args, kwargs, context):
        if isinstance(context.module, BatchNorm) and context.method_name == "__call__":
            h = args[0]
            axes = tuple(range(h.ndim - 1))
            stats = context.module.variables["batch_stats"]
            captured.append((jnp.mean(h, axis=axes), jnp.var(h, axis=axes), stats["mean"], stats["var"]))
        return next_fun(*args, **kwargs)

    with nn.intercept_methods(interceptor):
        applied = module.apply(params, x)
    return applied, captured


@functools.lru_cache(maxsize=8)
def _batch_fn(module, config: SynthConfig, use_bn: bool):
    optimizer = optax.adam(config.lr)

    def loss_fn(x, params, targets):
        (out, _), moments = bn_moments(module, params, x) if use_bn else (module.apply(params, x), [])
        ce = optax.softmax_cross_entropy_with_integer_labels(out, targets).mean()
        tv = jnp.mean(jnp.abs(x[:, 1:] - x[:, :-1])) + jnp.mean(jnp.abs(x[:, :, 1:] - x[:, :, :-1]))
        loss = config.ce * ce + config.tv * tv + config.l2 * jnp.mean(x * x)
        if moments:
            loss = loss + config.bn * losses.bn_statistics(moments)
        return loss

    @jax.jit
    def run(params, x, targets, lo, hi, key):
        def body(carry, k):
            x, state = carry
            kj, kf = k, jax.random.fold_in(k, 1)  # the jitter draws from k as before flip existed

            def view(z):
                if config.jitter:
                    dx, dy = jax.random.randint(kj, (2,), -config.jitter, config.jitter + 1)
                    z = jnp.roll(z, (dx, dy), axis=(1, 2))
                if config.flip:
                    z = jnp.where(jax.random.bernoulli(kf), z[:, :, ::-1], z)
                return z

            g = jax.grad(lambda z: loss_fn(view(z), params, targets))(x)
            with jax.numpy_dtype_promotion("standard"):
                updates, state = optimizer.update(g, state, x)
            return (jnp.clip(optax.apply_updates(x, updates), lo, hi), state), None

        (x, _), _ = jax.lax.scan(body, (x, optimizer.init(x)), jax.random.split(key, config.steps))
        p = jax.nn.softmax(module.apply(params, x)[0], axis=-1)
        return x, jnp.take_along_axis(p, targets[:, None], axis=1)[:, 0]

    return run
