"""`compare(a, b)`: is `b` derived from `a`? One pair, its null, every named answer.

(The module is not called `compare`: `jaxprov.compare` is the function, which would shadow it.)
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import Sequence

import jax

from jaxprov import methods as methods_lib
from jaxprov.comparison.calibration import DERIVED_ALPHA, method_verdict, tests_answer
from jaxprov.comparison.results import DEFAULT_VERDICT, METHOD_TESTS, Answer, Comparison, MethodResult, why_unusable
from jaxprov.comparison.zoo import Zoo, renamed_cache_argument
from jaxprov.engine import EngineConfig
from jaxprov.errors import ArgumentError
from jaxprov.methods.base import Method
from jaxprov.model import Model
from jaxprov.probes import Probes


def _method_list(methods, default_verdict) -> tuple[list, bool]:
    """(methods to compute, whether the default verdict answers). None: the default verdict's
    methods with non-zero weight; "all": every method; a name or a Method: that one; a list: those."""
    if methods is None:
        if default_verdict is None:
            return list(methods_lib.DEFAULT_METHODS), False
        return list(default_verdict.active_methods), True
    if isinstance(methods, str) and methods == "all":
        return methods_lib.names(), default_verdict is not None
    if isinstance(methods, (str, Method)):
        return [methods], False
    if isinstance(methods, (list, tuple)) and methods and all(isinstance(m, (str, Method)) for m in methods):
        if "all" in methods:
            return methods_lib.names(), default_verdict is not None
        return list(methods), False
    raise ArgumentError(f"methods must be None, 'all', a method name or a list of names (known: "
                        f"{', '.join(methods_lib.names())}), not {type(methods).__name__} {methods!r:.60}")


def _check_model(value, what: str) -> None:
    if not isinstance(value, Model):
        hint = "; load it first: jaxprov.load(path)" if isinstance(value, (str, Path)) else ""
        raise ArgumentError(f"{what} must be a jaxprov Model, not {type(value).__name__} {value!r:.60}{hint}")


def compare(a: Model, b: Model, methods: str | Method | Sequence[str | Method] | None = None, *,
            null: Sequence[Model] = (), seeds: str | Probes | None = None, key: jax.Array | None = None,
            alpha: float = DERIVED_ALPHA, engine: EngineConfig = EngineConfig(), cache=None,
            verdict=None, store=None) -> Comparison:
    """Is `b` derived from `a`? Per-method similarity and named answers: the default verdict
    and/or the per-method tests.

    Args:
      a: the claimed parent (also the reference that DDV twins / boundary points are generated on).
      b: the suspect.
      methods: None (default): the default verdict (`jaxprov.verdict.load_default()`, fitted by
        `jaxprov bench reuse`) answers, and only its methods with non-zero weight are computed, with
        its settings. "all": every method is computed (the default verdict's with its settings) and
        the default verdict still answers. A method name, a Method or a list of them: those methods,
        and the per-method tests answer: the Bonferroni-corrected minimum of their empirical
        p-values.
      null: models known to be independent of `a` (same input kind). Their similarities to `a` form
        the null distribution. With none, no verdict is guessed: it says "inconclusive" and why.
      seeds: where probe seeds come from (see `Zoo`); default: the seeds the default verdict was
        fitted with (`jaxprov.verdict.default_seeds()`: "mnist:test").
      alpha: a method says "derived" when its empirical p-value is <= alpha. Note the smallest
        attainable p is 1 / (1 + len(null)): alpha = 0.05 needs at least 19 null models.
      verdict: a `jaxprov.verdict.Verdict` to use instead of the shipped default.

    Returns:
      A Comparison; `has_evidence` is False when no method could compare the pair (dead models,
      seeds that cannot feed them, incomparable archs): every answer is then "inconclusive".

    Raises:
      ArgumentError: a, b or a null model is not a Model, or `methods` is of the wrong type.
    """
    from jaxprov import verdict as verdict_lib

    _check_model(a, "a (the claimed parent)")
    _check_model(b, "b (the suspect)")
    if isinstance(null, Model) or not all(isinstance(m, Model) for m in null):
        raise ArgumentError("null must be a list of jaxprov Models (models independent of a)")
    default_verdict = verdict if verdict is not None else (
        verdict_lib.load_default() if methods is None or _names_all(methods) else None)
    methods, by_default = _method_list(methods, default_verdict)
    if seeds is None:
        seeds = default_verdict.seeds if default_verdict is not None else verdict_lib.default_seeds()
    names = [a.name, b.name] + [m.name for m in null]
    if len(set(names)) != len(names):
        models = [dataclasses.replace(m, name=f"{i}:{m.name}") for i, m in enumerate([a, b, *null])]
    else:
        models = [a, b, *null]
    zoo = Zoo(models, seeds=seeds, reference=models[0], key=key, engine=engine,
              cache=renamed_cache_argument(cache, store, "compare"),
              method_config=dict(default_verdict.method_config) if default_verdict else None)
    results, evidence = [], {}
    # The null that calibrates the default verdict is the suspect's own kind when there are enough
    # of those: "is b closer to a than independent models like b are?" (verdict.null_columns).
    cols = [2 + i for i in verdict_lib.null_columns(b.arch, [m.arch for m in null])] if null else []
    for m in methods:
        method = zoo.method(m)
        # The default verdict goes on without a method these seeds cannot feed: its evidence is 0,
        # as for any pair a method cannot compare. A method the caller named must run.
        reason = zoo.unavailable(method) if by_default else None
        if reason is not None:
            results.append(MethodResult(method.name, math.nan, (), None, "skipped", skipped=reason))
            continue
        sim = zoo.similarity(method)
        score = float(sim.values[0, 1])
        null_scores = [float(v) for v in sim.values[0, 2:] if not math.isnan(v)]
        dead = bool(sim.dead[0] or sim.dead[1])
        if default_verdict is not None and not dead:
            evidence[method.name] = default_verdict.evidence(method.name, score, sim.values[0, cols])
        if math.isnan(score):
            results.append(MethodResult(method.name, score, tuple(null_scores), None, "not comparable", dead))
            continue
        p, verdict_m = method_verdict(score, null_scores, dead, alpha)
        results.append(MethodResult(method.name, score, tuple(null_scores), p, verdict_m, dead))
    tests = Answer(METHOD_TESTS, *tests_answer(results, len(null), alpha))
    source = "probes" if isinstance(seeds, Probes) else str(seeds)
    if not by_default:
        return Comparison(a.name, b.name, tuple(results), (tests,), source)
    default = _default_answer(default_verdict, results, evidence, len(null), len(cols))
    return Comparison(a.name, b.name, tuple(results), (default, tests), source)


def _names_all(methods) -> bool:
    return (isinstance(methods, str) and methods == "all") or (
        isinstance(methods, (list, tuple)) and "all" in methods)


def _default_answer(default_verdict, results: Sequence[MethodResult], evidence: dict[str, float], n_null: int,
                    n_cols: int) -> Answer:
    """The default verdict's P(derived), or "inconclusive" and why when it has nothing to go on."""
    from jaxprov import verdict as verdict_lib

    active = [r for r in results if r.method in default_verdict.active_methods]
    if not any(r.usable for r in active):
        return Answer(DEFAULT_VERDICT, "inconclusive", "no evidence: no method of the default verdict could "
                      f"compare the pair ({why_unusable(active)})")
    if n_null < verdict_lib.MIN_NULL:
        return Answer(DEFAULT_VERDICT, "inconclusive", f"the default verdict needs at least {verdict_lib.MIN_NULL} "
                      f"null models (got {n_null}): pass null=[models independent of the parent]")
    prob = default_verdict.probability(evidence)
    label = "derived" if prob >= default_verdict.threshold else "independent"
    return Answer(DEFAULT_VERDICT, label, f"from {', '.join(default_verdict.active_methods)} against {n_cols} null "
                  f"models (threshold {default_verdict.threshold:g})", prob)
