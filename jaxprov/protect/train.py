"""Learning a MAP mask: SGD or Adam (optax) on the mask scores of a frozen model, resumable, with progress.

Each step draws a batch of authorised inputs (real, or synthesised pseudo-source) and a batch of
unauthorised ones (real, or synthesised neighbours), both chosen by `fold_in(key, step)`, so a run
resumed from a checkpoint takes exactly the steps an uninterrupted one takes. The loss is

  L = authorised(z_masked(x_a), p_source(x_a))           (losses.authorised, distillation)
    + alpha * unauthorised(z_masked(x_u))                 (losses.unauthorised, to a fixed near-uniform q)
    + beta * separation(f_masked(x_u), mean f_source(x_a)) (losses.separation; beta = 0 turns it off)
    + lam * sparsity(m)                                   (losses.sparsity)
    + gamma * unauthorised(z_attacked(x_u))               (fine-tune resistance; gamma = 0 turns it off)
    + bn_keep * bn_statistics(masked model on x_a)        (losses.bn_statistics; bn_keep = 0 turns it off)
    + feature_keep * features(f_masked(x_a), f_source(x_a)) (losses.features; feature_keep = 0 turns it off)
    + recalibrated * unauthorised(z_masked,batch(x_u))    (BatchNorm on x_u's own statistics; 0 turns it off)

The removal terms (alpha's and beta's) act on a batch only while its unauthorised loss is above
`push_until`: once the batch's outputs are that close to the fixed target q the keep terms alone
move the mask, and the push returns as soon as inputs come alive again (a revived input's loss is
large, so the batch mean crosses the threshold before many argmaxes move). A constraint rather
than a weight: the mask stops paying authorised accuracy for removal beyond it. At 0.1 an input
still has most of its mass on q's class (KL(q || p) = 0.13 for p = 0.3 there and the rest spread
evenly; 0.63 for the uniform p). push_until 0 pushes always (the first benchmark runs). The share
of each recorded batch given the fixed class (losses.FIXED_CLASS) is kept in the history ("dead").

where z_attacked is the masked model after `inner_steps` simulated attacker steps: sign-gradient
(Adam-like, every weight moved by `inner_lr`, the zeroed ones too) descent on the cross-entropy of
the unauthorised batch against the source's own labels for it (the attacker's labels, which we do not
have, replaced by what the source says). First order (the attacker's steps are constants to the
outer gradient, as first-order MAML; NTL-robust and "non-fine-tunable" learning train against a
simulated fine-tuning the same way), so the mask is pushed toward weights from which that attack
still lands on the fixed unauthorised output.

z_masked,batch is the masked model with every BatchNorm normalising by the statistics of the batch
it is given (train mode) instead of the stored ones: what the model computes once its running
statistics are re-estimated on the unauthorised domain (`derive.recalibrate`, AdaBN), which needs
no labels and moves no weight. Without this term the removal may rest on the mismatch between the
unauthorised inputs and the stored statistics, and 20 unlabelled inputs undo it (docs/results.md,
"MAP, eighth round"). The term is gated by push_until as alpha's is, and needs BatchNorm layers.
With it on, the held-out choice also scores each candidate on the held-out unauthorised inputs
after `derive.recalibrate` on them (`held_recalibrated`), and a candidate's unauthorised figure is
the larger of that and `held_unauthorised`.

The bn_keep term asks, at every BatchNorm, that the batch of authorised (or pseudo-source) inputs
reach the layer with the mean and variance the source stored for it: a keep loss on the inside of
the network rather than on its outputs only, which does not trust the pseudo-source's outputs (in
the source-free setting the distillation targets are the source's outputs on synthetic inputs; the
stored statistics are the source's own record of its real training data). It needs BatchNorm layers.

Choosing the mask (select_n > 0): the last step's mask is one point of whatever the run does at
its end, and the removal comes in swings (a push that gates itself on the batch loss, a collapse in
a long run; docs/results.md, "MAP, fourth round"). With select_n, that many authorised (or
pseudo-source) and unauthorised inputs are held out of the batches, and at every recorded step
(every RECORD_EVERY = 25 and the last) the hard mask is scored on them: `held_authorised`, its
accuracy on the held-out authorised inputs, `held_unauthorised`, the same on the unauthorised ones,
and `held_distillation`, the distillation loss on the held-out authorised inputs, which breaks ties
(a synthesised pseudo-source is answered as the source does at nearly every step, so its score
saturates). Accuracy is read on the data's labels where they are given (`authorised_y`,
`unauthorised_y`: real, labelled data), and on the source's own answers where they are not (a
synthesised pseudo-source, unlabelled data): agreement with the source. Labels matter on the
unauthorised side when the source reads that domain badly: there, agreeing less with the source's
answers, which are mostly wrong, is not reading the domain worse (docs/results.md, "MAP, fifth round").
Among the steps of the 25-step grid from select_from * steps on, and the last step, the mask
returned is the one that keeps the most authorised accuracy while its unauthorised accuracy is at
most chance + select_margin (the issue's bound); when none gets there, the one with the best ST-D
of the two (metric.st_d, both "before" values 1). The
scores returned are the last step's (a longer run continues from them); the checkpoint keeps the
chosen scores beside them. The held-out inputs are not trained on: in the source-free setting they
come out of the synthesised pseudo-source, so synthesise select_n more.

with every model output in eval mode (BatchNorm on the source's running statistics: the frozen
model is one fixed function of its weights). Only the scores are optimised; `model.params` is never
written. Checkpoints (`jaxprov.checkpoint`: the scores, the optimiser's state, the step and the loss
history, stamped with a digest of the configuration and the data) are written every
`checkpoint_every` steps; the digest leaves out `steps`, so asking for more steps continues a
finished run. Another run's checkpoint is ignored with a warning; a damaged one is refused.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
from pathlib import Path
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxprov.checkpoint import load_tree, save_tree
from jaxprov.errors import JaxprovError
from jaxprov.model import Model
from jaxprov.protect import losses, masks as masks_lib, synth
from jaxprov.protect.metric import st_d
from jaxprov.training import derive
from jaxprov.training.loop import predict

RECORD_EVERY = 25  # steps between history rows (and candidate masks of the held-out choice)
HELD_OUT_STREAM = 2 ** 31 - 1  # fold_in(key, this) draws the held-out inputs; steps use fold_in(key, step)
OPTIMIZERS = {"sgd": lambda lr: optax.sgd(lr, momentum=0.9), "adam": optax.adam}


@dataclasses.dataclass(frozen=True)
class MapConfig:
    """Settings of one mask learning run (all recorded in the protected model's metadata).

    steps, batch: optimiser steps on the scores, examples per domain per step.
    optimizer, lr: "sgd" (with momentum 0.9) or "adam", and its learning rate. SGD is the default:
      Adam's normalised steps move every score at the same rate, so at the start, when only the
      unauthorised term has a gradient (the masked model is the source, its distillation loss is 0),
      every score with a consistent push flips at once and the authorised accuracy collapses
      (measured in docs/results.md); SGD moves each score by its own gradient w * dL/dw.
    init_score: every score's start (> 0: the mask starts as all ones, the unmasked model).
    alpha, beta, lam: weights of the unauthorised, separation and sparsity terms. alpha 0.6 and beta 1
      with 600 steps are the defaults because, on each of the three digit pairs with skill to remove,
      they beat alpha 0.3 / beta 0 / 300 steps on authorised and unauthorised accuracy both
      (docs/results.md, "MAP tuning").
      lam < 0 rewards the weights kept: an L0 pressure against pruning (the share kept, weighted).
    temperature: T of the authorised distillation.
    granularity: "weight" or "channel" (masks.MaskSpec).
    layers: the top-level layers whose kernels are masked (() = all; masks.MaskSpec).
    gamma, inner_steps, inner_lr: weight of the fine-tune-resistance term, and the simulated
      attacker's sign-gradient steps and step size (see the module docstring).
    bn_keep: weight of the BatchNorm-statistics keep term (0 = off; needs BatchNorm layers).
    feature_keep: weight of the feature keep term (0 = off): every named feature the model's apply
      returns, on the authorised (or pseudo-source) batch, held near the source's (losses.features).
    recalibrated: weight of the unauthorised loss with BatchNorm on the unauthorised batch's own
      statistics (0 = off; needs BatchNorm layers; the module docstring).
    push_until: the removal terms stop on a batch whose unauthorised loss is at most this (0 = never
      stop; the module docstring).
    select_n, select_from, select_margin: inputs per domain held out to choose the mask by (0 = the
      last step's mask), the share of the run after which recorded steps are candidates, and the
      unauthorised agreement above chance a candidate may keep (the module docstring).
    """

    steps: int = 600
    batch: int = 128
    optimizer: str = "sgd"
    lr: float = 1.0
    init_score: float = 1.0
    alpha: float = 0.6
    beta: float = 1.0
    lam: float = 0.0
    temperature: float = 1.0
    granularity: str = "weight"
    layers: tuple = ()
    checkpoint_every: int = 100
    gamma: float = 0.0
    inner_steps: int = 1
    inner_lr: float = 0.01
    bn_keep: float = 0.0
    push_until: float = 0.0
    feature_keep: float = 0.0
    recalibrated: float = 0.0
    select_n: int = 0
    select_from: float = 0.5
    select_margin: float = 0.1

    def __post_init__(self):
        object.__setattr__(self, "layers", tuple(self.layers))  # a JSON list reads back as the same config
        masks_lib.MaskSpec(self.granularity, self.layers)  # validates
        if self.optimizer not in OPTIMIZERS:
            raise JaxprovError(f"unknown MAP optimizer {self.optimizer!r}; use one of {', '.join(OPTIMIZERS)}")
        for name in ("steps", "batch", "checkpoint_every", "inner_steps"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 1:
                raise JaxprovError(f"MAP setting {name} must be a positive integer, got {getattr(self, name)!r}")
        if not isinstance(self.select_n, int) or self.select_n < 0:
            raise JaxprovError(f"MAP setting select_n must be a non-negative integer, got {self.select_n!r}")
        if not 0.0 < self.select_from <= 1.0:
            raise JaxprovError(f"MAP setting select_from must be in (0, 1], got {self.select_from!r}")
        for name in ("alpha", "beta", "gamma", "bn_keep", "push_until", "feature_keep", "recalibrated", "select_margin"):
            if not getattr(self, name) >= 0.0:
                raise JaxprovError(f"MAP setting {name} must be >= 0, got {getattr(self, name)!r}")
        for name in ("lr", "init_score", "temperature"):
            if not getattr(self, name) > 0:
                raise JaxprovError(f"MAP setting {name} must be > 0, got {getattr(self, name)!r}")

    def to_json(self) -> dict:
        return dataclasses.asdict(self)


@dataclasses.dataclass
class MaskRun:
    """A learned mask: binary masks {kernel path: bool}, the final scores, and the loss history."""

    masks: dict
    scores: dict
    history: list
    density: float
    resumed_from: int
    selected: dict | None = None  # select_n > 0: the chosen step and its held-out agreements
    held_out: dict | None = None  # select_n > 0: {"authorised", "unauthorised": indices held out}


def learn(model: Model, authorised_x, unauthorised_x, config: MapConfig, key: jax.Array,
          checkpoint: str | Path | None = None, progress: Callable[[str, int, int], None] | None = None,
          trace: Callable[[dict, dict], None] | None = None, authorised_y=None, unauthorised_y=None) -> MaskRun:
    """Learn a binary mask over `model`'s kernels (its params are not changed).

    Args:
      model: the frozen source model.
      authorised_x: authorised (or pseudo-source) inputs in the model's input space [n, ...].
      unauthorised_x: unauthorised (or neighbour) inputs [m, ...].
      config: MapConfig.
      key: PRNG key of the batches.
      checkpoint: a file path; resumed from when it holds a run of the same config and data (another
        run's is ignored with a warning, a damaged one refused: `jaxprov.checkpoint`).
      progress: called (stage, done, total) every few steps.
      trace: called (history row, hard masks) at every recorded step (every 25 and the last), for a
        benchmark to measure what each step's mask does (benchmarks/map_tune.py --trace).
      authorised_y, unauthorised_y: integer labels of the inputs, or None; read by the held-out
        choice only (select_n > 0), which scores a role without labels on the source's answers.
    """
    xa = jnp.asarray(authorised_x, jnp.float32)
    xu = jnp.asarray(unauthorised_x, jnp.float32)
    if xa.shape[0] == 0 or xu.shape[0] == 0:
        raise JaxprovError("MAP needs at least one authorised and one unauthorised input")
    for role, x in (("authorised", xa), ("unauthorised", xu)):
        if config.select_n and x.shape[0] <= config.select_n:
            raise JaxprovError(f"MAP's select_n ({config.select_n}) holds out at least every {role} input "
                               f"({x.shape[0]}); lower select_n or give more {role} data")
    for term, what in (("bn_keep", "matches"), ("recalibrated", "normalises by the batch's statistics in")):
        if getattr(config, term) and not synth.has_batchnorm(model):
            raise JaxprovError(f"{model.name} ({model.arch}) has no BatchNorm layers, which MAP's {term} term "
                               f"{what}; set {term} 0")
    spec = masks_lib.MaskSpec(config.granularity, config.layers)
    params = jax.tree_util.tree_map(jnp.asarray, model.params)
    classes = int(jax.eval_shape(model.apply, model.params, xa[:1]).shape[-1])
    labels = {role: _labels(y, x.shape[0], classes, role)
              for role, y, x in (("authorised", authorised_y, xa), ("unauthorised", unauthorised_y, xu))}
    held = chance = bound = scored_on = None
    if config.select_n:
        ka, ku = jax.random.split(jax.random.fold_in(key, HELD_OUT_STREAM))
        order_a, order_u = (np.asarray(jax.random.permutation(k, x.shape[0])) for k, x in ((ka, xa), (ku, xu)))
        held = {"authorised": np.sort(order_a[:config.select_n]), "unauthorised": np.sort(order_u[:config.select_n])}
        held_x = (xa[held["authorised"]], xu[held["unauthorised"]])
        held_out = tuple(predict(model, x) for x in held_x)  # the source's outputs
        held_y = tuple(jnp.argmax(o, -1) if labels[role] is None else jnp.asarray(labels[role][held[role]])
                       for role, o in zip(("authorised", "unauthorised"), held_out))  # labels, else the source's answers
        scored_on = {role: "source answers" if labels[role] is None else "labels" for role in labels}
        xa, xu = xa[np.sort(order_a[config.select_n:])], xu[np.sort(order_u[config.select_n:])]
        chance = 1.0 / classes
        bound = chance + config.select_margin
    source_probs = jax.nn.softmax(predict(model, xa) / config.temperature, axis=-1)
    source_mean = jnp.mean(_pre_logits(model, params, xa), axis=0) if config.beta else jnp.zeros(())
    source_labels_u = (jnp.argmax(predict(model, xu), axis=-1).astype(jnp.int32) if config.gamma  # the simulated
                       else jnp.zeros(xu.shape[0], jnp.int32))  # attacker's labels: read by the gamma term only
    scores = spec.init_scores(params, config.init_score)
    per_score = spec.weights_per_score(params)
    optimizer = OPTIMIZERS[config.optimizer](config.lr)
    opt_state = optimizer.init(scores)
    held_labels = (() if held is None or all(y is None for y in labels.values())  # -1: a role scored on answers
                   else tuple(np.full(1, -1, np.int32) if y is None else y[held[r]] for r, y in labels.items()))
    digest = _run_digest(model, config, xa, xu, key, held_labels)
    start, history, best, best_scores = 0, [], None, scores
    if checkpoint is not None:  # the chosen scores travel with a run that chooses (select_n > 0) only
        template = (scores, opt_state) + ((scores,) if held is not None else ())
        restored = load_tree(checkpoint, _fits(template), digest, what="MAP mask run")
        if restored is not None:
            (scores, opt_state, *kept), meta = restored
            best_scores = kept[0] if kept else scores
            start, history, best = meta["step"], meta["history"], meta["best"]
    # The candidates: the steps of the RECORD_EVERY grid from select_from * steps on, and the last step.
    # The checkpoint keeps the best of the grid; a run continued to more steps drops it when it falls
    # before the new run's first candidate (and then chooses among the steps after the resume).
    first_candidate = int(np.ceil(config.select_from * config.steps))
    if best is not None and best["step"] < first_candidate:
        best = None
    step = _step_fn(model.module, config, tuple(sorted(per_score.items())))
    for i in range(start, config.steps):
        k = jax.random.fold_in(key, i)
        ka, ku = jax.random.split(k)
        ia = jax.random.randint(ka, (min(config.batch, xa.shape[0]),), 0, xa.shape[0])
        iu = jax.random.randint(ku, (min(config.batch, xu.shape[0]),), 0, xu.shape[0])
        scores, opt_state, parts = step(scores, opt_state, params, xa[ia], source_probs[ia], xu[iu],
                                        source_labels_u[iu], source_mean)
        on_grid = (i + 1) % RECORD_EVERY == 0
        if on_grid or i + 1 == config.steps:
            history.append({"step": i + 1, **{n: float(v) for n, v in parts.items()}})
            hard = masks_lib.hard(scores) if held is not None or trace is not None else None
            if held is not None:
                history[-1].update(_agreements(model, params, hard, held_x, held_out, held_y,
                                               bool(config.recalibrated)))
                if on_grid and i + 1 >= first_candidate and _better(history[-1], best, bound, chance):
                    best, best_scores = _choice(history[-1]), scores
            if trace is not None:
                trace(history[-1], hard)
            if progress is not None:
                progress("mask", i + 1, config.steps)
        if checkpoint is not None and ((i + 1) % config.checkpoint_every == 0 or i + 1 == config.steps):
            save_tree(checkpoint, (scores, opt_state) + ((best_scores,) if held is not None else ()), digest,
                      {"step": i + 1, "history": history, "best": best})
    chosen, chosen_scores = best, best_scores
    if held is not None and _better(history[-1], best, bound, chance):  # the last step, when off the grid
        chosen, chosen_scores = _choice(history[-1]), scores
    if chosen is not None:
        chosen = {**chosen, "scored_on": scored_on}
    binary = masks_lib.hard(chosen_scores if held is not None else scores)
    return MaskRun(masks=binary, scores={k: np.asarray(v) for k, v in scores.items()}, history=history,
                   density=masks_lib.density(binary, per_score), resumed_from=start, selected=chosen,
                   held_out=held)


def _choice(row: dict) -> dict:
    return {k: row[k] for k in ("step", "held_authorised", "held_unauthorised", "held_distillation",
                                "held_recalibrated") if k in row}


def _labels(y, n: int, classes: int, role: str):
    """`role`'s labels as int32 [n], or None; labels of the wrong length or outside the classes are refused."""
    if y is None:
        return None
    y = np.asarray(y)
    if y.shape != (n,) or not np.issubdtype(y.dtype, np.integer):
        raise JaxprovError(f"MAP's {role} labels must be {n} integers, one per input; got {y.dtype} of shape {y.shape}")
    if n and (y.min() < 0 or y.max() >= classes):
        raise JaxprovError(f"MAP's {role} labels span {y.min()}..{y.max()}; the model has {classes} classes")
    return y.astype(np.int32)


def _agreements(model: Model, params, hard: dict, held_x, source_out, held_y, recalibrated: bool = False) -> dict:
    """Accuracies of the model under the binary masks `hard` on the held-out authorised and
    unauthorised inputs against `held_y` (labels, or the source's answers), and its distillation
    loss (T = 1) on the held-out authorised ones; with `recalibrated`, also its unauthorised accuracy
    after `derive.recalibrate` on the held-out unauthorised inputs."""
    masked = model.replace(params=masks_lib.apply(params, hard))
    out = [predict(masked, x) for x in held_x]
    row = {f"held_{role}": float(np.mean(np.asarray(jnp.argmax(o, -1) == y)))
           for role, o, y in zip(("authorised", "unauthorised"), out, held_y)}
    row["held_distillation"] = float(losses.authorised(out[0], jax.nn.softmax(source_out[0], axis=-1)))
    if recalibrated:
        out_r = predict(derive.recalibrate(masked, held_x[1]), held_x[1])
        row["held_recalibrated"] = float(np.mean(np.asarray(jnp.argmax(out_r, -1) == held_y[1])))
    return row


def _better(row: dict, best: dict | None, bound: float, chance: float) -> bool:
    """Is the recorded step `row` a better mask than `best` (the module docstring's rule)?"""
    def rank(r):
        unauthorised = max(r["held_unauthorised"], r.get("held_recalibrated", 0.0))
        meets = unauthorised <= bound
        balance = st_d(1.0, r["held_authorised"], 1.0, unauthorised, chance)["st_d"]
        return (meets, r["held_authorised"] if meets else balance, -r["held_distillation"])
    return best is None or rank(row) > rank(best)


def _pre_logits(model: Model, params, x):
    feats = model.features(params, x)
    if "pre_logits" not in feats:
        raise JaxprovError(f"{model.arch} has no pre_logits feature; MAP's separation term needs it")
    return feats["pre_logits"]


@functools.lru_cache(maxsize=16)
def _step_fn(module, config: MapConfig, per_score_items: tuple):
    per_score = dict(per_score_items)
    optimizer = OPTIMIZERS[config.optimizer](config.lr)

    def attacked(masked, xu, yu):
        """The masked params after the simulated attacker's steps (constants to the outer gradient)."""
        weights = masked["params"]
        for _ in range(config.inner_steps):
            def ce(w):
                return optax.softmax_cross_entropy_with_integer_labels(module.apply({**masked, "params": w}, xu)[0],
                                                                       yu).mean()
            g = jax.lax.stop_gradient(jax.grad(ce)(weights))
            weights = jax.tree_util.tree_map(lambda w, d: w - config.inner_lr * jnp.sign(d), weights, g)
        return {**masked, "params": weights}

    def loss_fn(scores, params, xa, pa, xu, yu, source_mean):
        ste = masks_lib.straight_through(scores)
        masked = masks_lib.apply(params, ste)
        if config.bn_keep:
            (out_a, feats_a), moments = synth.bn_moments(module, masked, xa)
        else:
            out_a, feats_a = module.apply(masked, xa)
        out_u, feats_u = module.apply(masked, xu)
        parts = {"authorised": losses.authorised(out_a, pa, config.temperature),
                 "unauthorised": losses.unauthorised(out_u),
                 "density": losses.sparsity(ste, per_score),
                 "dead": jnp.mean(jnp.argmax(out_u, axis=-1) == losses.FIXED_CLASS)}
        parts["push"] = (jax.lax.stop_gradient(parts["unauthorised"] > config.push_until).astype(jnp.float32)
                         if config.push_until else jnp.float32(1.0))  # 0: the push never stops
        total = parts["authorised"] + parts["push"] * config.alpha * parts["unauthorised"] + config.lam * parts["density"]
        if config.beta:
            parts["separation"] = losses.separation(feats_u["pre_logits"], source_mean)
            total = total + parts["push"] * config.beta * parts["separation"]
        if config.recalibrated:
            (out_r, _), _ = module.apply(masked, xu, mutable=["batch_stats"])  # train mode: xu's own statistics
            parts["recalibrated"] = losses.unauthorised(out_r)
            total = total + parts["push"] * config.recalibrated * parts["recalibrated"]
        if config.bn_keep:
            parts["bn_keep"] = losses.bn_statistics(moments)
            total = total + config.bn_keep * parts["bn_keep"]
        if config.feature_keep:
            parts["feature_keep"] = losses.features(feats_a, module.apply(params, xa)[1])
            total = total + config.feature_keep * parts["feature_keep"]
        if config.gamma:
            out_t, _ = module.apply(attacked(masked, xu, yu), xu)
            parts["after_attack"] = losses.unauthorised(out_t)
            total = total + config.gamma * parts["after_attack"]
        return total, parts

    @jax.jit
    def step(scores, opt_state, params, xa, pa, xu, yu, source_mean):
        grads, parts = jax.grad(loss_fn, has_aux=True)(scores, params, xa, pa, xu, yu, source_mean)
        with jax.numpy_dtype_promotion("standard"):  # optax's Adam mixes its int32 count with floats
            updates, opt_state = optimizer.update(grads, opt_state, scores)
        return optax.apply_updates(scores, updates), opt_state, parts

    return step


def _run_digest(model: Model, config: MapConfig, xa, xu, key, held_labels=()) -> str:
    from jaxprov.identity import model_digest

    # `steps` and `checkpoint_every` are left out: a longer run of the same settings resumes a shorter one.
    settings = {k: v for k, v in config.to_json().items() if k not in ("steps", "checkpoint_every")}
    h = hashlib.sha256(json.dumps({"model": model_digest(model), "config": settings,
                                   "key": np.asarray(jax.random.key_data(key) if jnp.issubdtype(key.dtype, jax.dtypes.prng_key)
                                                     else key).tolist()}, sort_keys=True).encode())
    for x in (xa, xu, *held_labels):  # the labels the held-out choice reads, when it reads any
        h.update(np.asarray(x).tobytes())
    return h.hexdigest()


def _fits(template):
    """The template of a checkpoint whose record is one `learn` writes (step, history), else None."""
    def fits(meta: dict):
        step, history, best = meta.get("step"), meta.get("history"), meta.get("best", False)
        ok = (type(step) is int and step >= 0 and isinstance(history, list) and all(isinstance(h, dict) for h in history)
              and (best is None or (isinstance(best, dict) and type(best.get("step")) is int
                                    and all(isinstance(best.get(k), float)
                                            for k in ("held_authorised", "held_unauthorised", "held_distillation")))))
        return template if ok else None
    return fits
