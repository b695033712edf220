"""The thin comparison layer: zoos, similarity matrices, neighbours, calibrated verdicts.

Signatures are unit vectors on probes shared by the zoo, so a zoo's similarity matrix is one
matmul (`method.pairwise`). A verdict is never a magic constant: the similarity of a suspect to its
claimed parent is ranked against a null distribution — the parent's similarities to models known
to be independent of it — giving an empirical p-value p = (1 + #{null >= s}) / (1 + n_null).
"""

from __future__ import annotations

import dataclasses
import json
import math
import warnings
from pathlib import Path
from typing import Any, Iterable, NamedTuple, Sequence

import jax
import numpy as np

from jaxprov import methods as methods_lib
from jaxprov import engine as engine_lib
from jaxprov.engine import EngineConfig, Signatures
from jaxprov.errors import ArgumentError, JaxprovError
from jaxprov.methods import similarity as similarity_lib
from jaxprov.methods.base import Method
from jaxprov.model import Model
from jaxprov.probes import Probes, seeds as make_seeds

DERIVED_ALPHA = 0.05  # p <= alpha: derived
INDEPENDENT_P = 0.25  # p >= this: the suspect sits inside the null's bulk: independent


@dataclasses.dataclass(frozen=True)
class Similarity:
    """A labelled similarity matrix for one method. NaN marks pairs the method cannot compare
    (weight-space cosine across architectures); `dead` marks models whose signature is degenerate."""

    method: str
    labels: tuple[str, ...]
    values: np.ndarray
    dead: tuple[bool, ...]

    def __getitem__(self, pair: tuple[str, str]) -> float:
        i, j = self.labels.index(pair[0]), self.labels.index(pair[1])
        return float(self.values[i, j])

    def to_json(self) -> dict:
        return {"method": self.method, "labels": list(self.labels), "dead": list(self.dead),
                "values": [[None if math.isnan(v) else float(v) for v in row] for row in self.values]}


class ReferenceRows(NamedTuple):
    """`Zoo.reference_rows`: the matrix, each reference's probe digest, and why a row is missing."""

    similarity: Similarity
    probes: dict[str, str]
    failed: dict[str, str]


def renamed_cache_argument(cache, store, where: str):
    """`cache=`, or the deprecated `store=` it replaced (a DeprecationWarning; both is an error)."""
    if store is None:
        return cache
    if cache is not None:
        raise ArgumentError(f"{where}: pass the signature cache as cache= only (store= is its old name)")
    warnings.warn(f"{where}: store= is now called cache= (the signature cache); store= will be removed in the "
                  "next release", DeprecationWarning, stacklevel=3)
    return store


