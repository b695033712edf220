"""Crafting timing fingerprints: seed inputs moved, within a bounded L-inf perturbation, so that the owner's
multi-exit model stops at a chosen exit per sample (the idea of Dong et al., "Fingerprinting
Multi-exit Deep Neural Network Models via Inference Time", 2021; its losses are not public).

Ours, after DeepSloth's exit-control loss (Hong et al., ICLR 2021): for a sample aimed at stop exit t,

    L(x) = sum_{i < t} [c_i > low] CE(uniform, softmax z_i(x)) + w [c_t < high] CE(y, softmax z_t(x))

with z_i exit i's logits, c_i its confidence (max softmax), low and high two levels well below and
above the threshold (`CraftConfig.low`, `.high`; far from it, so a fine-tuned copy keeps the stop) and y the
owner's final answer on the clean seed: the exits before t are pushed toward the uniform
distribution (unconfident, so the computation goes on), exit t toward a confident answer, each term
only while it is on the wrong side of its target level (the indicators are not differentiated),
so that signed-gradient steps spend themselves on what is still missing. The weight w = 10 (ours,
measured on cnn_exits: with w = 1 few samples reach an exit in the middle, whose earlier exits
share the features it needs) favours the confident target. L is minimised by L-inf PGD (`jaxprov.attacks.linf_pgd`, eps and step in raw pixel units,
within the valid box), batched over samples (each sample's loss depends on its own input only).
Which seed aims at which exit (`assign_targets`, `CraftConfig.assign`): by default ("far") each target
exit takes seeds whose natural stop (where the owner stops on the clean seed) is far from it, from a
pool of `pool` x the seeds crafted: exit 0 the hardest seeds, the later exits the easiest. An
unrelated model tends to stop where a seed's natural difficulty says (an easy digit at exit 0 on
every model; an input unsure for everyone at the last exit), so a target away from the natural stop
is one an unrelated model rarely shares, while the owner's children keep the crafted behaviour.
Owner-only: unlike decoys, it narrows no null. "cycle" (seed i aims at i mod K) was the earlier rule.
Measured (docs/results.md): independents 0.45 -> 0.25 mean match; the children lose some stops,
which the larger eps (0.25, was 0.15) and the owner's pruned copies win back.

Which crafted samples are kept: a sample must stop at its target under the thresholds q - margin, q
and q + margin on the owner (`robust_stop`): a stop that holds only at exactly q would flip on a
server with another threshold. Of those, `per_exit` per target exit are kept (`select`), not the
first ones, in this order:
1. robust first: those whose stop holds on every robustness copy (`stop_margin` > 0, below), then the rest;
2. then those on which the fewest decoys stop at the target: a decoy is an independent multi-exit
   model given by the owner (never one the verdict is calibrated on); a sample that an unrelated
   model also stops at its target exit (an easy digit every model answers at exit 0, an input every
   model is unsure of, so it runs to the last exit) matches independents as well as copies, and
   raises the null; a sample where the decoys stop elsewhere tells copies from independents;
3. then the furthest from changing its stop: the robustness score (`stop_margin`) is the smallest
   confidence margin (the target exit's confidence above q, every earlier exit's below it;
   negative where the stop changed) over the owner, `noise_copies` copies of it whose every
   parameter is multiplied by 1 + `weight_noise` * N(0, 1) (a fixed key), and the owner's own
   derived `copies` (e.g. the owner pruned and fine-tuned on its own data): stand-ins for the
   weight drift of fine-tuning and pruning, so that a kept stop does not hinge on the owner's exact
   weights. Measured (docs/results.md): pruning lowers the confidence of the later exits, so a
   sample aimed at exit 2 runs on to exit 3; copies the owner pruned itself find the samples whose
   target confidence survives that (the pruned child 0.875 -> 0.900 in timing), at the price of
   stops more often shared by independents; decoys lower independents unevenly, so calibrate on
   more of them (a held-out one was falsely claimed against a null of three). Both are opt-in.
More seeds per exit give the ranking more to choose from.
"""

from __future__ import annotations

