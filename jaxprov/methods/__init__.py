"""Signature methods, addressable by name. Each is a frozen dataclass (its config) implementing
`jaxprov.methods.base.Method`; `get("ddv", iters=20)` builds one with overrides."""

from __future__ import annotations

import importlib

from jaxprov.errors import JaxprovError
from jaxprov.methods.base import Method, safe_normalize

# name -> (module, class). Modules import lazily so a missing optional method never breaks the rest.
_REGISTRY = {
    "ddv": ("jaxprov.methods.ddv", "DDV"),
    "gradient_field": ("jaxprov.methods.gradfield", "GradientField"),
    "sac": ("jaxprov.methods.baselines", "SAC"),
    "ipguard": ("jaxprov.methods.baselines", "IPGuard"),
    "weights": ("jaxprov.methods.baselines", "WeightCosine"),
    "cka": ("jaxprov.methods.baselines", "CKA"),
    "mistakes": ("jaxprov.methods.baselines", "Mistakes"),
}
DEFAULT_METHODS = ("ddv", "gradient_field")


def names() -> list[str]:
    return sorted(_REGISTRY)


def get(name: str, **config) -> Method:
    if name not in _REGISTRY:
        raise JaxprovError(f"unknown method {name!r}; known: {', '.join(names())}")
    module, cls = _REGISTRY[name]
    return getattr(importlib.import_module(module), cls)(**config)


__all__ = ["DEFAULT_METHODS", "Method", "get", "names", "safe_normalize"]
