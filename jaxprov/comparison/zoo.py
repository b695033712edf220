"""Zoos: models fingerprinted on shared probes, and their labelled similarity matrices.

Signatures are unit vectors on probes shared by the zoo, so a zoo's similarity matrix is one
matmul under the method's declared similarity kind (`jaxprov.methods.similarity`); pairs the
method cannot compare (`Method.comparable`) are NaN, and a dead model is 0 to every model.
"""

from __future__ import annotations

import dataclasses
import math
import warnings
from typing import Any, NamedTuple, Sequence

import jax
import numpy as np

from jaxprov import engine as engine_lib
from jaxprov import methods as methods_lib
from jaxprov.engine import EngineConfig, Signatures
from jaxprov.errors import ArgumentError, JaxprovError
from jaxprov.methods import similarity as similarity_lib
from jaxprov.methods.base import Method
from jaxprov.model import Model
from jaxprov.probes import Probes, seeds as make_seeds


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
            # The example is traced inside eval_shape, never computed (eagerly its random draw and
            # normalisation compiled op by op: 1.5 s per model on a loaded CPU).
            self._sizes = np.asarray([jax.eval_shape(lambda p, m=m: m.apply(p, m.input_spec.example(1)),
                                                     m.params).shape[-1] for m in self.models])
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
