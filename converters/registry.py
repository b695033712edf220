"""The registry of source families: each family file (torchvision, CIFAR layouts, Hugging Face BERT, ...)
registers a `SourceFamily` here on import; `converters` asks it which family converts an arch."""

from __future__ import annotations

import dataclasses
from typing import Callable, Mapping

from converters.rules import DEFAULT_IGNORE, Rule


@dataclasses.dataclass(frozen=True)
class SourceFamily:
    name: str
    model_families: tuple[str, ...]  # jaxprov.models Family names whose arch keys it converts
    detect: Callable[[Mapping[str, tuple[int, ...]]], str | None]
    rules: Callable[[str], list[Rule]]
    ignore: tuple[str, ...] = DEFAULT_IGNORE


SOURCES: list[SourceFamily] = []


def register_source(source: SourceFamily) -> SourceFamily:
    SOURCES.append(source)
    return source
