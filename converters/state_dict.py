"""A PyTorch-layout state dict (numpy arrays) -> jaxprov.Model: detect or complete the arch key from
the keys and shapes, check the whole dict against the arch's rule table, convert.

Its own module, below the package `__init__` and the Hugging Face loader that both call it (the
loader once called back into the package that imports it).
"""

from __future__ import annotations

import dataclasses
from typing import Mapping

import numpy as np

from jaxprov import models
from jaxprov.errors import ArchitectureError
from jaxprov.model import Model
from converters.registry import SOURCES as _SOURCES, SourceFamily
from converters.rules import convert, misfit_error, plan

CONVERTER_VERSION = "1"


def _source_for(arch: str) -> SourceFamily:
    family, _, _ = models.resolve(arch)
    for source in _SOURCES:
        if family.name in source.model_families:
            return source
    raise ArchitectureError(f"no converter knows architecture family {family.name!r} (arch {arch!r})")


def detect_arch(shapes: Mapping[str, tuple[int, ...]], source: str = "state dict") -> str:
    """The one arch key whose rule table fits these keys and shapes exactly; else a clear error."""
    guesses = {}
    for family in _SOURCES:
        arch = family.detect(shapes)
        if arch is not None:
            guesses[arch] = family
    fitting = [a for a, fam in guesses.items() if _fits(shapes, fam, a)]
    if len(fitting) == 1:
        return fitting[0]
    if len(fitting) > 1:
        raise ArchitectureError(f"{source}: the weights fit several architectures ({', '.join(sorted(fitting))}); "
                                "name one with arch=... / --arch")
    hint = f" (closest guess {sorted(guesses)[0]} does not fit exactly)" if guesses else ""
    raise ArchitectureError(f"{source}: could not detect the architecture from its {len(shapes)} keys{hint}; "
                            "name it with arch=... / --arch (see `jaxprov archs`)")


def _fits(shapes, family: SourceFamily, arch: str) -> bool:
    return plan(shapes, family.rules(arch), models.abstract_params(arch), family.ignore).ok


def free_fields(arch: str) -> tuple[str, ...]:
    """The fields of `arch` that the checkpoint decides: those its key does not set in brackets and
    that every variant of its family shares (a variant's name fixes depth and widths, never the
    number of classes, the vocabulary or the image size)."""
    family, _, config = models.resolve(arch)
    _, _, inside = arch.strip().partition("[")
    explicit = {item.partition("=")[0].strip() for item in inside.rstrip("]").split(",")}
    variants = list(family.variants.values())
    return tuple(f.name for f in dataclasses.fields(config) if f.name not in explicit
                 and all(getattr(v, f.name) == getattr(variants[0], f.name) for v in variants))


def with_free_fields(arch: str, key: str) -> str | None:
    """`arch` with its free fields taken from arch key `key` (a detected or stored model's);
    None when `key` belongs to another family."""
    family, _, _ = models.resolve(arch)
    key_family, _, key_config = models.resolve(key)
    if key_family is not family:
        return None
    return models.canonical(arch, **{name: getattr(key_config, name) for name in free_fields(arch)})


def names_arch(arch: str, key: str) -> bool:
    """Whether a user's `arch` (e.g. "resnet18") names a model of arch key `key` ("resnet18[num_classes=10]")."""
    if arch.startswith("timm:"):  # a generic model's key: torch:timm.NAME@digest
        return isinstance(key, str) and key.startswith(f"torch:timm.{arch[len('timm:'):]}@")
    models.resolve(arch)  # an unknown `arch` is the user's error: ArchitectureError
    try:
        return isinstance(key, str) and with_free_fields(arch, key) == key
    except ArchitectureError:  # a stored key this version does not know
        return False


def resolve_arch(shapes: Mapping[str, tuple[int, ...]], arch: str | None = None, source: str = "state dict") -> str:
    """The arch key to convert these shapes to: detected when `arch` is None, else `arch` with its
    free fields inferred by the same detection (so `resnet18` on a 10-class checkpoint is
    `resnet18[num_classes=10]`). When nothing fits, `arch` itself: conversion then lists the
    problems and suggests the key that would fit."""
    if arch is None:
        return detect_arch(shapes, source)
    family = _source_for(arch)
    given = models.canonical(arch)
    if _fits(shapes, family, given):
        return given
    detected = family.detect(shapes)
    inferred = with_free_fields(arch, detected) if detected is not None else None
    if inferred is not None and _fits(shapes, family, inferred):
        return inferred
    return given


def _suggestion(shapes) -> str | None:
    try:
        return detect_arch(shapes)
    except ArchitectureError:
        return None


def from_state_dict(state_dict: Mapping[str, np.ndarray], arch: str | None = None, *, name: str = "model",
                    source: str = "state dict", meta: Mapping | None = None, progress=None) -> Model:
    """Convert a PyTorch-layout state dict (numpy arrays) into a Model of `arch` (see `resolve_arch`)."""
    shapes = {k: tuple(np.shape(v)) for k, v in state_dict.items()}
    canonical = resolve_arch(shapes, arch, source)
    family = _source_for(canonical)
    abstract = models.abstract_params(canonical)
    checked = plan(shapes, family.rules(canonical), abstract, family.ignore)
    if not checked.ok:
        raise misfit_error(source, canonical, checked.problems, _suggestion(shapes))
    params = convert(state_dict, family.rules(canonical), abstract,
                     source=source, arch=canonical, ignore=family.ignore, progress=progress)
    dtypes = sorted({str(np.asarray(v).dtype) for v in state_dict.values()})
    meta = {**dict(meta or {}), "converter": {"version": CONVERTER_VERSION, "source_family": family.name,
                                              "source_dtypes": dtypes}}
    return models.build(canonical, params, name=name, meta=meta)