class Zoo:
    """A set of models fingerprinted on shared probes.

    Args:
      models: any mix of archs with one input spec (modality and shape).
      seeds: where probe seeds come from: "mnist", "digits", "synthetic", a folder / .npy / .npz path,
        or ready Probes to use as seeds.
      reference: the model that methods needing one (DDV's twins, IPGuard's boundary points) are
        generated on; default the first model. It must be fixed for signatures to be comparable.
      key: the PRNG key every probe derives from.
      engine: batching / precision / sharding (EngineConfig).
      cache: an optional signature cache (`jaxprov.cache.SignatureCache` or its directory): cached
        signatures are reused, new ones saved. `store=` is its deprecated old name.
    """

    def __init__(self, models: Sequence[Model], *, seeds: str | Probes = "mnist", reference: Model | None = None,
                 key: jax.Array | None = None, engine: EngineConfig = EngineConfig(), cache=None,
                 method_config: dict[str, dict] | None = None, store=None):
        from jaxprov import arguments

        models = arguments.models(models, "Zoo: models")
        if not models:
            raise JaxprovError("a zoo needs at least one model")
        names = [m.name for m in models]
        if len(set(names)) != len(names):
            dupes = sorted({n for n in names if names.count(n) > 1})
            raise JaxprovError(f"model names must be unique in a zoo; repeated: {', '.join(dupes[:5])}")
        check_compatible(models)
        self.models = list(models)
        self.seed_source = seeds
        self.reference = reference or models[0]
        self.key = jax.random.PRNGKey(0) if key is None else key
        self.engine = engine
        self.cache = renamed_cache_argument(cache, store, "Zoo")
        self.method_config = dict(method_config or {})
        self._probes: dict[Any, Probes] = {}
        self._signatures: dict[Any, Signatures] = {}
        self._sizes: np.ndarray | None = None
        self._dead: np.ndarray | None = None

    @property
    def names(self) -> list[str]:
        return [m.name for m in self.models]

    def method(self, m: str | Method) -> Method:
        if isinstance(m, Method):
            return m
        return methods_lib.get(m, **self.method_config.get(m, {}))

    def probes(self, method: str | Method) -> Probes:
        method = self.method(method)
        if method not in self._probes:
            seed_key, probe_key = jax.random.split(jax.random.fold_in(self.key, 0))
            if method.n_seeds == 0:  # weight space: no seeds needed (any seed source will do)
                seeds = Probes(inputs=np.zeros((0,), np.float32), meta={})
            elif isinstance(self.seed_source, Probes):
                seeds = self.seed_source
            else:
                seeds = make_seeds(str(self.seed_source), self.reference.input_spec, method.n_seeds, seed_key)
            self._probes[method] = engine_lib.probes_for(method, seeds, probe_key, self.reference, self.engine)
        return self._probes[method]

    def unavailable(self, method: str | Method) -> str | None:
        """Why `method`'s probes cannot be built from this zoo's seeds (`mistakes` on unlabelled
        seeds, say), or None when they can. The default verdict skips such a method."""
        try:
            self.probes(method)
        except JaxprovError as err:
            return str(err)
        return None

    def signatures(self, method: str | Method, progress=None) -> Signatures:
        method = self.method(method)
        if method not in self._signatures:
            probes = self.probes(method)
            if self.cache is not None:
                from jaxprov.cache import cached_signatures

                sigs = cached_signatures(method, self.models, probes, self.cache, self.engine, progress=progress)
            else:
                sigs = engine_lib.signatures(method, self.models, probes, self.engine, progress=progress)
            self._signatures[method] = sigs
        return self._signatures[method]

    def dead(self) -> np.ndarray:
        """[N] bool: models whose outputs do not vary over a few seeds, or are not finite
        (`methods.liveness`). No method has evidence about such a model. Unknown (all False) when
        the seeds cannot feed the models (image seeds for a text model)."""
        if self._dead is None:
            from jaxprov.methods.liveness import Liveness

            self._dead = np.zeros(len(self.models), bool)
            try:
                probes = self.probes(Liveness())
            except JaxprovError:
                return self._dead
            if self.reference.input_spec.modality == "text" and not isinstance(probes.inputs["x"], dict):
                return self._dead  # token ids are a dict; any other seeds cannot feed a text model
            self._dead = np.asarray(self.signatures(Liveness()).dead, bool)
        return self._dead

    def similarity(self, method: str | Method) -> Similarity:
        """The labelled N x N similarity matrix (one matmul for unit-vector signatures). A dead
        model (its signature, or `dead`) has similarity 0 to every model, itself included."""
        method = self.method(method)
        sigs = self.signatures(method)
        values = np.asarray(similarity_lib.pairwise(method.similarity, sigs.matrix, sigs.matrix), np.float64)
        values = _mask_incomparable(values, self._groups(method, sigs))
        dead = np.asarray(sigs.dead, bool) | self.dead()
        return Similarity(method.name, tuple(sigs.names), _zero_dead(values, dead, dead),
                          tuple(bool(d) for d in dead))

    def per_reference(self, method: str | Method) -> bool | None:
        """Whether `method`'s probes are built on the reference model (`Probes.reference`: DDV's
        twins, IPGuard's boundary points, the reference's mistakes), so that a full matrix must be
        read row by row (`reference_rows`); None when this zoo's reference cannot build them."""
        if self.unavailable(method) is not None:
            return None
        return self.probes(method).reference is not None

    def _for_reference(self, ref: Model) -> "Zoo":
        if ref is self.reference:
            return self
        zoo = Zoo(self.models, seeds=self.seed_source, reference=ref, key=self.key, engine=self.engine,
                  cache=self.cache, method_config=self.method_config)
        zoo._dead = self.dead()  # one liveness check for every reference's zoo
        return zoo

    def reference_rows(self, method: str | Method, progress=None) -> "ReferenceRows":
        """The N x N matrix of a method whose probes are built on a reference (DDV, IPGuard,
        mistakes), read as it is meant to be: row i is every model on probes built on model i (one
        probe set per model, N x N signatures), as the reuse benchmark scores its pairs.
        `similarity` instead reads every row on the one reference's probes, which is right only for
        that reference's own row.

        A reference whose probes cannot be built (too few mistakes, say) gets a NaN row: its pairs
        are incomparable, and `failed` says why. A method whose probes depend on no model (the
        first reference that builds them says so) gives `similarity`.
        """
        method = self.method(method)
        n = len(self.models)
        values = np.full((n, n), np.nan)
        dead = np.zeros(n, bool)
        digests: dict[str, str] = {}
        failed: dict[str, str] = {}
        for i, ref in enumerate(self.models):
            zoo = self._for_reference(ref)
            reason = zoo.unavailable(method)
            if reason is not None:
                failed[ref.name] = reason
                continue
            if zoo.probes(method).reference is None:  # the same probes whatever the reference
                return ReferenceRows(zoo.similarity(method), {}, {})
            step = None if progress is None else (lambda done, i=i: progress(i * n + done))
            zoo.signatures(method, progress=step)
            sim = zoo.similarity(method)
            values[i] = sim.values[i]
            dead |= np.asarray(sim.dead, bool)
            digests[ref.name] = zoo.probes(method).digest
        dead |= self.dead()
        values = _zero_dead(values, dead, dead)
        return ReferenceRows(Similarity(method.name, tuple(self.names), values, tuple(bool(d) for d in dead)),
                             digests, failed)

    def _output_sizes(self) -> np.ndarray:
        """Each model's output width (last axis), from shapes only: no computation."""
        if self._sizes is None:
            self._sizes = np.asarray([jax.eval_shape(m.apply, m.params, m.input_spec.example(1)).shape[-1]
                                      for m in self.models])
        return self._sizes

    def _groups(self, method: Method, sigs: Signatures) -> np.ndarray | None:
        """[N] ints, equal for models the method can compare (`Method.comparable`); None: all pairs."""
        if method.comparable == "arch":
            keys = list(sigs.archs)
        elif method.comparable == "output_size":
            keys = [int(v) for v in self._output_sizes()]
        else:
            return None
        codes = {k: i for i, k in enumerate(dict.fromkeys(keys))}
        return np.asarray([codes[k] for k in keys], np.int32)

    def neighbours(self, method: str | Method, k: int = 5, block: int = 4096) -> dict[str, list[tuple[str, float]]]:
        """Each model's k most similar others (`engine.top_k_neighbours`, block by block: memory
        O(block x N), never N x N). Pairs the method cannot compare are left out, so a model may
        have fewer than k; a dead model has similarity 0 to every model."""
        method = self.method(method)
        sigs = self.signatures(method)
        n, k = len(sigs), min(k, len(sigs) - 1)
        if k <= 0:
            return {name: [] for name in sigs.names}
        dead = np.asarray(sigs.dead, bool) | self.dead()
        idx, val = engine_lib.top_k_neighbours(sigs.matrix, k, block, similarity=method.similarity,
                                               groups=self._groups(method, sigs), dead=dead)
        return {sigs.names[i]: [(sigs.names[j], float(v)) for j, v in zip(idx[i], val[i]) if np.isfinite(v)]
                for i in range(n)}


