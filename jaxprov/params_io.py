"""A params tree in an orbax folder: the one writer.

Stored models (`jaxprov.store`, `MODEL/params/`) and Model DNA detectors (`jaxprov.dna.detector`,
`DETECTOR/params/`) both keep their params as an orbax-checkpoint folder; these two functions are
all either writes with orbax.

`save(folder, params)`: orbax finishes a save by globbing its folder, so a `[ ] * ?` anywhere in the
folder's path silently drops the params (the folder then cannot be read back). The writer refuses
such a path with one line (`check_path`, which callers also run before any long work), and writes
synchronously (an async checkpointer's threads outlived a failed save and kept the process alive).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import jax
import numpy as np

from jaxprov.errors import JaxprovError

GLOB_CHARS = re.compile(r"[\[\]*?]")


def check_path(path: str | Path, shown: str | Path | None = None, error: type[JaxprovError] = JaxprovError) -> None:
    """One line (as `error`, naming `shown`, default `path`) if orbax would read `path` as a pattern."""
    path = Path(path).absolute()
    bad = [part for part in path.parts if GLOB_CHARS.search(part)]
    if bad:
        raise error(f"{shown or path}: the folder {bad[0]!r} on its path has one of [ ] * ? in its name, which the "
                    "params writer (orbax) reads as a pattern (the params would be lost); choose an output path "
                    "without them")


def save(folder: str | Path, params: Any, shown: str | Path | None = None,
         error: type[JaxprovError] = JaxprovError) -> None:
    """Write the params tree (host arrays) as an orbax checkpoint into `folder` (which must not exist).

    `shown` is the path the messages name (the model or detector folder being written)."""
    import orbax.checkpoint as ocp

    folder = Path(folder).absolute()
    check_path(folder, shown, error)
    with ocp.Checkpointer(ocp.StandardCheckpointHandler()) as checkpointer:
        checkpointer.save(folder, args=ocp.args.StandardSave(jax.tree_util.tree_map(np.asarray, params)))
