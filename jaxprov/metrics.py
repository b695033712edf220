"""Detection metrics for model-reuse benchmarks: ROC AUC, TPR at a fixed FPR, ModelDiff's correctness.

A reuse benchmark scores pairs of models with a similarity. Pairs (parent, derived child) are the
positives; pairs (model, unrelated model or a derivative of one) are the negatives. Higher score means
"more likely derived". The figures the literature reports, and what they mean here:

- ``roc_auc``: the probability that a random positive pair scores above a random negative pair, ties
  counting 1/2 (the Mann-Whitney U statistic divided by n_pos * n_neg). This is the number in the
  ModelGiF (Song et al., ICCV 2023) and SAC (NeurIPS 2022) IP-protection tables: 1.00 means some
  threshold separates every derived model from every unrelated one. It needs no threshold.
- ``tpr_at_fpr``: the fraction of positives flagged when the threshold is set so that at most a
  fraction ``fpr`` of negatives is flagged. This is the operating point a deployment would use; the
  threshold is chosen on the negatives alone, never on the positives.
- ``correctness``: ModelDiff's figure (Li et al., ISSTA 2021; 91.7 % on its 144 pairs): a suspect is
  correct when its true parent scores strictly above every unrelated reference model. It is a ranking
  criterion per suspect, not a threshold shared across suspects.
- ``bootstrap_ci``: percentile bootstrap intervals, resampling each sample (positives, negatives,
  suspects) independently with replacement, from numpy's ``Generator(PCG64(seed))``.

Degenerate input fails loudly: an empty sample or NaN scores raise ``JaxprovError`` (how many NaNs,
in which argument), because a silently dropped score would change the figure being reported.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from jaxprov.errors import JaxprovError

# fpr * n_neg is floored to count allowed false positives; 0.29 * 100 is 28.999999999999996 in
# floating point, so a small tolerance keeps "29 of 100" from becoming 28.
_FLOOR_TOL = 1e-9


def _scores(values: Any, name: str) -> np.ndarray:
    """A non-empty 1-D float64 array without NaN, or a JaxprovError naming ``name``."""
    try:
        arr = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError) as e:
        raise JaxprovError(f"{name}: scores must be numbers ({e})") from None
    if arr.ndim != 1:
        raise JaxprovError(f"{name}: expected a 1-D sequence of scores, got shape {arr.shape}")
    if arr.size == 0:
        raise JaxprovError(f"{name}: no scores; a detection metric needs at least one")
    n_nan = int(np.isnan(arr).sum())
    if n_nan:
        raise JaxprovError(f"{name}: {n_nan} of {arr.size} scores are NaN; fix or drop them before scoring")
    return arr


def roc_auc(scores_pos: Sequence[float] | np.ndarray, scores_neg: Sequence[float] | np.ndarray) -> float:
    """Area under the ROC curve, exactly, as the Mann-Whitney statistic.

    AUC = P(s_pos > s_neg) + 1/2 P(s_pos == s_neg) over all positive-negative pairs, computed from
    mid-ranks of the pooled scores in O(n log n). Equal to ``sklearn.metrics.roc_auc_score``.

    Args:
        scores_pos: similarity of each positive (derived) pair; higher means more likely derived.
        scores_neg: similarity of each negative (unrelated) pair.

    Returns:
        AUC in [0, 1]: 1.0 when every positive scores above every negative, 0.0 when reversed.

    Raises:
        JaxprovError: either sample is empty, not 1-D, or contains NaN.
    """
    pos = _scores(scores_pos, "scores_pos")
    neg = _scores(scores_neg, "scores_neg")
    pooled = np.concatenate([pos, neg])
    _, inverse, counts = np.unique(pooled, return_inverse=True, return_counts=True)
    # Mid-rank of each distinct value: ranks before it, plus the mean of its own 1..count block.
    mid_rank = np.cumsum(counts) - (counts - 1) / 2.0
    rank_sum_pos = float(mid_rank[inverse[: pos.size]].sum())
    u = rank_sum_pos - pos.size * (pos.size + 1) / 2.0
    return float(u / (pos.size * neg.size))


def allowed_false_positives(n_neg: int, fpr: float) -> int:
    """How many negatives may score at or above the threshold: floor(fpr * n_neg).

    Args:
        n_neg: number of negatives.
        fpr: target false-positive rate in [0, 1].

    Returns:
        The largest k with k / n_neg <= fpr. With 50 negatives and fpr 0.01 this is 0.
    """
    return int(math.floor(fpr * n_neg + _FLOOR_TOL))


def tpr_at_fpr(
    scores_pos: Sequence[float] | np.ndarray, scores_neg: Sequence[float] | np.ndarray, fpr: float = 0.01
) -> float:
    """True-positive rate at the most permissive threshold whose false-positive rate is <= ``fpr``.

    Convention (conservative, threshold from the negatives only): a pair is flagged when its score is
    >= t, and t is the smallest threshold with (#negatives >= t) / n_neg <= fpr. With
    k = floor(fpr * n_neg) false positives allowed and v the (k+1)-th largest negative score, that
    set of thresholds is every t > v, so a positive counts as detected iff it scores STRICTLY above v:

    - a positive tied with v is not detected (the tie cannot be split without exceeding ``fpr``);
    - negatives tied with v are all below the threshold, so the realised FPR may be below ``fpr``;
    - with few negatives the budget rounds down: with 50 negatives fpr 0.01 allows zero false
      positives, so TPR is the fraction of positives above the highest negative. A 1 % FPR only
      means "1 %" once there are >= 100 negatives; report n_neg beside the figure;
    - if k >= n_neg (fpr = 1.0) every pair is flagged and TPR is 1.0.

    Args:
        scores_pos: similarity of each positive pair; higher means more likely derived.
        scores_neg: similarity of each negative pair.
        fpr: the false-positive rate allowed, in [0, 1].

    Returns:
        TPR in [0, 1].

    Raises:
        JaxprovError: a sample is empty, not 1-D, or contains NaN; or ``fpr`` is outside [0, 1].
    """
    pos = _scores(scores_pos, "scores_pos")
    neg = _scores(scores_neg, "scores_neg")
    if not (isinstance(fpr, (int, float)) and 0.0 <= fpr <= 1.0):
        raise JaxprovError(f"fpr must be a number in [0, 1], got {fpr!r}")
    k = allowed_false_positives(neg.size, fpr)
    if k >= neg.size:
        return 1.0
    v = np.sort(neg)[::-1][k]  # (k+1)-th largest negative
    return float(np.mean(pos > v))


def correctness_flags(similarities: Mapping[Any, tuple[float, Sequence[float]]]) -> np.ndarray:
    """Per suspect, whether the true parent scores strictly above every unrelated reference.

    Args:
        similarities: suspect -> (similarity to its true parent, similarities to unrelated references).

    Returns:
        A bool array in the mapping's iteration order; its mean is ``correctness``, and it is the
        sample to pass to ``bootstrap_ci(np.mean, flags, seed=...)``.

    Raises:
        JaxprovError: no suspects, a suspect without unrelated references, or a NaN score.
    """
    if len(similarities) == 0:
        raise JaxprovError("correctness: no suspects given")
    flags = []
    n_nan = 0
    for suspect, entry in similarities.items():
        try:
            parent, unrelated = entry
        except (TypeError, ValueError):
            raise JaxprovError(
                f"correctness: suspect {suspect!r} must map to (true_parent_score, [unrelated scores])") from None
        parent = float(parent)
        others = np.asarray(unrelated, dtype=np.float64).reshape(-1)
        if others.size == 0:
            # Vacuously "correct" would inflate the figure: ranking needs something to rank against.
            raise JaxprovError(f"correctness: suspect {suspect!r} has no unrelated reference scores")
        n_nan += int(math.isnan(parent)) + int(np.isnan(others).sum())
        flags.append(parent > others.max())
    if n_nan:
        raise JaxprovError(f"correctness: {n_nan} scores are NaN; fix or drop them before scoring")
    return np.asarray(flags, dtype=bool)


def correctness(similarities: Mapping[Any, tuple[float, Sequence[float]]]) -> float:
    """ModelDiff's correctness: fraction of suspects whose true parent outranks every unrelated model.

    A tie with an unrelated reference counts as a miss (strictly above is required).

    Args:
        similarities: suspect -> (similarity to its true parent, similarities to unrelated references).

    Returns:
        Fraction in [0, 1].

    Raises:
        JaxprovError: no suspects, a suspect without unrelated references, or a NaN score.
    """
    return float(np.mean(correctness_flags(similarities)))


def bootstrap_ci(
    statistic: Callable[..., float],
    *samples: Sequence[Any] | np.ndarray,
    seed: int,
    n_boot: int = 1000,
    level: float = 0.95,
) -> tuple[float, float]:
    """Percentile bootstrap confidence interval of ``statistic(*samples)``.

    Each sample is resampled independently, with replacement, to its own size (along axis 0), and
    ``statistic`` is evaluated on each of ``n_boot`` replicates; the interval is the
    ((1 - level) / 2, (1 + level) / 2) quantiles of the replicates (numpy's linear interpolation).
    The draws come from ``np.random.Generator(np.random.PCG64(seed))``, so the same seed, samples and
    ``n_boot`` always give the same interval.

    Args:
        statistic: a function of the samples returning a float, e.g. ``roc_auc`` or ``np.mean``.
        *samples: one or more non-empty arrays (e.g. positive scores, negative scores).
        seed: non-negative integer seeding the resampling.
        n_boot: number of bootstrap replicates, >= 1.
        level: coverage of the interval, in (0, 1).

    Returns:
        (low, high) as Python floats.

    Raises:
        JaxprovError: no samples, an empty sample, or an invalid seed / n_boot / level.
    """
    if not samples:
        raise JaxprovError("bootstrap_ci: give at least one sample")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise JaxprovError(f"bootstrap_ci: seed must be a non-negative int, got {seed!r}")
    if isinstance(n_boot, bool) or not isinstance(n_boot, (int, np.integer)) or n_boot < 1:
        raise JaxprovError(f"bootstrap_ci: n_boot must be a positive int, got {n_boot!r}")
    if not (isinstance(level, (int, float)) and 0.0 < level < 1.0):
        raise JaxprovError(f"bootstrap_ci: level must be in (0, 1), got {level!r}")
    arrays = [np.asarray(s) for s in samples]
    for i, a in enumerate(arrays):
        if a.ndim == 0 or a.shape[0] == 0:
            raise JaxprovError(f"bootstrap_ci: sample {i} is empty; cannot resample it")
    rng = np.random.Generator(np.random.PCG64(int(seed)))
    replicates = np.empty(n_boot, dtype=np.float64)
    for b in range(n_boot):
        resampled = [a[rng.integers(0, a.shape[0], size=a.shape[0])] for a in arrays]
        replicates[b] = float(statistic(*resampled))
    alpha = (1.0 - level) / 2.0
    low, high = np.quantile(replicates, [alpha, 1.0 - alpha])
    return float(low), float(high)


def summarize(
    scores_pos: Sequence[float] | np.ndarray,
    scores_neg: Sequence[float] | np.ndarray,
    seed: int,
    *,
    n_boot: int = 1000,
    level: float = 0.95,
) -> dict[str, Any]:
    """AUC and TPR at 1 % FPR with bootstrap intervals, as a JSON-safe dict.

    Both intervals use the same seed, hence the same resampled replicates.

    Args:
        scores_pos: similarity of each positive pair.
        scores_neg: similarity of each negative pair.
        seed: seed for ``bootstrap_ci``.
        n_boot: bootstrap replicates.
        level: interval coverage.

    Returns:
        ``{"auc", "auc_ci", "tpr_at_1pct_fpr", "tpr_ci", "n_pos", "n_neg",
        "allowed_false_positives", "n_boot", "level", "seed"}``: floats, [low, high] lists and ints.
        ``allowed_false_positives`` is floor(0.01 * n_neg), 0 below 100 negatives.

    Raises:
        JaxprovError: as ``roc_auc`` and ``bootstrap_ci``.
    """
    pos = _scores(scores_pos, "scores_pos")
    neg = _scores(scores_neg, "scores_neg")
    auc_ci = bootstrap_ci(roc_auc, pos, neg, seed=seed, n_boot=n_boot, level=level)
    tpr_ci = bootstrap_ci(tpr_at_fpr, pos, neg, seed=seed, n_boot=n_boot, level=level)
    return {
        "auc": roc_auc(pos, neg),
        "auc_ci": list(auc_ci),
        "tpr_at_1pct_fpr": tpr_at_fpr(pos, neg, 0.01),
        "tpr_ci": list(tpr_ci),
        "n_pos": int(pos.size),
        "n_neg": int(neg.size),
        "allowed_false_positives": allowed_false_positives(int(neg.size), 0.01),
        "n_boot": int(n_boot),
        "level": float(level),
        "seed": int(seed),
    }
