"""Signature methods, addressable by name. Each is a frozen dataclass (its config) implementing
`jaxprov.methods.base.Method`; `get("ddv", iters=20)` builds one with overrides."""

from __future__ import annotations

import importlib
import warnings
from typing import Mapping

from jaxprov.errors import JaxprovError
from jaxprov.methods.base import Method, safe_normalize

# name -> (module, class). Modules import lazily so a missing optional method never breaks the rest.
_REGISTRY = {
    "ddv": ("jaxprov.methods.ddv", "DDV"),
    "gradient_field": ("jaxprov.methods.gradfield", "GradientField"),
    "sac": ("jaxprov.methods.sac", "SAC"),
    "ipguard": ("jaxprov.methods.ipguard", "IPGuard"),
    "weights": ("jaxprov.methods.weights", "WeightCosine"),
    "cka": ("jaxprov.methods.cka", "CKA"),
    "mistakes": ("jaxprov.methods.mistakes", "Mistakes"),
    "dna": ("jaxprov.methods.dna", "DNA"),
}
DEFAULT_METHODS = ("ddv", "gradient_field")
# Config fields renamed, old name -> new name, accepted with a DeprecationWarning for one release.
RENAMED_FIELDS = {"gradient_field": {"n_anchors": "n_seeds"}}  # renamed after jaxprov 0.1.0


def names() -> list[str]:
    return sorted(_REGISTRY)


def canonical_config(name: str, config: Mapping) -> dict:
    """`config` with renamed fields under their current names (a DeprecationWarning names each)."""
    config = dict(config)
    for old, new in RENAMED_FIELDS.get(name, {}).items():
        if old in config:
            if new in config:
                raise JaxprovError(f"{name}: both {old!r} and its new name {new!r} are set; keep {new!r}")
            warnings.warn(f"{name}: the setting {old!r} is now called {new!r}; the old name will be removed "
                          "in the next release", DeprecationWarning, stacklevel=3)
            config[new] = config.pop(old)
    return config


def get(name: str, **config) -> Method:
    """The method `name` with config overrides (renamed fields accepted, see `canonical_config`)."""
    if name not in _REGISTRY:
        raise JaxprovError(f"unknown method {name!r}; known: {', '.join(names())}")
    module, cls = _REGISTRY[name]
    return getattr(importlib.import_module(module), cls)(**canonical_config(name, config))


__all__ = ["DEFAULT_METHODS", "Method", "canonical_config", "get", "names", "safe_normalize"]
