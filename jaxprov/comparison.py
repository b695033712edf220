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
from typing import Any, Iterable, NamedTuple, Sequence

import jax
import numpy as np

from jaxprov import methods as methods_lib
from jaxprov.engine import EngineConfig, Signatures, signatures as engine_signatures
from jaxprov.errors import JaxprovError
from jaxprov.methods.base import Method
from jaxprov.model import Model
from jaxprov.probes import Probes, seeds as make_seeds

DERIVED_ALPHA = 0.05  # p <= alpha: derived
INDEPENDENT_P = 0.25  # p >= this: the suspect sits inside the null's bulk: independent


def _n_seeds(method: Method, default: int) -> int:
    for field in ("n_seeds", "n_anchors"):
        if hasattr(method, field):
            return int(getattr(method, field))
    return default


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
      store: an optional jaxprov.cache.SignatureStore: stored signatures are reused, new ones saved.
    """

    def __init__(self, models: Sequence[Model], *, seeds: str | Probes = "mnist", reference: Model | None = None,
                 key: jax.Array | None = None, engine: EngineConfig = EngineConfig(), store=None,
                 method_config: dict[str, dict] | None = None):
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
        self.store = store
        self.method_config = dict(method_config or {})
        self._probes: dict[Any, Probes] = {}
        self._signatures: dict[Any, Signatures] = {}
        self._sizes: np.ndarray | None = None

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
            if isinstance(self.seed_source, Probes):
                seeds = self.seed_source
            else:
                seeds = make_seeds(str(self.seed_source), self.reference.input_spec,
                                   _n_seeds(method, 100), seed_key)
            reference = self.reference if method.needs_reference else None
            self._probes[method] = method.make_probes(seeds, probe_key, reference)
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
            if self.store is not None:
                from jaxprov.cache import cached_signatures

                sigs = cached_signatures(method, self.models, probes, self.store, self.engine, progress=progress)
            else:
                sigs = engine_signatures(method, self.models, probes, self.engine, progress=progress)
            self._signatures[method] = sigs
        return self._signatures[method]

    def similarity(self, method: str | Method) -> Similarity:
        """The labelled N x N similarity matrix (one matmul for unit-vector signatures)."""
        method = self.method(method)
        sigs = self.signatures(method)
        values = np.asarray(method.pairwise(sigs.matrix, sigs.matrix), np.float64)
        values = _mask_incomparable(method, sigs, values, self._output_sizes())
        return Similarity(method.name, tuple(sigs.names), values, tuple(bool(d) for d in sigs.dead))

    def reference_rows(self, method: str | Method, progress=None) -> "ReferenceRows":
        """The N x N matrix of a method whose probes are built on a reference (DDV, IPGuard,
        mistakes), read as it is meant to be: row i is every model on probes built on model i (one
        probe set per model, N x N signatures), as the reuse benchmark scores its pairs.
        `similarity` instead reads every row on the one reference's probes, which is right only for
        that reference's own row.

        A reference whose probes cannot be built (too few mistakes, say) gets a NaN row: its pairs
        are incomparable, and `failed` says why. A method that needs no reference gives `similarity`.
        """
        method = self.method(method)
        if not method.needs_reference:
            return ReferenceRows(self.similarity(method), {}, {})
        n = len(self.models)
        values = np.full((n, n), np.nan)
        dead = np.zeros(n, bool)
        digests: dict[str, str] = {}
        failed: dict[str, str] = {}
        for i, ref in enumerate(self.models):
            zoo = self if ref is self.reference else Zoo(
                self.models, seeds=self.seed_source, reference=ref, key=self.key, engine=self.engine,
                store=self.store, method_config=self.method_config)
            reason = zoo.unavailable(method)
            if reason is not None:
                failed[ref.name] = reason
                continue
            step = None if progress is None else (lambda done, i=i: progress(i * n + done))
            zoo.signatures(method, progress=step)
            sim = zoo.similarity(method)
            values[i] = sim.values[i]
            dead |= np.asarray(sim.dead, bool)
            digests[ref.name] = zoo.probes(method).digest
        return ReferenceRows(Similarity(method.name, tuple(self.names), values, tuple(bool(d) for d in dead)),
                             digests, failed)

    def _output_sizes(self) -> np.ndarray:
        """Each model's output width (last axis), from shapes only: no computation."""
        if self._sizes is None:
            self._sizes = np.asarray([jax.eval_shape(m.apply, m.params, m.input_spec.example(1)).shape[-1]
                                      for m in self.models])
        return self._sizes

    def neighbours(self, method: str | Method, k: int = 5, block: int = 4096) -> dict[str, list[tuple[str, float]]]:
        """Each model's k most similar others, computed block by block: memory O(block x N), never N x N.

        Dot-product methods run on the accelerator (`engine.top_k_neighbours`); methods with their own
        `pairwise` (SAC) or pairs to mask (weights, IPGuard) run the same blocks in numpy.
        """
        method = self.method(method)
        sigs = self.signatures(method)
        n, k = len(sigs), min(k, len(sigs) - 1)
        if k <= 0:
            return {name: [] for name in sigs.names}
        plain = (type(method).pairwise is Method.pairwise and not method.same_arch_only
                 and not method.same_output_size_only)
        if plain:
            from jaxprov.engine import top_k_neighbours

            idx, val = top_k_neighbours(sigs.matrix, k, block)
            return {sigs.names[i]: [(sigs.names[j], float(v)) for j, v in zip(idx[i], val[i])] for i in range(n)}
        out: dict[str, list[tuple[str, float]]] = {}
        for start in range(0, n, block):
            rows = np.asarray(method.pairwise(sigs.matrix[start:start + block], sigs.matrix), np.float64)
            rows = _mask_incomparable(method, sigs, rows, self._output_sizes(), row_offset=start)
            rows[np.arange(rows.shape[0]), np.arange(start, start + rows.shape[0])] = -np.inf  # not yourself
            rows = np.where(np.isnan(rows), -np.inf, rows)
            top = np.argpartition(-rows, k - 1, axis=1)[:, :k]
            for i, cand in enumerate(top):
                order = cand[np.argsort(-rows[i, cand])]
                out[sigs.names[start + i]] = [(sigs.names[j], float(rows[i, j])) for j in order
                                              if np.isfinite(rows[i, j])]
        return out


