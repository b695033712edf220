"""The registry of string-addressable model families (re-exported by `jaxprov.models`).

An arch key names a variant and, in brackets, the config fields that differ from it:
"resnet18", "resnet18[num_classes=10]", "bert[hidden_size=384,num_layers=6]". Equal keys mean
identical param trees. Each family file registers a `Family` here; `create` and `init` build from keys.
"""

from __future__ import annotations

import dataclasses
import functools
import re
from typing import Any, Callable, Mapping

import jax

from jaxprov.errors import ArchitectureError
from jaxprov.model import InputSpec, Model


@dataclasses.dataclass(frozen=True)
class Family:
    """One architecture family: its variants (name -> frozen config) and how to build them."""

    name: str
    variants: Mapping[str, Any]
    build: Callable[[Any], Any]  # config -> flax linen module
    input_spec: Callable[[Any], InputSpec]
    output_kind: str = "logits"


_FAMILIES: dict[str, Family] = {}
_VARIANTS: dict[str, Family] = {}
_KEY = re.compile(r"^([A-Za-z0-9_.\-]+)(?:\[(.*)\])?$")


def register(family: Family) -> Family:
    _FAMILIES[family.name] = family
    for variant in family.variants:
        if variant in _VARIANTS and _VARIANTS[variant] is not family:
            raise ValueError(f"variant {variant!r} registered twice")
        _VARIANTS[variant] = family
    return family


def list_archs() -> list[str]:
    return sorted(_VARIANTS)


def _parse_value(text: str, default: Any) -> Any:
    if isinstance(default, bool):
        if text.lower() not in ("true", "false"):
            raise ValueError(text)
        return text.lower() == "true"
    if isinstance(default, int):
        return int(text)
    if isinstance(default, float):
        return float(text)
    if isinstance(default, tuple):
        return tuple(type(default[0])(v) if default else int(v) for v in text.split(":") if v)
    return text


def _format_value(value: Any) -> str:
    if isinstance(value, tuple):
        return ":".join(str(v) for v in value)
    if isinstance(value, bool):
        return str(value).lower()
    return str(value)


def resolve(arch: str, **overrides) -> tuple[Family, str, Any]:
    """arch key (+ keyword overrides) -> (family, variant name, config)."""
    match = _KEY.match(arch.strip())
    if not match or match.group(1) not in _VARIANTS:
        raise ArchitectureError(
            f"unknown architecture {arch!r}; known: {', '.join(list_archs())}")
    variant = match.group(1)
    family = _VARIANTS[variant]
    base = family.variants[variant]
    fields = {f.name: getattr(base, f.name) for f in dataclasses.fields(base)}
    changes = {}
    for item in filter(None, (match.group(2) or "").split(",")):
        name, _, text = item.partition("=")
        name = name.strip()
        if name not in fields:
            raise ArchitectureError(
                f"{arch!r}: {variant} has no setting {name!r}; settings: {', '.join(fields)}")
        try:
            changes[name] = _parse_value(text.strip(), fields[name])
        except ValueError:
            raise ArchitectureError(f"{arch!r}: bad value {text!r} for {name}") from None
    for name, value in overrides.items():
        if name not in fields:
            raise ArchitectureError(f"{variant} has no setting {name!r}; settings: {', '.join(fields)}")
        changes[name] = value
    return family, variant, dataclasses.replace(base, **changes)


def arch_key(variant: str, config: Any) -> str:
    """Canonical key: the variant name plus every field that differs from the variant's defaults."""
    base = _VARIANTS[variant].variants[variant]
    diffs = [f"{f.name}={_format_value(getattr(config, f.name))}" for f in dataclasses.fields(config)
             if getattr(config, f.name) != getattr(base, f.name)]
    return f"{variant}[{','.join(diffs)}]" if diffs else variant


def canonical(arch: str, **overrides) -> str:
    """The canonical key of `arch` with `overrides` applied (converters' detect functions use it)."""
    _, variant, config = resolve(arch, **overrides)
    return arch_key(variant, config)


def create(arch: str, **overrides) -> tuple[Any, str, InputSpec, str]:
    """-> (flax module, canonical arch key, input spec, output kind)."""
    family, variant, config = resolve(arch, **overrides)
    return family.build(config), arch_key(variant, config), family.input_spec(config), family.output_kind


def abstract_params(arch: str, **overrides):
    """The param tree of `arch` as ShapeDtypeStructs, without allocating or computing anything."""
    return _abstract_params(canonical(arch, **overrides))


@functools.lru_cache(maxsize=256)
def _abstract_params(key: str):
    # Tracing init of a deep net costs ~1 s; detection and conversion both need the tree.
    module, _, spec, _ = create(key)
    return jax.eval_shape(lambda: module.init(jax.random.PRNGKey(0), spec.example(1)))


def init(arch: str, key: jax.Array, name: str | None = None, **overrides) -> Model:
    """A freshly initialised model of `arch` (for building zoos and tests)."""
    module, canonical, spec, kind = create(arch, **overrides)
    variables = module.init(key, spec.example(1))
    params = jax.tree_util.tree_map(lambda a: a, dict(variables))
    return Model(name=name or canonical, arch=canonical, module=module, params=params,
                 input_spec=spec, output_kind=kind)


def build(arch: str, params, name: str | None = None, meta: Mapping | None = None) -> Model:
    """A Model from an arch key and an existing params tree (from a converter or the store)."""
    module, canonical, spec, kind = create(arch)
    return Model(name=name or canonical, arch=canonical, module=module, params=params,
                 input_spec=spec, output_kind=kind, meta=dict(meta or {}))
