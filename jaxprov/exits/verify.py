"""Verification from timing alone: send the fingerprint's samples to a suspect, read only its answers and
response times, infer where each computation stopped, and score the match with the expected stops.

Ours (Dong et al. 2021 publish neither their statistic nor their thresholds):
- Each sample is sent `repeats` times, round-robin in a fresh random order per round, so a slow
  moment of a shared machine hits all samples alike; `measure` records when each query went.
- The suspect's time levels come from its own times, never from the owner's hardware
  (`jaxprov.exits.timing`): the times are detrended along the order they were sent in, each
  sample's time is the quantile of its repeats that agrees best between two halves of the rounds,
  and the n times are cut into K groups by exact one-dimensional k-means, the group of the j-th
  smallest centre read as stop exit j. The reading commutes with any increasing affine change of
  the times, so a suspect that is uniformly slower, or has a constant network delay, yields the
  same levels.
- The match score is the share of samples whose inferred stop equals the expected one.
- Calibration: the match rates of independent multi-exit models (`calibrate`). Independents differ
  from each other in how often they match (one stops early more often than another), more than a
  binomial with one shared rate allows, so the null is beta-binomial: a new independent's match
  count is Binomial(n, p) with p drawn from a beta distribution whose mean is the null rates' mean
  and whose variance is their sample variance times (1 + 1/J) for J null models (the spread of a
  new model around an estimated mean), fitted by moments as the intra-class correlation rho, with
  a floor `RHO_FLOOR` on rho (a handful of null models can understate their own spread; the floor
  is the measured choice of docs/results.md) (`null_fit`); the p-value is the beta-binomial tail
  P(X >= matches) (`beta_binomial_tail`). `null_model="binomial"` keeps the earlier test:
  p0 = the largest null rate, p = P(Binomial(n, p0) >= matches). Uncalibrated (no null models),
  p0 is the largest share of one expected stop (what a suspect with one time level reaches at best)
  and the test binomial. The owner's claim is accepted at p < alpha (default 0.01); `threshold` is
  the smallest match rate that reaches it.
- The baseline the paper argues against, IPGuard-style label agreement (Cao et al. 2021): the
  share of samples on which the suspect answers the owner's label, tested the same way against the
  independents' agreement rates.
"""

from __future__ import annotations

import dataclasses
import math
import time
from typing import Callable, Protocol, Sequence

import numpy as np

from jaxprov.errors import JaxprovError
from jaxprov.exits.fingerprint import Fingerprint
from jaxprov.exits.staged import EarlyExit
from jaxprov.exits.timing import Levels, time_levels
from jaxprov.model import Model

ALPHA = 0.01
NULL_MODELS = ("beta-binomial", "binomial")
RHO_FLOOR = 0.05  # the least overdispersion a calibrated null is given (docs/results.md: measured)
DEFAULT_REPEATS = 60
NOISY_AGREEMENT = 0.95  # below this split-half agreement the summary says the times were noisy (docs/results.md)


class Suspect(Protocol):
    def query(self, x) -> tuple[int, float]:
        """The suspect's answer to one sample and the seconds it took."""


class InProcessSuspect:
    """A multi-exit model in this process, answering with early exit at `threshold`; timed around the call."""

    def __init__(self, model: Model, threshold: float):
        self.early = EarlyExit(model, threshold).warm_up()

    def query(self, x) -> tuple[int, float]:
        start = time.perf_counter()
        label = self.early(x).label
        return label, time.perf_counter() - start


class SlowedSuspect:
    """A suspect on a simulated slower, noisier machine: each time becomes factor * t + jitter, with jitter
    drawn from an exponential distribution of mean `jitter_s` (delays only add), seeded."""

    def __init__(self, suspect: Suspect, factor: float = 2.0, jitter_s: float = 0.0, seed: int = 0):
        self.suspect, self.factor, self.jitter_s = suspect, float(factor), float(jitter_s)
        self.rng = np.random.default_rng(seed)

    def query(self, x) -> tuple[int, float]:
        label, seconds = self.suspect.query(x)
        jitter = self.rng.exponential(self.jitter_s) if self.jitter_s > 0 else 0.0
        return label, self.factor * seconds + jitter