def _mask_incomparable(method: Method, sigs: Signatures, values: np.ndarray, out_sizes: np.ndarray,
                       row_offset: int = 0) -> np.ndarray:
    """NaN where the method cannot compare a pair: different archs (weight space), different output
    widths (label agreement); the engine zero-pads such signatures, so their dot products mean nothing."""
    rows = np.arange(row_offset, row_offset + values.shape[0])
    archs = np.asarray(sigs.archs)
    if method.same_arch_only:
        values = np.where(archs[rows][:, None] == archs[None, :], values, np.nan)
    if method.same_output_size_only:
        values = np.where(out_sizes[rows][:, None] == out_sizes[None, :], values, np.nan)
    # Dead signatures are all zeros: their dot products are 0, never NaN; keep them, flagged in `dead`.
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


@dataclasses.dataclass(frozen=True)
class MethodResult:
    method: str
    similarity: float
    null: tuple[float, ...]
    p_value: float | None
    verdict: str
    dead: bool = False

    def to_json(self) -> dict:
        nulls = np.asarray(self.null) if self.null else None
        return {"method": self.method, "similarity": self.similarity, "p_value": self.p_value,
                "verdict": self.verdict, "dead": self.dead, "null_n": len(self.null),
                "null_mean": None if nulls is None else float(nulls.mean()),
                "null_max": None if nulls is None else float(nulls.max())}


@dataclasses.dataclass(frozen=True)
class Comparison:
    a: str
    b: str
    results: tuple[MethodResult, ...]
    verdict: str
    reason: str
    probability: float | None = None  # the default verdict's P(derived); None when it could not apply

    def __getitem__(self, method: str) -> MethodResult:
        return next(r for r in self.results if r.method == method)

    def to_json(self) -> dict:
        return {"a": self.a, "b": self.b, "verdict": self.verdict, "reason": self.reason,
                "probability": self.probability, "methods": {r.method: r.to_json() for r in self.results}}

    def summary(self) -> str:
        lines = [f"{self.b}  vs  {self.a}"]
        for r in self.results:
            p = "n/a" if r.p_value is None else f"{r.p_value:.3f}"
            lines.append(f"  {r.method:16s} similarity {r.similarity:+.4f}   p {p:>6s}   {r.verdict}"
                         + ("   (dead signature)" if r.dead else ""))
        if self.probability is not None:
            lines.append(f"  {'default':16s} P(derived) {self.probability:.4f}")
        lines.append(f"verdict: {self.verdict} — {self.reason}")
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


