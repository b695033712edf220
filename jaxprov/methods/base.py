"""The contract every signature method implements: a frozen config and two pure functions.

A method turns ONE model into ONE signature vector on probes shared by the whole zoo:

    probes    = method.make_probes(seeds, key, reference)                              (once per zoo)
    rows      = concat over probe chunks of  method.rows(fns, params, probes_chunk)    [n, ...]
    signature = method.finalize(rows)                                                  [D]

`fns` is the model's `jaxprov.model.ModelFns`: `apply` (outputs), `features` (intermediates),
and the text hooks `embed` / `apply_embedded` (token embeddings, for gradient methods). Every
method gets all of them; under jit the ones it does not call are dead code. `rows` is a pure
per-probe computation (outputs, distances, gradients), so the engine may split the probes into
chunks of any size along their leading axis and concatenate; `finalize` sees all rows of one model
(normalisation, Gram matrices, ...). A weight-space method builds probes with no items and reads
only `params` in `rows`, which the engine then calls once. The engine vmaps, chunks, compiles and
shards; a method never loops over models, never jits, never chooses a batch size.

What the comparison layer needs to know is declared, never inspected:
- `n_seeds`: how many seeds the caller draws (0: none, the method reads the params alone);
- `comparable`: which pairs the signatures can compare: "any", "arch" (equal arch keys: weight
  space) or "output_size" (equal output widths: labels index one label space);
- `similarity`: the name of the similarity of two signatures (`jaxprov.methods.similarity`):
  "cosine", a dot product of unit vectors (a zoo compares in one matmul), or a custom kind.
Whether probes were built on a reference model is recorded by the probes themselves
(`Probes.reference`, written by `reference_meta`), so a zoo computes such a method once per
reference where every row must be read on its own reference's probes. A builder that computed
the reference's `rows` on the final probes anyway hands them over as `Probes.reference_rows`
(`mistakes`: the reference's labels at its mistakes), and the engine skips that model's forward pass.

A model whose signature cannot be normalised (dead: constant outputs, zero gradients) gets an
all-zero signature; the engine flags it, and comparisons report it instead of producing NaN.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
from typing import Any, Callable, ClassVar

import jax
import jax.numpy as jnp
import numpy as np

from jaxprov.errors import JaxprovError
from jaxprov.identity import model_digest
from jaxprov.methods import similarity as similarity_lib
from jaxprov.model import ModelFns

Apply = Callable[[Any, Any], jax.Array]  # a model's apply(params, x), as probe builders call it
DEAD_NORM = 1e-12
COMPARABLE = ("any", "arch", "output_size")


def safe_normalize(v: jax.Array, eps: float = DEAD_NORM) -> jax.Array:
    """v / ||v||, or zeros when ||v|| is (numerically) zero: a dead model never yields NaN."""
    norm = jnp.linalg.norm(v)
    return jnp.where(norm > eps, v / jnp.maximum(norm, eps), jnp.zeros_like(v))


def unit_rows(v: jax.Array, eps: float = DEAD_NORM) -> jax.Array:
    """Unit vectors along the last axis; a zero vector stays zero (no NaN)."""
    norm = jnp.linalg.norm(v, axis=-1, keepdims=True)
    return jnp.where(norm > eps, v / jnp.maximum(norm, eps), jnp.zeros_like(v))


def upper_triangle(matrix: jax.Array, k: int) -> jax.Array:
    """The entries of a square matrix on and above its k-th diagonal, row by row."""
    i, j = np.triu_indices(matrix.shape[0], k)
    return matrix[i, j]


def continuous_inputs(seeds, method: str) -> jax.Array:
    """Seed inputs as a float array; token ids (text) cannot be perturbed or interpolated."""
    if isinstance(seeds.inputs, dict):
        raise JaxprovError(f"{method} needs continuous inputs (images or vectors); token ids are not one")
    if isinstance(seeds.inputs, np.ndarray):  # host seeds stay on the host: no second copy of them all
        return np.asarray(seeds.inputs, np.float32)
    return jnp.asarray(seeds.inputs, jnp.float32)


def reference_meta(reference) -> dict:
    """What probes generated on a reference model record of it: name, arch and params digest.

    Stored under the probes' meta["reference"], it is also how `Probes.reference` knows that the
    probes depend on that model."""
    return {"name": reference.name, "arch": reference.arch, "params_digest": model_digest(reference)}


@functools.lru_cache(maxsize=64)
def _jitted(fn: Callable, static, fns: ModelFns):
    return jax.jit(lambda params, inputs, shared: fn(static, fns, params, inputs, shared))


def unbatched(fn: Callable, static, model, inputs, shared=(), until: Callable | None = None):
    """`fn(static, model.fns, params, inputs, shared)` on all inputs at once, jitted: the default
    `batched` of `make_probes` when called directly. Zoos pass the engine's `map_inputs` instead,
    which runs the same function in chunks planned from device memory and honours EngineConfig
    (and may stop early when `until(outputs so far)` says the rest is not needed; here all inputs
    are computed, which gives the builder the same answer)."""
    return _jitted(fn, static, model.fns)(model.params, inputs, shared)


def require_reference(reference, method: str, what: str):
    """The reference model a probe builder needs, or a one-line error saying so."""
    from jaxprov.model import Model

    if not isinstance(reference, Model):
        raise JaxprovError(f"{method} needs a reference model {what}; pass reference=<a Model of the zoo>")
    return reference


@dataclasses.dataclass(frozen=True)
class Method:
    """Base class: subclasses are frozen dataclasses whose fields are the method's config.

    Subclasses set `name` and implement `rows`, and usually `finalize` and `make_probes`; they
    declare `n_seeds` as a config field when they read seeds, and `comparable` / `similarity`
    when they differ from the defaults (see the module docstring).
    """

    name: ClassVar[str] = "method"
    n_seeds: ClassVar[int] = 0  # a config field (with its default) in every method that reads seeds
    comparable: ClassVar[str] = "any"  # "any" | "arch" | "output_size"
    similarity: ClassVar[str] = "cosine"  # a kind of jaxprov.methods.similarity

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        if cls.comparable not in COMPARABLE:
            raise TypeError(f"{cls.__name__}.comparable must be one of {COMPARABLE}, not {cls.comparable!r}")
        if cls.similarity not in similarity_lib.KINDS:
            raise TypeError(f"{cls.__name__}.similarity must be one of {sorted(similarity_lib.KINDS)}, "
                            f"not {cls.similarity!r}")

    def make_probes(self, seeds, key: jax.Array, reference=None, batched: Callable = unbatched):
        """Build this method's probes from seed inputs (a `jaxprov.probes.Probes`), deterministically.

        `reference` is the zoo's reference model; a builder that does not need one ignores it, and
        one that does records it with `reference_meta`. Work on the reference goes through
        `batched(fn, static, reference, inputs, shared, until=None)` (see `unbatched`): `fn` is a
        module-level function computing each input item on its own, so the engine may chunk it.
        Rows of the reference that the builder already has on the returned probes (exactly what
        `rows` would give, float32) may go in `Probes(reference_rows=...)`: the engine uses them
        instead of running the reference again."""
        from jaxprov.probes import Probes

        return Probes(inputs={"x": seeds.inputs}, meta={**seeds.meta, "method": self.name})

    def rows(self, fns: ModelFns, params, probes) -> jax.Array:
        raise NotImplementedError

    def finalize(self, rows: jax.Array) -> jax.Array:
        return safe_normalize(rows.reshape(-1).astype(jnp.float32))

    def pairwise(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        """Similarity of every signature in `a` [Na, D] with every one in `b` [Nb, D], by `similarity`."""
        return similarity_lib.pairwise(self.similarity, a, b)

    def config(self) -> dict:
        return {"method": self.name, **dataclasses.asdict(self)}

    def config_digest(self) -> str:
        return hashlib.sha256(json.dumps(self.config(), sort_keys=True, default=str).encode()).hexdigest()
