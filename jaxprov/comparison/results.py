"""What a comparison returns: per-method results and the named answers, as objects and JSON.

Two answers to "is b derived from a?" have names: the default verdict (`DEFAULT_VERDICT`: the
fitted P(derived), `jaxprov.verdict`) and the per-method tests (`METHOD_TESTS`: empirical p-values,
Bonferroni over methods, `jaxprov.comparison.calibration`). `Comparison.answer` is the one that
decides, never a silent switch.
"""

from __future__ import annotations

import dataclasses
import json
import math
from typing import Any, Sequence

import numpy as np

DEFAULT_VERDICT = "default verdict"  # P(derived) of the fitted combination (jaxprov.verdict)
METHOD_TESTS = "per-method tests"  # empirical p-values per method, Bonferroni over methods


@dataclasses.dataclass(frozen=True)
class MethodResult:
    method: str
    similarity: float
    null: tuple[float, ...]
    p_value: float | None
    verdict: str  # "derived" | "independent" | "inconclusive" | "not comparable" | "skipped"
    dead: bool = False
    skipped: str | None = None  # why the method was not run (the default verdict goes on without it)

    @property
    def usable(self) -> bool:
        """The method compared the pair: a finite similarity of two live models."""
        return self.skipped is None and not self.dead and not math.isnan(self.similarity)

    def to_json(self) -> dict:
        nulls = np.asarray(self.null) if self.null else None
        return {"method": self.method, "similarity": None if math.isnan(self.similarity) else self.similarity,
                "p_value": self.p_value, "verdict": self.verdict, "skipped": self.skipped, "dead": self.dead,
                "null_n": len(self.null),
                "null_mean": None if nulls is None else float(nulls.mean()),
                "null_max": None if nulls is None else float(nulls.max())}


@dataclasses.dataclass(frozen=True)
class Answer:
    """One named answer to "is b derived from a?": the default verdict or the per-method tests."""

    name: str  # DEFAULT_VERDICT | METHOD_TESTS
    verdict: str  # "derived" | "independent" | "inconclusive"
    reason: str
    probability: float | None = None  # the default verdict's P(derived); None when it could not apply

    def to_json(self) -> dict:
        return {"name": self.name, "verdict": self.verdict, "reason": self.reason, "probability": self.probability}


@dataclasses.dataclass(frozen=True)
class Comparison:
    """Per-method results and the answers. `answer` is the one that decides — the default verdict
    when no methods were named (or "all"), the per-method tests when they were — and `verdict`,
    `reason` and `probability` are its; `answers` holds every answer computed, each named."""

    a: str
    b: str
    results: tuple[MethodResult, ...]
    answers: tuple[Answer, ...]
    seeds: str = ""  # the seed source the probes came from

    @property
    def answer(self) -> Answer:
        return self.answers[0]

    @property
    def verdict(self) -> str:
        return self.answer.verdict

    @property
    def reason(self) -> str:
        return self.answer.reason

    @property
    def probability(self) -> float | None:
        return self.answer.probability

    @property
    def has_evidence(self) -> bool:
        """At least one method compared the pair (else every answer is "inconclusive")."""
        return any(r.usable for r in self.results)

    def __getitem__(self, method: str) -> MethodResult:
        return next(r for r in self.results if r.method == method)

    def to_json(self) -> dict:
        named = {a.name: a.to_json() for a in self.answers}
        return {"a": self.a, "b": self.b, "seeds": self.seeds, "answer": self.answer.name, "verdict": self.verdict,
                "reason": self.reason, "probability": self.probability, "has_evidence": self.has_evidence,
                "default_verdict": named.get(DEFAULT_VERDICT), "per_method_tests": named.get(METHOD_TESTS),
                "methods": {r.method: r.to_json() for r in self.results}}

    def summary(self) -> str:
        lines = [f"{self.b}  vs  {self.a}"]
        for r in self.results:
            p = "n/a" if r.p_value is None else f"{r.p_value:.3f}"
            if r.skipped is not None:
                lines.append(f"  {r.method:16s} skipped: {r.skipped}")
                continue
            lines.append(f"  {r.method:16s} similarity {r.similarity:+.4f}   p {p:>6s}   {r.verdict}"
                         + ("   (dead model)" if r.dead else ""))
        for a in self.answers:
            p = "" if a.probability is None else f"P(derived) {a.probability:.4f}, "
            lines.append(f"{a.name}: {a.verdict} — {p}{a.reason}")
        lines.append(f"verdict ({self.answer.name}): {self.verdict}")
        return "\n".join(lines)


def why_unusable(results: Sequence[MethodResult]) -> str:
    """Each reason once, with the methods it stopped: "weights, mistakes: a dead model ..."."""
    reasons: dict[str, list[str]] = {}
    for r in results:
        why = ("a dead model (constant or non-finite outputs)" if r.dead else
               f"skipped: {r.skipped}" if r.skipped is not None else r.verdict)
        reasons.setdefault(why, []).append(r.method)
    return "; ".join(f"{', '.join(names)}: {why}" for why, names in reasons.items())


def dumps(obj: Any) -> str:
    return json.dumps(obj.to_json() if hasattr(obj, "to_json") else obj, indent=2)
