"""Early-exit inference that really stops: a multi-exit model (`jaxprov.models.multi_exit`) staged into
one jitted function per segment, run one sample at a time.

The exit rule of Shallow-Deep Networks (Kaya et al., ICML 2019): per sample, the first exit whose
maximum softmax probability reaches the threshold q answers, and the segments after it are never
run; if no exit reaches q, the most confident exit answers (every segment ran). The default q = 0.9
is ours. What time reveals is where the computation stopped (`Answer.stop`: the answering exit, or
the last one when none was confident), not which exit answered; fingerprints target the stop. `exit_rule` is the same rule on every exit's logits at once (for crafting and analysis,
where nothing needs to stop).
"""

from __future__ import annotations

import dataclasses
import functools
import time
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

from jaxprov.errors import JaxprovError
from jaxprov.model import Model
from jaxprov.models.multi_exit import num_exits

DEFAULT_THRESHOLD = 0.9


@dataclasses.dataclass(frozen=True)
class Answer:
    """One early-exit answer: the predicted class, the exit that gave it, the exit after which the
    computation stopped (the last one when no exit was confident) and the compute time."""

    label: int
    exit: int
    stop: int
    latency_s: float


def check_threshold(threshold: float) -> float:
    threshold = float(threshold)
    if not 0.0 < threshold <= 1.0:
        raise JaxprovError(f"the confidence threshold must be in (0, 1], got {threshold}")
    return threshold


class EarlyExit:
    """`model` staged for early exit at confidence `threshold`.

    `self.segments[k](params, h) -> (h_next, [confidence, label])` is exit k's jitted segment (the same
    function objects for every model of one arch); calling the EarlyExit runs them in order until
    one is confident.
    """

    def __init__(self, model: Model, threshold: float = DEFAULT_THRESHOLD):
        k = num_exits(model.module)
        if k < 2:
            raise JaxprovError(f"{model.name} ({model.arch}) has no early exits; early-exit inference needs a "
                               "multi-exit architecture such as lenet_exits")
        self.model = model
        self.threshold = check_threshold(threshold)
        self.num_exits = k
        self.segments: tuple[Callable, ...] = tuple(_segment_fn(model.module, i) for i in range(k))
        self.params = jax.tree_util.tree_map(jnp.asarray, model.params)

    def warm_up(self) -> "EarlyExit":
        """Compile every segment (a first call is not a latency)."""
        h = self.model.input_spec.example(1)
        for segment in self.segments:
            h, out = segment(self.params, h)
        jax.block_until_ready(out)
        return self

    def __call__(self, x) -> Answer:
        """Answer one sample `x` (shaped like the input spec, optionally with a batch axis of 1)."""
        start = time.perf_counter()
        h = jnp.asarray(x, jnp.float32).reshape((1, *self.model.input_spec.shape))
        best = (-1.0, 0, 0)  # (confidence, label, exit) of the most confident exit so far
        for k, segment in enumerate(self.segments):
            h, out = segment(self.params, h)
            confidence, label = (float(v) for v in np.asarray(out))  # the host sync that decides
            if confidence >= self.threshold:
                return Answer(int(label), k, k, time.perf_counter() - start)
            if confidence > best[0]:
                best = (confidence, int(label), k)
        return Answer(best[1], best[2], self.num_exits - 1, time.perf_counter() - start)

    def predict(self, x) -> int:
        return self(x).label


def exit_rule(exit_logits: jax.Array, threshold: float) -> tuple[jax.Array, jax.Array, jax.Array]:
    """The rule on every exit's logits [batch, K, classes] at once: (answering exit, stop, label), each
    [batch] int32."""
    confidence = jnp.max(jax.nn.softmax(exit_logits, axis=-1), axis=-1)  # [batch, K]
    reached = confidence >= threshold
    any_ = jnp.any(reached, axis=1)
    first = jnp.argmax(reached, axis=1)
    exit_ = jnp.where(any_, first, jnp.argmax(confidence, axis=1)).astype(jnp.int32)
    stop = jnp.where(any_, first, exit_logits.shape[1] - 1).astype(jnp.int32)
    labels = jnp.argmax(exit_logits, axis=-1)  # [batch, K]
    return exit_, stop, jnp.take_along_axis(labels, exit_[:, None], axis=1)[:, 0].astype(jnp.int32)


@dataclasses.dataclass(frozen=True)
class LatencyProfile:
    """Per stop exit: how many samples stopped there, and the median and spread (median absolute
    deviation) of their latencies over repeated runs, warm-up excluded."""

    counts: tuple[int, ...]
    median_s: tuple[float | None, ...]
    mad_s: tuple[float | None, ...]
    repeats: int

    def to_json(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, data) -> "LatencyProfile":
        return cls(tuple(data["counts"]), tuple(data["median_s"]), tuple(data["mad_s"]), int(data["repeats"]))


def profile(early: EarlyExit, xs, repeats: int = 5) -> tuple[LatencyProfile, np.ndarray, np.ndarray]:
    """Run every sample of `xs` `repeats` times (round-robin, so a slow moment of a shared machine hits
    every sample alike) after a warm-up; -> (profile, stop exit per sample, latencies [n, repeats])."""
    early.warm_up()
    xs = np.asarray(xs, np.float32)
    times = np.empty((len(xs), repeats))
    exits = np.empty(len(xs), np.int64)
    for r in range(repeats):
        for i in range(len(xs)):
            answer = early(xs[i])
            times[i, r], exits[i] = answer.latency_s, answer.stop
    counts, med, mad = [], [], []
    for k in range(early.num_exits):
        t = times[exits == k].ravel()
        counts.append(int(np.sum(exits == k)))
        med.append(float(np.median(t)) if t.size else None)
        mad.append(float(np.median(np.abs(t - np.median(t)))) if t.size else None)
    return LatencyProfile(tuple(counts), tuple(med), tuple(mad), repeats), exits, times


@functools.lru_cache(maxsize=256)
def _segment_fn(module, k: int) -> Callable:
    """Exit k's segment, jitted once per (arch, k): (params, h) -> (h_next, [max softmax, argmax])."""

    def segment(params, h):
        h, logits = module.apply(params, k, h, method="segment")
        p = jax.nn.softmax(logits[0])
        return h, jnp.stack([jnp.max(p), jnp.argmax(p).astype(p.dtype)])

    return jax.jit(segment)