def _mask_incomparable(values: np.ndarray, groups: np.ndarray | None) -> np.ndarray:
    """NaN where the method cannot compare a pair (different groups: archs for weight space, output
    widths for label agreement); the engine zero-pads such signatures, so their products mean nothing."""
    if groups is None:
        return values
    return np.where(groups[:, None] == groups[None, :], values, np.nan)


def _zero_dead(values: np.ndarray, dead_rows: np.ndarray, dead_cols: np.ndarray) -> np.ndarray:
    """Similarity 0 wherever a dead model takes part: it has no evidence to give, to anyone."""
    values = np.where(dead_rows[:, None] | dead_cols[None, :], 0.0, values)
    return values


def check_compatible(models: Sequence[Model]) -> None:
    """All models must take the same kind and shape of input: one set of probes serves them all."""
    specs = {}
    for m in models:
        spec = m.input_spec
        specs.setdefault((spec.modality, spec.shape if spec.modality != "text" else None), []).append(m.name)
    if len(specs) > 1:
        parts = [f"{mod} {shape or ''} ({', '.join(names[:3])}{', ...' if len(names) > 3 else ''})".replace("  ", " ")
                 for (mod, shape), names in specs.items()]
        raise JaxprovError("models take different inputs and cannot share probes: " + "; ".join(parts)
                           + ". Compare models of one input kind and size (a resize policy is not implemented yet)")


