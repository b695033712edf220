"""Calibration against a null of independent models: empirical p-values and the per-method tests.

A verdict is never a magic constant: the similarity of a suspect to its claimed parent is ranked
against the parent's similarities to models known to be independent of it, giving the empirical
p-value p = (1 + #{null >= s}) / (1 + n_null). The per-method tests combine methods by Bonferroni.
"""

from __future__ import annotations

import math
from typing import Iterable, Sequence

import numpy as np

from jaxprov.comparison.results import MethodResult, why_unusable

DERIVED_ALPHA = 0.05  # p <= alpha: derived
INDEPENDENT_P = 0.25  # p >= this: the suspect sits inside the null's bulk: independent


def empirical_p(score: float, null: Iterable[float]) -> float:
    null = np.asarray(list(null), np.float64)
    return float((1 + np.sum(null >= score)) / (1 + null.size))


def method_verdict(score: float, null: Sequence[float], dead: bool, alpha: float) -> tuple[float | None, str]:
    """(p-value, verdict) of one method's similarity against its null."""
    if dead:
        return None, "inconclusive"
    if not null:
        return None, "inconclusive"
    p = empirical_p(score, null)
    if p <= alpha:
        return p, "derived"
    # A suspect more similar than every independent model is never called independent, however
    # large p is because the null is small (one null model: p = 1/2).
    if p >= INDEPENDENT_P and max(null) >= score:
        return p, "independent"
    return p, "inconclusive"


def tests_answer(results: Sequence[MethodResult], n_null: int, alpha: float) -> tuple[str, str]:
    """(verdict, reason) of the per-method tests: derived when the smallest p-value survives
    Bonferroni (p * methods <= alpha), independent when every method's similarity lies in the null."""
    usable = [r for r in results if r.p_value is not None]
    if not any(r.usable for r in results):
        return "inconclusive", f"no evidence: no method could compare the pair ({why_unusable(results)})"
    if n_null == 0:
        return "inconclusive", "no null distribution: pass null=[models independent of the parent] to calibrate"
    if not usable:
        return "inconclusive", "no method produced a usable score (dead or incomparable signatures)"
    # Bonferroni over methods: the suspect is derived if any method's p survives alpha / m.
    best = min(usable, key=lambda r: r.p_value)
    floor = 1 / (1 + n_null)
    if best.p_value * len(usable) <= alpha:
        return "derived", f"{best.method} p={best.p_value:.3g} <= alpha/{len(usable)} against {n_null} null models"
    if all(r.verdict == "independent" for r in usable):
        return "independent", f"every method's similarity lies within the null of {n_null} independent models"
    if floor * len(usable) > alpha:
        need = math.ceil(len(usable) / alpha) - 1
        return "inconclusive", (f"with {n_null} null models the smallest p-value is {floor:.3g}; "
                                f"at least {need} are needed to reach alpha={alpha}")
    return "inconclusive", f"best p={best.p_value:.3g} ({best.method}) is between alpha and {INDEPENDENT_P}"