import dataclasses
from typing import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from jaxprov.attacks import linf_pgd, valid_box
from jaxprov.errors import JaxprovError
from jaxprov.exits.staged import DEFAULT_THRESHOLD, check_threshold, exit_rule
from jaxprov.model import Model
from jaxprov.models.multi_exit import EXITS, num_exits

ASSIGN = ("cycle", "far")  # how seeds get their target exits (`assign_targets`)
CHUNK = 256  # at most this many samples per PGD batch: bounds memory
NOISE_KEY = jax.random.PRNGKey(7)  # the noisy copies of the owner `craft` checks stops on (fixed: reproducible)


@dataclasses.dataclass(frozen=True)
class CraftConfig:
    """How fingerprints are crafted (every field is recorded in the fingerprint file).

    eps, step_size: L-inf radius and PGD step in raw pixel units ([0, 1] images).
    steps: PGD iterations. per_exit: samples kept per target exit. seeds_per_exit: seeds tried per
    target exit (failures are dropped). margin: the threshold margin of `robust_stop`.
    low, high: the confidence levels the loss pushes earlier exits below and the target exit above.
    confident_weight: w, the weight of the target exit's term.
    weight_noise, noise_copies: the relative parameter noise and the number of noisy copies of the
    owner the robustness ranking runs on (0 copies: the owner's own margins).
    """

    eps: float = 0.25
    steps: int = 60
    step_size: float = 0.01
    per_exit: int = 20
    seeds_per_exit: int = 30
    margin: float = 0.05
    low: float = 0.3
    high: float = 0.99
    confident_weight: float = 10.0
    weight_noise: float = 0.1
    noise_copies: int = 4
    assign: str = "far"
    pool: int = 2

    def __post_init__(self):
        if not (self.eps > 0 and self.step_size > 0 and self.steps >= 1 and self.per_exit >= 1
                and self.seeds_per_exit >= self.per_exit and 0 <= self.margin < 0.5
                and 0 <= self.weight_noise < 1 and self.noise_copies >= 0 and self.assign in ASSIGN
                and self.pool >= 1):
            raise JaxprovError(f"bad craft settings {self}: need eps, step_size > 0, steps, per_exit >= 1, "
                                "seeds_per_exit >= per_exit, 0 <= margin < 0.5, 0 <= weight_noise < 1, "
                                f"noise_copies >= 0, assign one of {', '.join(ASSIGN)} and pool >= 1")

    def seeds_needed(self, k: int) -> int:
        """How many seeds crafting for k exits draws: pool x seeds_per_exit per exit (at least 2 exits)."""
        return max(k, 2) * self.seeds_per_exit * self.pool


def exit_loss(exit_logits: jax.Array, target: jax.Array, label: jax.Array, low: float, high: float,
              weight: float) -> jax.Array:
    """L per sample: exit_logits [batch, K, classes], target stop exits [batch], labels [batch], the
    levels `low` and `high` and the target term's `weight` -> [batch]."""
    k = exit_logits.shape[1]
    log_p = jax.nn.log_softmax(exit_logits, axis=-1)
    confidence = jax.lax.stop_gradient(jnp.exp(jnp.max(log_p, axis=-1)))  # [batch, K]
    to_uniform = -jnp.mean(log_p, axis=-1)  # CE(uniform, p_i) [batch, K]
    before = ((jnp.arange(k)[None, :] < target[:, None]) & (confidence > low)).astype(log_p.dtype)
    at_target = jnp.take_along_axis(log_p, target[:, None, None], axis=1)[:, 0]  # [batch, classes]
    confident = -jnp.take_along_axis(at_target, label[:, None], axis=1)[:, 0]
    still_low = (jnp.take_along_axis(confidence, target[:, None], axis=1)[:, 0] < high).astype(log_p.dtype)
    return jnp.sum(before * to_uniform, axis=1) + weight * still_low * confident