def compare(a: Model, b: Model, methods: Sequence[str | Method] | None = None, *, null: Sequence[Model] = (),
            seeds: str | Probes = "mnist", key: jax.Array | None = None, alpha: float = DERIVED_ALPHA,
            engine: EngineConfig = EngineConfig(), store=None, verdict=None) -> Comparison:
    """Is `b` derived from `a`? Per-method similarity, and the default verdict calibrated against `null`.

    Args:
      a: the claimed parent (also the reference that DDV twins / boundary points are generated on).
      b: the suspect.
      methods: method names or instances. Default: the methods of the default verdict
        (`jaxprov.verdict.load_default()`, fitted by `jaxprov bench reuse`), with its settings; the
        verdict is then their calibrated combination. With explicit methods, the verdict is the
        Bonferroni-corrected minimum of the per-method empirical p-values.
      null: models known to be independent of `a` (same input kind). Their similarities to `a` form
        the null distribution. With none, no verdict is guessed: it says "inconclusive" and why.
      alpha: a method says "derived" when its empirical p-value is <= alpha. Note the smallest
        attainable p is 1 / (1 + len(null)): alpha = 0.05 needs at least 19 null models.
      verdict: a `jaxprov.verdict.Verdict` to use instead of the shipped default (methods=None only).
    """
    from jaxprov import verdict as verdict_lib

    combo = None
    if methods is None:
        combo = verdict or verdict_lib.load_default()
    methods = list(combo.methods if combo else (methods or methods_lib.DEFAULT_METHODS))
    names = [a.name, b.name] + [m.name for m in null]
    if len(set(names)) != len(names):
        models = [dataclasses.replace(m, name=f"{i}:{m.name}") for i, m in enumerate([a, b, *null])]
    else:
        models = [a, b, *null]
    zoo = Zoo(models, seeds=seeds, reference=models[0], key=key, engine=engine, store=store,
              method_config=dict(combo.method_config) if combo else None)
    results, evidence = [], {}
    # The null that calibrates the default verdict is the suspect's own kind when there are enough
    # of those: "is b closer to a than independent models like b are?" (verdict.null_columns).
    cols = [2 + i for i in verdict_lib.null_columns(b.arch, [m.arch for m in null])] if null else []
    for m in methods:
        method = zoo.method(m)
        # The default verdict goes on without a method these seeds cannot feed: its evidence is 0,
        # as for any pair a method cannot compare. A method the caller named must run.
        reason = zoo.unavailable(method) if combo is not None else None
        if reason is not None:
            evidence[method.name] = 0.0
            results.append(MethodResult(method.name, math.nan, (), None, f"skipped: {reason}"))
            continue
        sim = zoo.similarity(method)
        score = float(sim.values[0, 1])
        null_scores = [float(v) for v in sim.values[0, 2:] if not math.isnan(v)]
        dead = bool(sim.dead[0] or sim.dead[1])
        evidence[method.name] = combo.evidence(method.name, score, sim.values[0, cols]) if combo and not dead else 0.0
        if math.isnan(score):
            results.append(MethodResult(method.name, score, tuple(null_scores), None, "not comparable", dead))
            continue
        p, verdict_m = _method_verdict(score, null_scores, dead, alpha)
        results.append(MethodResult(method.name, score, tuple(null_scores), p, verdict_m, dead))
    if combo is not None and len(null) >= verdict_lib.MIN_NULL:
        prob = combo.probability(evidence)
        label = "derived" if prob >= combo.threshold else "independent"
        reason = (f"default verdict P(derived)={prob:.3f} from {', '.join(combo.methods)} against "
                  f"{len(cols)} null models (threshold {combo.threshold:g})")
        return Comparison(a.name, b.name, tuple(results), label, reason, prob)
    verdict_s, reason = _overall(results, len(null), alpha)
    if combo is not None and null:
        reason += f"; the default verdict needs at least {verdict_lib.MIN_NULL} null models"
    return Comparison(a.name, b.name, tuple(results), verdict_s, reason)


def _overall(results: Sequence[MethodResult], n_null: int, alpha: float) -> tuple[str, str]:
    if n_null == 0:
        return "inconclusive", "no null distribution: pass null=[models independent of the parent] to calibrate"
    usable = [r for r in results if r.p_value is not None]
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
