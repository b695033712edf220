"""Typed errors. Every user mistake raises a JaxprovError whose str() is one clear line:
what went wrong, which file, what to do. The CLI prints it and exits 2, with no traceback."""

from __future__ import annotations


class JaxprovError(Exception):
    """Base class for errors caused by the user's input, not by a bug in jaxprov."""


class CheckpointError(JaxprovError):
    """A file or directory could not be read as a checkpoint (missing, truncated, corrupt, wrong kind)."""


class UnsafeCheckpointError(CheckpointError):
    """A pickle asked to import or call something outside the tensor whitelist: refused, nothing ran."""


class ArchitectureError(JaxprovError):
    """An architecture name is unknown, or one could not be detected from a checkpoint's keys."""


class ConversionError(JaxprovError):
    """A state dict does not fit the target architecture. `problems` lists every mismatch at once."""

    def __init__(self, message: str, problems: list[str] | None = None):
        self.problems = list(problems or [])
        detail = ""
        if self.problems:
            shown = self.problems[:12]
            more = len(self.problems) - len(shown)
            detail = "; ".join(shown) + (f"; ... and {more} more" if more > 0 else "")
        super().__init__(f"{message}: {detail}" if detail else message)


class StoreError(JaxprovError):
    """A stored model directory is missing, incomplete, or was written by an incompatible version."""


class ArgumentError(JaxprovError, TypeError):
    """A Python API call got an argument of the wrong type (a TypeError too, for code that catches those)."""