def assign_targets(stops: np.ndarray, confidence: np.ndarray, k: int, per_exit: int,
                   assign: str = "far") -> tuple[np.ndarray, np.ndarray]:
    """Which seeds to craft, aimed at which stop exit: `stops` [n] are the owner's stops on the clean
    seeds, `confidence` [n] its confidence at that stop. -> (seed index [k * per_exit], target exit of
    each), grouped by target.

    "cycle": the first k * per_exit seeds, seed i aimed at exit i mod k (the natural stops unused).
    "far": each target takes seeds whose natural stop is far from it, among those it can be crafted
    from. Seeds are ranked from hardest (latest natural stop, then least confident there) to easiest.
    Exit 0 takes the `per_exit` hardest (an easy digit stops at exit 0 on every model); the other
    exits take blocks from the easy end, exit 1 the easiest and each later exit the next block
    toward the hard end (natural stops are mostly exit 0, far from every later exit; a later stop
    must keep more exits unsure, which the easiest digits resist within eps: measured,
    docs/results.md). With more seeds than k * per_exit the seeds between are left out, so exit 0's
    are harder still.
    """
    stops, confidence = np.asarray(stops), np.asarray(confidence)
    need = k * per_exit
    if stops.size < need:
        raise JaxprovError(f"assigning {per_exit} seeds to each of {k} exits needs {need} seeds, got {stops.size}")
    if assign == "cycle":
        return np.arange(need), np.arange(need, dtype=np.int32) % k
    if assign != "far":
        raise JaxprovError(f"unknown target assignment {assign!r}: use one of {', '.join(ASSIGN)}")
    hardest_first = np.lexsort((confidence, -stops))
    index, targets = [hardest_first[:per_exit]], [np.zeros(per_exit, np.int32)]
    for t in range(1, k):
        end = stops.size - (t - 1) * per_exit
        index.append(hardest_first[end - per_exit:end])
        targets.append(np.full(per_exit, t, np.int32))
    return np.concatenate(index), np.concatenate(targets)


def robust_stop(exit_logits, threshold: float, margin: float) -> np.ndarray:
    """The stop exit at `threshold` where it is the same at threshold +- margin, else -1. `exit_logits`
    [batch, K, classes], or [copies, batch, K, classes]: then also the same on every copy."""
    exit_logits = np.asarray(exit_logits)
    copies = exit_logits if exit_logits.ndim == 4 else exit_logits[None]
    stops = [np.asarray(exit_rule(jnp.asarray(c), min(max(q, 1e-6), 1.0))[1])
             for c in copies for q in (threshold - margin, threshold, threshold + margin)]
    same = np.all([s == stops[0] for s in stops], axis=0)
    return np.where(same, stops[0], -1)


def stop_margin(exit_logits, stops: np.ndarray, threshold: float) -> np.ndarray:
    """How far each sample is from leaving stop exit `stops` [batch]: the smallest of (that exit's
    confidence - q, unless it is the last exit, where the computation stops anyway) and (q - each
    earlier exit's confidence), over the copies; negative where a copy stops elsewhere.
    `exit_logits` as in `robust_stop`."""
    exit_logits = np.asarray(exit_logits, np.float64)
    copies = exit_logits if exit_logits.ndim == 4 else exit_logits[None]
    confidence = _confidence(copies)  # [copies, batch, K]
    k = confidence.shape[-1]
    stops = np.asarray(stops)
    earlier = np.arange(k)[None, None, :] < stops[None, :, None]
    below = np.where(earlier, threshold - confidence, np.inf).min(axis=-1)
    at = np.take_along_axis(confidence, stops[None, :, None], axis=-1)[..., 0] - threshold
    above = np.where((stops < k - 1)[None, :], at, np.inf)  # a last stop needs no confident exit
    return np.minimum(below, above).min(axis=0)


def select(targets: np.ndarray, stops: np.ndarray, score: np.ndarray, decoy_hits: np.ndarray, k: int,
           per_exit: int) -> list[np.ndarray]:
    """Which candidates to keep, per target exit (see the module docstring): of those whose owner stop
    `stops` is their target, `per_exit` at most, those with `score` > 0 (robust on every copy) first,
    then the fewest `decoy_hits` (decoys stopping at the target), then the largest score. -> [k] sorted
    index arrays."""
    keep = []
    for t in range(k):
        ok = np.flatnonzero((targets == t) & (stops == t))
        order = np.lexsort((-score[ok], decoy_hits[ok], score[ok] <= 0))
        keep.append(np.sort(ok[order][:per_exit]))
    return keep


