"""The contract every signature method implements.

A method turns ONE model into ONE signature vector on probes shared by the whole zoo:

    rows     = concat over probe chunks of  method.rows(apply, params, probes_chunk)   [n, ...]
    signature = method.finalize(rows)                                                  [D]

`rows` is a pure per-probe computation (outputs, distances, gradients), so the engine may split the
probes into chunks of any size along their leading axis and concatenate; `finalize` sees all rows
of one model (normalisation, Gram matrices, ...). Both are vmapped over stacked models by the
engine; a method never loops over models, never jits, never chooses a batch size.

Signatures are unit vectors unless a method says otherwise, so similarity is a dot product and a
whole zoo compares in one matmul (`pairwise`). A model whose signature cannot be normalised (dead:
constant outputs, zero gradients) gets an all-zero signature; the engine flags it, and comparisons
report it instead of producing NaN.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

Apply = Callable[[Any, Any], jax.Array]
DEAD_NORM = 1e-12


def safe_normalize(v: jax.Array, eps: float = DEAD_NORM) -> jax.Array:
    """v / ||v||, or zeros when ||v|| is (numerically) zero: a dead model never yields NaN."""
    norm = jnp.linalg.norm(v)
    return jnp.where(norm > eps, v / jnp.maximum(norm, eps), jnp.zeros_like(v))


def unit_rows(v: jax.Array, eps: float = DEAD_NORM) -> jax.Array:
    """Unit vectors along the last axis; a zero vector stays zero (no NaN)."""
    norm = jnp.linalg.norm(v, axis=-1, keepdims=True)
    return jnp.where(norm > eps, v / jnp.maximum(norm, eps), jnp.zeros_like(v))


def continuous_inputs(seeds, method: str) -> jax.Array:
    """Seed inputs as a float array; token ids (text) cannot be perturbed or interpolated."""
    from jaxprov.errors import JaxprovError

    if isinstance(seeds.inputs, dict):
        raise JaxprovError(f"{method} needs continuous inputs (images or vectors); token ids are not one")
    return jnp.asarray(seeds.inputs, jnp.float32)


def reference_meta(reference) -> dict:
    """What probes generated on a reference model record of it: name, arch and params digest."""
    from jaxprov.store import model_digest

    return {"name": reference.name, "arch": reference.arch, "params_digest": model_digest(reference)}


@dataclasses.dataclass(frozen=True)
class Method:
    """Base class: subclasses are frozen dataclasses whose fields are the method's config.

    Subclasses set `name` (a class attribute) and implement `rows`, and usually `finalize` and
    `make_probes`. `same_arch_only` methods (weight-space cosine) compare models of equal arch only.
    """

    name = "method"
    same_arch_only = False
    needs_reference = False  # make_probes runs on a reference model (ModelDiff's PGD twins, boundary points)
    uses_probes = True  # False: the signature depends on the params alone (`signature_from_params`)
    uses_features = False  # True: `rows` receives the model's `features(params, x) -> dict` instead of `apply`
    # Signatures of models with different output sizes have different lengths and cannot be compared
    # (IPGuard's one-hot labels); the comparison layer must mask such pairs.
    same_output_size_only = False

    def make_probes(self, seeds, key: jax.Array, reference=None):
        """Build this method's probes from seed inputs (a `jaxprov.probes.Probes`), deterministically."""
        from jaxprov.probes import Probes

        return Probes(inputs={"x": seeds.inputs}, meta={**seeds.meta, "method": self.name})

    def rows(self, apply: Apply, params, probes) -> jax.Array:
        raise NotImplementedError

    def signature_from_params(self, params) -> jax.Array:
        """The signature of a `uses_probes = False` method: a pure function of one model's params."""
        raise NotImplementedError

    def finalize(self, rows: jax.Array) -> jax.Array:
        return safe_normalize(rows.reshape(-1).astype(jnp.float32))

    def pairwise(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        """Similarity of every signature in `a` [Na, D] with every one in `b` [Nb, D]."""
        return np.asarray(a, np.float32) @ np.asarray(b, np.float32).T

    def config(self) -> dict:
        return {"method": self.name, **dataclasses.asdict(self)}

    def config_digest(self) -> str:
        return hashlib.sha256(json.dumps(self.config(), sort_keys=True, default=str).encode()).hexdigest()