def measure(suspect: Suspect, samples: np.ndarray, repeats: int = DEFAULT_REPEATS, seed: int = 0,
            progress: Callable[[int, int], None] | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Query every sample `repeats` times -> (times [n, repeats] seconds, labels [n] of the first round,
    order [n, repeats]: the place of each query in the sequence sent)."""
    if repeats < 1:
        raise JaxprovError(f"repeats must be >= 1, got {repeats}")
    n = len(samples)
    rng = np.random.default_rng(seed)
    times = np.empty((n, repeats))
    order = np.empty((n, repeats), np.int64)
    labels = np.empty(n, np.int64)
    suspect.query(samples[0])  # a first query pays for connections and compilation: not a latency
    for r in range(repeats):
        for place, i in enumerate(rng.permutation(n)):
            label, times[i, r] = suspect.query(samples[i])
            order[i, r] = r * n + place
            if r == 0:
                labels[i] = label
        if progress is not None:
            progress((r + 1) * n, repeats * n)
    return times, labels, order


def binomial_tail(successes: int, n: int, p: float) -> float:
    """P(Binomial(n, p) >= successes)."""
    if successes <= 0:
        return 1.0
    if p <= 0.0:
        return 0.0
    if p >= 1.0:
        return 1.0
    terms = [math.lgamma(n + 1) - math.lgamma(j + 1) - math.lgamma(n - j + 1) + j * math.log(p)
             + (n - j) * math.log1p(-p) for j in range(successes, n + 1)]
    top = max(terms)
    return float(min(1.0, math.exp(top) * sum(math.exp(t - top) for t in terms)))


def beta_binomial_tail(successes: int, n: int, mean: float, rho: float) -> float:
    """P(X >= successes) for X ~ BetaBinomial(n, a, b) with mean a / (a + b) = `mean` and intra-class
    correlation 1 / (a + b + 1) = `rho`; rho = 0 is the binomial."""
    if rho <= 0.0 or mean <= 0.0 or mean >= 1.0:
        return binomial_tail(successes, n, mean)
    if successes <= 0:
        return 1.0
    if successes > n:
        return 0.0
    rho = min(rho, 1.0 - 1e-9)
    a, b = mean * (1 - rho) / rho, (1 - mean) * (1 - rho) / rho
    lbeta = lambda x, y: math.lgamma(x) + math.lgamma(y) - math.lgamma(x + y)  # noqa: E731
    terms = [math.lgamma(n + 1) - math.lgamma(j + 1) - math.lgamma(n - j + 1) + lbeta(j + a, n - j + b) - lbeta(a, b)
             for j in range(successes, n + 1)]
    top = max(terms)
    return float(min(1.0, math.exp(top) * sum(math.exp(t - top) for t in terms)))


def null_fit(rates: Sequence[float], n: int, rho_floor: float = RHO_FLOOR) -> tuple[float, float]:
    """The beta-binomial null of independents' match rates on an n-sample fingerprint, by moments:
    -> (mean, rho), with the variance of a new independent's rate taken as the sample variance x
    (1 + 1/J) (J rates; 0 for one) and rho >= `rho_floor`."""
    rates = np.asarray(rates, np.float64)
    if rates.size == 0 or n < 2 or not np.all((rates >= 0) & (rates <= 1)):
        raise JaxprovError(f"a null needs match rates in [0, 1] and n >= 2 samples, got {rates.tolist()} and n = {n}")
    mean = float(np.clip(rates.mean(), 0.5 / n, 1 - 0.5 / n))  # a null rate of 0 or 1 still leaves a p-value
    var = float(rates.var(ddof=1)) * (1 + 1 / rates.size) if rates.size > 1 else 0.0
    rho = (var * n / (mean * (1 - mean)) - 1) / (n - 1)
    return mean, float(min(max(rho, rho_floor), 1.0 - 1e-9))


def needed(n: int, p0: float, alpha: float, rho: float = 0.0) -> float:
    """The smallest match rate m / n with beta_binomial_tail(m, n, p0, rho) < alpha (1.0 + 1/n when none);
    rho = 0: the binomial tail."""
    for m in range(n + 1):
        if beta_binomial_tail(m, n, p0, rho) < alpha:
            return m / n
    return 1.0 + 1.0 / n


def null_test(score_: float, n: int, rates: Sequence[float] | None, alpha: float = ALPHA,
              null_model: str = "beta-binomial", fallback_p0: float | None = None) -> "Test":
    """A match rate `score_` of n samples against null `rates` (None: uncalibrated, binomial with
    `fallback_p0`), by `null_model` (see the module docstring)."""
    if null_model not in NULL_MODELS:
        raise JaxprovError(f"unknown null model {null_model!r}: use one of {', '.join(NULL_MODELS)}")
    if rates:
        if null_model == "beta-binomial":
            p0, rho = null_fit(rates, n)
        else:
            p0, rho = float(max(rates)), 0.0
    else:
        if fallback_p0 is None:
            raise JaxprovError("an uncalibrated test needs its p0")
        p0, rho = float(fallback_p0), 0.0
    matches = int(round(score_ * n))
    p = beta_binomial_tail(matches, n, p0, rho)
    return Test(score_, p0, p, needed(n, p0, alpha, rho), "owner's model" if p < alpha else "not shown", bool(rates),
                rho, null_model if rates else "binomial")


@dataclasses.dataclass(frozen=True)
class Test:
    """One statistic against its null: the score, the null rate p0, the p-value, the rate needed and the verdict."""

    score: float
    p0: float
    p_value: float
    threshold: float
    verdict: str  # "owner's model" | "not shown"
    calibrated: bool
    rho: float = 0.0  # the beta-binomial null's overdispersion (0: binomial)
    null_model: str = "binomial"

    def to_json(self) -> dict:
        return dataclasses.asdict(self)


@dataclasses.dataclass(frozen=True)
class Verification:
    timing: Test  # the answer: the match of inferred and expected stops
    labels: Test  # the baseline: agreement with the owner's labels
    n: int
    repeats: int
    levels: tuple[int, ...]  # inferred stop per sample
    centres_s: tuple[float, ...]
    quantile: float | None  # the per-sample quantile of the detrended repeats the reading chose (timing.py)
    agreement: float | None  # how well that reading agrees between the even and the odd rounds

    @property
    def verdict(self) -> str:
        return self.timing.verdict

    def to_json(self) -> dict:
        return {"verdict": self.verdict, "timing": self.timing.to_json(), "labels": self.labels.to_json(),
                "n": self.n, "repeats": self.repeats, "levels": list(self.levels), "centres_s": list(self.centres_s),
                "quantile": self.quantile, "split_half_agreement": self.agreement}

    def summary(self) -> str:
        t, b = self.timing, self.labels
        return "\n".join([
            f"timing match:    {t.score:.3f} of {self.n} samples (null {t.p0:.3f}"
            + (f", rho {t.rho:.3f}" if t.rho > 0 else "") + f", needs {t.threshold:.3f}), "
            f"p = {t.p_value:.3g}" + ("" if t.calibrated else "  (uncalibrated: no null models)"),
            f"label agreement: {b.score:.3f} (null {b.p0:.3f}, needs {b.threshold:.3f}), p = {b.p_value:.3g}  "
            "(IPGuard-style baseline)",
            "time levels:     " + ", ".join(f"{c * 1e3:.3f} ms" for c in self.centres_s)
            + (f"  (quantile {self.quantile:g} of each sample's detrended repeats, split-half agreement "
               f"{self.agreement:.2f})" if self.quantile else ""),
            f"verdict (timing): {self.verdict}",
        ] + ([f"note: the times were noisy (split-half agreement {self.agreement:.2f} < {NOISY_AGREEMENT}); "
              "levels may be misread; more --repeats (or --max-repeats), or a quieter machine, tell"]
             if self.agreement is not None and self.agreement < NOISY_AGREEMENT else []))


def score(fingerprint: Fingerprint, times: np.ndarray, labels: np.ndarray,
          order: np.ndarray | None = None) -> tuple[float, float, Levels]:
    """`measure`'s (times, labels, order) -> (timing match rate, label agreement rate, the time levels read)."""
    read = time_levels(times, fingerprint.num_exits, order)
    return (float(np.mean(read.levels == fingerprint.stops)),
            float(np.mean(np.asarray(labels) == fingerprint.labels)), read)


def verify(fingerprint: Fingerprint, suspect: Suspect, repeats: int = DEFAULT_REPEATS,
           calibration: dict | None = None, alpha: float = ALPHA, seed: int = 0,
           progress: Callable[[int, int], None] | None = None, null_model: str = "beta-binomial",
           max_repeats: int | None = None) -> Verification:
    """Query `suspect` with the fingerprint and test the owner's claim (see the module docstring).

    Args:
      calibration: {"match": [null match rates], "label_agreement": [...]} from `calibrate`; default the
        fingerprint's own (meta["calibration"]); without one the test is marked uncalibrated.
      null_model: "beta-binomial" (the default) or "binomial" (p0 = the largest null rate), for a
        calibrated test; an uncalibrated one is binomial.
      max_repeats: while the reading's split-half agreement is below `NOISY_AGREEMENT`, send another
        `repeats` rounds (a fresh seed each), up to this many in all; None: `repeats` only.
    """
    if not 0 < alpha < 1:
        raise JaxprovError(f"alpha must be in (0, 1), got {alpha}")
    if null_model not in NULL_MODELS:
        raise JaxprovError(f"unknown null model {null_model!r}: use one of {', '.join(NULL_MODELS)}")
    if max_repeats is not None and max_repeats < repeats:
        raise JaxprovError(f"--max-repeats {max_repeats} is below --repeats {repeats}")
    limit = max_repeats or repeats
    times, labels, order = measure(suspect, fingerprint.samples, repeats, seed,
                                   progress and (lambda done, _: progress(done, limit * fingerprint.n)))
    match, agreement, read = score(fingerprint, times, labels, order)
    while times.shape[1] < limit and (read.agreement is None or read.agreement < NOISY_AGREEMENT):
        sent = times.size
        more = min(repeats, limit - times.shape[1])
        extra, _, extra_order = measure(suspect, fingerprint.samples, more, seed + times.shape[1],
                                        progress and (lambda done, _: progress(sent + done, limit * fingerprint.n)))
        times, order = np.concatenate([times, extra], 1), np.concatenate([order, extra_order + sent], 1)
        match, agreement, read = score(fingerprint, times, labels, order)
    calibration = calibration if calibration is not None else fingerprint.meta.get("calibration")
    n = fingerprint.n
    fallback_timing = float(np.max(np.bincount(fingerprint.stops, minlength=fingerprint.num_exits))) / n
    fallback_labels = float(np.max(np.bincount(fingerprint.labels))) / n
    tests = [null_test(match, n, calibration["match"] if calibration else None, alpha, null_model, fallback_timing),
             null_test(agreement, n, calibration["label_agreement"] if calibration else None, alpha, null_model,
                       fallback_labels)]
    return Verification(tests[0], tests[1], n, int(times.shape[1]), tuple(int(v) for v in read.levels),
                        tuple(float(c) for c in read.centres_s), read.quantile, read.agreement)


def calibrate(fingerprint: Fingerprint, independents: Sequence[Suspect], repeats: int = DEFAULT_REPEATS,
              seed: int = 0, names: Sequence[str] | None = None) -> dict:
    """The null: match and label-agreement rates of independent multi-exit models on the fingerprint."""
    if not independents:
        raise JaxprovError("calibration needs at least one independent multi-exit model")
    matches, agreements = [], []
    for suspect in independents:
        match, agreement, _ = score(fingerprint, *measure(suspect, fingerprint.samples, repeats, seed))
        matches.append(match)
        agreements.append(agreement)
    return {"match": matches, "label_agreement": agreements, "repeats": repeats,
            "null": list(names) if names is not None else None}