def _exit_logits(models_or_params, features, x: np.ndarray) -> np.ndarray:
    """Exit logits of each model (or parameter tree run through `features`) on x -> [copies, n, K, classes]."""
    out = []
    for m in models_or_params:
        fn, params = (jax.jit(m.features), m.params) if isinstance(m, Model) else (features, m)
        out.append(np.concatenate([np.asarray(fn(params, jnp.asarray(x[i:i + CHUNK]))[EXITS])
                                   for i in range(0, len(x), CHUNK)]))
    return np.stack(out)


def noisy_copies(model: Model, scale: float, copies: int, key: jax.Array) -> list:
    """`copies` parameter trees of `model`, each float leaf multiplied by 1 + scale * N(0, 1)."""
    leaves, tree = jax.tree_util.tree_flatten(model.params)
    out = []
    for c in range(copies):
        keys = jax.random.split(jax.random.fold_in(key, c), len(leaves))
        out.append(jax.tree_util.tree_unflatten(tree, [
            a * (1 + scale * jax.random.normal(kk, jnp.shape(a), jnp.float32)).astype(jnp.asarray(a).dtype)
            if jnp.issubdtype(jnp.asarray(a).dtype, jnp.floating) else a for a, kk in zip(leaves, keys)]))
    return out


def craft(model: Model, seeds, threshold: float = DEFAULT_THRESHOLD, config: CraftConfig = CraftConfig(),
          progress: Callable[[int, int], None] | None = None, copies: Sequence[Model] = (),
          decoys: Sequence[Model] = ()) -> dict:
    """Fingerprint samples for `model` from `seeds` (inputs in its input space, at least
    K * config.seeds_per_exit of them, in the order they are to be tried).

    Args:
      copies: the owner's own derived copies of `model` (e.g. pruned and fine-tuned on its data), added
        to the noisy copies the robustness score is taken over.
      decoys: independent multi-exit models with `model`'s exits and inputs; kept samples are those on
        which the fewest decoys stop at the target (see the module docstring). Never calibrate the
        verdict on a decoy: its match on the kept samples is low by construction.

    Returns:
      {"samples" [n, ...] float32, "stops" [n] int32 (the expected stop exit), "labels" [n] int32 (the
      owner's answers), "tried" and "kept" per target exit, "robust": the share of kept samples per exit
      that stop right on every copy, "decoy_hits": per exit, the mean number of decoys that stop at the
      target on the kept samples}; samples are grouped by target exit, at most config.per_exit each.

    Raises:
      JaxprovError: a model without exits, too few seeds, a decoy or copy without the same exits, or a
        target exit that no crafted sample reaches robustly (with what to change).
    """
    threshold = check_threshold(threshold)
    k = num_exits(model.module)
    if k < 2:
        raise JaxprovError(f"{model.name} ({model.arch}) has no early exits; timing fingerprints need a "
                           "multi-exit model such as cnn_exits")
    for role, others in (("copy", copies), ("decoy", decoys)):
        for other in others:
            if num_exits(other.module) != k or tuple(other.input_spec.shape) != tuple(model.input_spec.shape):
                raise JaxprovError(f"{role} {other.name} ({other.arch}, {num_exits(other.module)} exits, input "
                                   f"{tuple(other.input_spec.shape)}) does not match {model.name} ({model.arch}, {k} "
                                   f"exits, input {tuple(model.input_spec.shape)}): give multi-exit models like it")
    seeds = jnp.asarray(seeds, jnp.float32)
    need, pool = k * config.seeds_per_exit, config.seeds_needed(k)
    if seeds.shape[0] < pool:
        raise JaxprovError(f"crafting {config.seeds_per_exit} tries for each of {k} exits (a pool of {config.pool} "
                           f"seeds per try) needs {pool} seeds, got {seeds.shape[0]}")
    features = jax.jit(model.features)
    clean = _exit_logits([model.params], features, np.asarray(seeds[:pool]))[0]
    _, natural, _ = exit_rule(jnp.asarray(clean), threshold)
    natural = np.asarray(natural)
    at_stop = np.take_along_axis(_confidence(clean), natural[:, None], axis=1)[:, 0]
    chosen, targets = assign_targets(natural, at_stop, k, config.seeds_per_exit, config.assign)
    seeds, targets = seeds[chosen], jnp.asarray(targets)
    labels = jnp.asarray(np.argmax(clean[chosen, -1], axis=-1).astype(np.int32))
    attack = _attack_fn(model, config, threshold)
    lo, hi = valid_box(model.input_spec, seeds.ndim)
    eps, step = _raw_to_input(model, config.eps, seeds.ndim), _raw_to_input(model, config.step_size, seeds.ndim)
    crafted, chunk = [], min(CHUNK, need)
    for start in range(0, need, chunk):
        stop = min(start + chunk, need)
        xb, tb, yb = (_pad(a[start:stop], chunk) for a in (seeds, targets, labels))
        crafted.append(np.asarray(attack(model.params, xb, tb, yb, eps, step, lo, hi))[:stop - start])
        if progress is not None:
            progress(stop, need)
    crafted = np.concatenate(crafted)
    params = [model.params, *noisy_copies(model, config.weight_noise, config.noise_copies, NOISE_KEY)]
    exit_logits = _exit_logits([*params, *copies], features, crafted)
    targets = np.asarray(targets)
    stops = robust_stop(exit_logits[0], threshold, config.margin)
    answers = np.asarray(exit_rule(jnp.asarray(exit_logits[0]), threshold)[2])
    score = stop_margin(exit_logits, targets, threshold)
    hits = np.zeros(need, np.int64)
    if decoys:
        hits = np.sum([np.asarray(exit_rule(jnp.asarray(z), threshold)[1]) == targets
                       for z in _exit_logits(decoys, features, crafted)], axis=0)
    keep = select(targets, stops, score, hits, k, config.per_exit)
    kept = [int(ok.size) for ok in keep]
    if min(kept) == 0:  # every exit must appear, or the suspect's time levels cannot be matched to exits
        raise JaxprovError(f"no crafted sample stops robustly at exit {kept.index(0)} of {model.name} "
                           f"(kept per exit: {kept}); try a larger eps or more steps")
    index = np.concatenate(keep)
    return {"samples": crafted[index].astype(np.float32), "stops": stops[index].astype(np.int32),
            "labels": answers[index].astype(np.int32), "tried": [config.seeds_per_exit] * k, "kept": kept,
            "robust": [round(float(np.mean(score[ok] > 0)), 4) for ok in keep],
            "decoy_hits": [round(float(np.mean(hits[ok])), 4) for ok in keep],
            "natural_stops": natural[chosen[index]].astype(np.int32)}