# ---------------------------------------------------------------------------------------------
# Pairwise comparison with a calibrated verdict.

DEFAULT_VERDICT = "default verdict"  # P(derived) of the fitted combination (jaxprov.verdict)
METHOD_TESTS = "per-method tests"  # empirical p-values per method, Bonferroni over methods


@dataclasses.dataclass(frozen=True)
class MethodResult:
    method: str
    similarity: float
    null: tuple[float, ...]
    p_value: float | None
    verdict: str
    dead: bool = False

    @property
    def usable(self) -> bool:
        """The method compared the pair: a finite similarity of two live models."""
        return not self.dead and not math.isnan(self.similarity)

    def to_json(self) -> dict:
        nulls = np.asarray(self.null) if self.null else None
        return {"method": self.method, "similarity": None if math.isnan(self.similarity) else self.similarity,
                "p_value": self.p_value, "verdict": self.verdict, "dead": self.dead, "null_n": len(self.null),
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
            lines.append(f"  {r.method:16s} similarity {r.similarity:+.4f}   p {p:>6s}   {r.verdict}"
                         + ("   (dead model)" if r.dead else ""))
        for a in self.answers:
            p = "" if a.probability is None else f"P(derived) {a.probability:.4f}, "
            lines.append(f"{a.name}: {a.verdict} — {p}{a.reason}")
        lines.append(f"verdict ({self.answer.name}): {self.verdict}")
        return "\n".join(lines)


def empirical_p(score: float, null: Iterable[float]) -> float:
    null = np.asarray(list(null), np.float64)
    return float((1 + np.sum(null >= score)) / (1 + null.size))


def _method_verdict(score: float, null: Sequence[float], dead: bool, alpha: float) -> tuple[float | None, str]:
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


def _method_list(methods, combo) -> tuple[list, bool]:
    """(methods to compute, whether the default verdict answers). None: the default verdict's
    methods with non-zero weight; "all": every method; a name or a Method: that one; a list: those."""
    if methods is None:
        return (list(combo.active_methods), True) if combo else (list(methods_lib.DEFAULT_METHODS), False)
    if isinstance(methods, str) and methods == "all":
        return methods_lib.names(), combo is not None
    if isinstance(methods, (str, Method)):
        return [methods], False
    if isinstance(methods, (list, tuple)) and methods and all(isinstance(m, (str, Method)) for m in methods):
        if "all" in methods:
            return methods_lib.names(), combo is not None
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
    combo = verdict if verdict is not None else (
        verdict_lib.load_default() if methods is None or _names_all(methods) else None)
    methods, by_default = _method_list(methods, combo)
    seeds = seeds if seeds is not None else (combo.seeds if combo is not None else verdict_lib.default_seeds())
    names = [a.name, b.name] + [m.name for m in null]
    if len(set(names)) != len(names):
        models = [dataclasses.replace(m, name=f"{i}:{m.name}") for i, m in enumerate([a, b, *null])]
    else:
        models = [a, b, *null]
    zoo = Zoo(models, seeds=seeds, reference=models[0], key=key, engine=engine,
              cache=renamed_cache_argument(cache, store, "compare"),
              method_config=dict(combo.method_config) if combo else None)
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
            results.append(MethodResult(method.name, math.nan, (), None, f"skipped: {reason}"))
            continue
        sim = zoo.similarity(method)
        score = float(sim.values[0, 1])
        null_scores = [float(v) for v in sim.values[0, 2:] if not math.isnan(v)]
        dead = bool(sim.dead[0] or sim.dead[1])
        if combo is not None and not dead:
            evidence[method.name] = combo.evidence(method.name, score, sim.values[0, cols])
        if math.isnan(score):
            results.append(MethodResult(method.name, score, tuple(null_scores), None, "not comparable", dead))
            continue
        p, verdict_m = _method_verdict(score, null_scores, dead, alpha)
        results.append(MethodResult(method.name, score, tuple(null_scores), p, verdict_m, dead))
    tests = Answer(METHOD_TESTS, *_overall(results, len(null), alpha))
    source = "probes" if isinstance(seeds, Probes) else str(seeds)
    if not by_default:
        return Comparison(a.name, b.name, tuple(results), (tests,), source)
    default = _default_answer(combo, results, evidence, len(null), len(cols))
    return Comparison(a.name, b.name, tuple(results), (default, tests), source)


def _names_all(methods) -> bool:
    return (isinstance(methods, str) and methods == "all") or (
        isinstance(methods, (list, tuple)) and "all" in methods)


def _default_answer(combo, results: Sequence[MethodResult], evidence: dict[str, float], n_null: int,
                    n_cols: int) -> Answer:
    """The default verdict's P(derived), or "inconclusive" and why when it has nothing to go on."""
    from jaxprov import verdict as verdict_lib

    active = [r for r in results if r.method in combo.active_methods]
    if not any(r.usable for r in active):
        return Answer(DEFAULT_VERDICT, "inconclusive", "no evidence: no method of the default verdict could "
                      f"compare the pair ({_why_unusable(active)})")
    if n_null < verdict_lib.MIN_NULL:
        return Answer(DEFAULT_VERDICT, "inconclusive", f"the default verdict needs at least {verdict_lib.MIN_NULL} "
                      f"null models (got {n_null}): pass null=[models independent of the parent]")
    prob = combo.probability(evidence)
    label = "derived" if prob >= combo.threshold else "independent"
    return Answer(DEFAULT_VERDICT, label, f"from {', '.join(combo.active_methods)} against {n_cols} null "
                  f"models (threshold {combo.threshold:g})", prob)


def _why_unusable(results: Sequence[MethodResult]) -> str:
    """Each reason once, with the methods it stopped: "weights, mistakes: a dead model ..."."""
    reasons: dict[str, list[str]] = {}
    for r in results:
        why = "a dead model (constant or non-finite outputs)" if r.dead else r.verdict
        reasons.setdefault(why, []).append(r.method)
    return "; ".join(f"{', '.join(names)}: {why}" for why, names in reasons.items())


def _overall(results: Sequence[MethodResult], n_null: int, alpha: float) -> tuple[str, str]:
    usable = [r for r in results if r.p_value is not None]
    if not any(r.usable for r in results):
        return "inconclusive", f"no evidence: no method could compare the pair ({_why_unusable(results)})"
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


def dumps(obj: Any) -> str:
    return json.dumps(obj.to_json() if hasattr(obj, "to_json") else obj, indent=2)
