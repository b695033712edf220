"""Evaluating the reuse benchmark: per reuse type AUC, TPR at 1 % FPR and ModelDiff's correctness with
bootstrap intervals, and the default verdict fitted on the val group's pairs."""

from __future__ import annotations

import math
from typing import Mapping, Sequence

import numpy as np

from jaxprov import metrics
from jaxprov import verdict as verdict_lib
from jaxprov.bench.presets import REUSE_TYPES, Preset
from jaxprov.bench.scoring import Pair
from jaxprov.version import __version__


def pair_scores(pairs: Sequence[Pair], method: str) -> np.ndarray:
    """Each pair's score under `method` ("default": the verdict's probability); a pair the method
    cannot compare scores -inf: not comparable = no evidence of derivation."""
    if method == "default":
        return np.asarray([p.default for p in pairs], np.float64)
    values = np.asarray([p.scores[method] for p in pairs], np.float64)
    return np.where(np.isnan(values), -np.inf, values)


def _correctness_flags(pairs: Sequence[Pair], scores: np.ndarray) -> dict[tuple[str, str], bool]:
    """ModelDiff's criterion per positive pair: its reference outranks every unrelated reference of
    the group for that suspect (ties are misses). `scores` is aligned with `pairs`."""
    by_suspect: dict[str, list[tuple[Pair, float]]] = {}
    for p, score in zip(pairs, scores):
        by_suspect.setdefault(p.suspect, []).append((p, float(score)))
    ranked = {}  # (reference, suspect) -> (its score, the suspect's scores from unrelated references)
    for suspect, scored in by_suspect.items():
        unrelated = [score for p, score in scored if not p.label]
        ranked.update({(p.reference, suspect): (score, unrelated) for p, score in scored if p.label})
    return dict(zip(ranked, (bool(f) for f in metrics.correctness_flags(ranked)))) if ranked else {}


def evaluate(pairs: Sequence[Pair], method: str, n_boot: int, seed: int = 0) -> dict[str, dict]:
    """Per reuse type (and "overall"): AUC, TPR at 1 % FPR and correctness, with bootstrap intervals."""
    scores = pair_scores(pairs, method)
    finite = scores[np.isfinite(scores)]
    floor = (finite.min() - 1.0) if finite.size else -1.0
    scores = np.where(np.isfinite(scores), scores, floor)  # metrics need finite numbers
    flags = _correctness_flags(pairs, scores)
    labels = np.asarray([p.label for p in pairs])
    negatives = scores[labels == 0]
    out: dict[str, dict] = {}
    types = sorted({p.reuse for p in pairs if p.label}, key=lambda t: list(REUSE_TYPES).index(t))
    for reuse in [*types, "overall"]:
        chosen = [i for i, p in enumerate(pairs) if p.label and (reuse == "overall" or p.reuse == reuse)]
        positives = scores[chosen]
        if not len(positives) or not len(negatives):
            continue
        summary = metrics.summarize(positives, negatives, seed=seed, n_boot=n_boot)
        f = np.asarray([flags[(pairs[i].reference, pairs[i].suspect)] for i in chosen], np.float64)
        n_scored = len(chosen) if method == "default" else int(
            sum(not math.isnan(pairs[i].scores[method]) for i in chosen))
        out[reuse] = {
            "auc": summary["auc"], "auc_ci": summary["auc_ci"],
            "tpr_at_1pct_fpr": summary["tpr_at_1pct_fpr"], "tpr_ci": summary["tpr_ci"],
            "correctness": float(f.mean()), "correctness_ci": list(metrics.bootstrap_ci(np.mean, f, seed=seed,
                                                                                       n_boot=n_boot)),
            "n_pairs": int(len(positives) + len(negatives)), "n_pos": int(len(positives)),
            "n_neg": int(len(negatives)), "n_pos_comparable": n_scored,
            "allowed_false_positives": summary["allowed_false_positives"]}
    return out


def fit_default(pairs: Sequence[Pair], preset: Preset, floors: Mapping[str, float] | None = None,
                calibrated: Sequence[str] = (), provenance: Mapping | None = None) -> verdict_lib.Verdict:
    """The logistic combination, fitted on the val group's pairs only (their evidence was computed
    with `floors` and, for the `calibrated` methods, from their own P(derived); the verdict records
    both, and `provenance` entries beside its own)."""
    val = [p for p in pairs if p.group == "val"]
    x = np.asarray([[p.evidence[m] for m in preset.methods] for p in val])
    y = np.asarray([p.label for p in val])
    record = {"fitted_on": f"jaxprov bench reuse --preset {preset.name}: val group",
                  "n_val_pairs": len(val), "n_val_positive": int(y.sum()),
                  "references_val": sorted({p.reference for p in val}), "seeds": preset.seeds,
                  "jaxprov": __version__, **dict(provenance or {})}
    return verdict_lib.fit(x, y, preset.methods, preset.method_config, provenance=record, floors=floors,
                           calibrated=calibrated)