def _confidence(exit_logits: np.ndarray) -> np.ndarray:
    """Max softmax per exit, [..., K, classes] -> [..., K]."""
    z = np.asarray(exit_logits, np.float64)
    z = z - z.max(axis=-1, keepdims=True)
    return 1.0 / np.exp(z).sum(axis=-1)


def _attack_fn(model: Model, config: CraftConfig, threshold: float):
    features = model.features
    low, high = config.low, config.high

    def objective(params, x, target, label):  # PGD ascends: minimise L
        return -jnp.sum(exit_loss(features(params, x)[EXITS], target, label, low, high, config.confident_weight))

    @jax.jit
    def attack(params, x, target, label, eps, step, lo, hi):
        return linf_pgd(lambda xa: objective(params, xa, target, label), x, eps, config.steps, step, lo, hi)

    return attack


def _raw_to_input(model: Model, value: float, ndim: int):
    """A length in raw pixel units as a length in the model's normalised input space (per channel)."""
    std = model.input_spec.std
    if std is None:
        return jnp.float32(value)
    return (value / jnp.asarray(std, jnp.float32)).reshape((1,) * (ndim - 1) + (-1,))


def _pad(a: jax.Array, size: int) -> jax.Array:
    """Pad the leading axis to `size` (repeating the first row) so every PGD batch has one shape."""
    missing = size - a.shape[0]
    return a if missing <= 0 else jnp.concatenate([a, jnp.repeat(a[:1], missing, axis=0)])
