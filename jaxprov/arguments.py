"""Checks of the public API's arguments: a wrong type is one ArgumentError line, never a raw
TypeError or AttributeError from deep inside (`jaxprov.load(None)`, `Zoo([path])`, ...)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Sequence

from jaxprov.errors import ArgumentError


def _kind(value: Any) -> str:
    """"None", or the type and a short repr: "int 123"."""
    if value is None:
        return "None"
    text = " ".join(repr(value).split())
    return f"{type(value).__name__} {text if len(text) <= 60 else text[:60] + '...'}"


def path(value: Any, what: str) -> Path:
    """`value` as a Path: a str or os.PathLike naming a file or folder."""
    if isinstance(value, (str, os.PathLike)) and not isinstance(value, bool):
        text = os.fspath(value)
        if isinstance(text, str) and text and "\0" not in text:
            return Path(text)
    raise ArgumentError(f"{what} must be a file or folder path (str or os.PathLike), not {_kind(value)}")


def optional_path(value: Any, what: str) -> Path | None:
    return None if value is None else path(value, what)


def optional_str(value: Any, what: str) -> str | None:
    if value is None or isinstance(value, str):
        return value
    raise ArgumentError(f"{what} must be a string or None, not {_kind(value)}")


def flag(value: Any, what: str) -> bool:
    if isinstance(value, bool):
        return value
    raise ArgumentError(f"{what} must be True or False, not {_kind(value)}")


def models(value: Any, what: str) -> list:
    """A list of Models (any sequence of them; a lone Model, a path or a string is refused)."""
    from jaxprov.model import Model

    if isinstance(value, (str, bytes, os.PathLike, Model)) or not isinstance(value, Sequence):
        raise ArgumentError(f"{what} must be a list of Models (jaxprov.load each path first), not {_kind(value)}")
    wrong = [(i, m) for i, m in enumerate(value) if not isinstance(m, Model)]
    if wrong:
        i, m = wrong[0]
        raise ArgumentError(f"{what}[{i}] is {_kind(m)}, not a Model; load it with jaxprov.load first")
    return list(value)
