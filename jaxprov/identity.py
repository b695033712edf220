"""A model's content identity: the sha256 of its converted params (paths, dtypes, shapes, bytes).

The store records it as `params_sha256`, the signature cache keys signatures by it, and probes
built on a reference model record it (`jaxprov.methods.base.reference_meta`). It sits with the
models, below every layer that needs it.
"""

from __future__ import annotations

import hashlib
import weakref

import jax
import numpy as np

from jaxprov.model import Model


def params_digest(params) -> str:
    """sha256 over a params tree's paths, dtypes, shapes and bytes: the model's content identity."""
    digest = hashlib.sha256()
    for path, leaf in sorted(jax.tree_util.tree_leaves_with_path(params), key=lambda kv: jax.tree_util.keystr(kv[0])):
        array = np.ascontiguousarray(np.asarray(leaf))
        digest.update(f"{jax.tree_util.keystr(path)}|{array.dtype}|{array.shape}".encode())
        digest.update(array.tobytes())
    return digest.hexdigest()


# Hashing a big params tree costs ~1 s/GB; a Model is immutable, so once per object is enough.
_PARAMS_SHA256: "weakref.WeakKeyDictionary[Model, str]" = weakref.WeakKeyDictionary()


def model_digest(model: Model) -> str:
    """`params_digest(model.params)`, computed once per Model object."""
    digest = _PARAMS_SHA256.get(model)
    if digest is None:
        digest = _PARAMS_SHA256[model] = params_digest(model.params)
    return digest


def remember(model: Model, digest: str) -> None:
    """Record a digest already checked against the params (a stored model just loaded)."""
    _PARAMS_SHA256[model] = digest
