"""Resumable training checkpoints: a pytree's leaves and a small JSON record in one file.

MAP's mask run (`jaxprov.protect.train`) and Model DNA's training (`jaxprov.dna.train`) both save
their state every few steps and resume from it. One file format, one reader and one rule serve both:

  save_tree(path, tree, stamp, meta)   a zip (readable by `numpy.load`) of `meta.json` (format, stamp,
                                       meta) and `leaf<i>.npy` per leaf of `tree`, written atomically
                                       (`jaxprov.atomic`);
  load_tree(path, template, stamp)     (tree, meta) when `path` holds a checkpoint of this run, None
                                       when there is none or it belongs to another run.

The stamp is the run's identity (a digest of its configuration and data). The rule on a file that
is there (docs/design.md, "Resumable checkpoints"):
  - a whole checkpoint with another stamp belongs to another run (the same output path reused with
    other settings or data): it is ignored with one logged line, training starts afresh and
    overwrites it at its first save. Refusing would stop every rerun with changed settings, and
    the file holds nothing this run can use;
  - a file that cannot be read as a checkpoint (damaged, truncated, not one, another format) or
    whose arrays do not fit this run's state (with the right stamp: tampered, or a bug) is refused
    with one CheckpointError line naming it and saying what to do (delete it, or choose a fresh
    output path); the CLI exits 2. Starting afresh would silently overwrite what may be hours of
    progress, or evidence of what went wrong.

The file is untrusted input: members are read through `zipfile` with every size bounded by what the
template expects (each leaf's header is checked against the template's shape and dtype before a
byte of its data is read), so a file declaring huge arrays costs nothing; nothing is unpickled.
"""

from __future__ import annotations

import io
import json
import tokenize  # numpy parses a .npy header with it: a damaged one raises TokenError
import zipfile
import zlib
from pathlib import Path
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from jaxprov.atomic import atomic_write
from jaxprov.errors import CheckpointError

FORMAT = "jaxprov-checkpoint-1"
META = "meta.json"
MAX_META_BYTES = 16 << 20
_READ_ERRORS = (OSError, EOFError, ValueError, KeyError, TypeError, OverflowError, RecursionError, MemoryError,
                NotImplementedError, RuntimeError, SyntaxError, tokenize.TokenError, zipfile.BadZipFile, zlib.error)


def save_tree(path: str | Path, tree: Any, stamp: str, meta: dict | None = None) -> None:
    """Write `tree`'s leaves and {format, stamp, meta} to `path` atomically (a reader sees the old
    checkpoint or the new one)."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_STORED) as archive:
        archive.writestr(META, json.dumps({"format": FORMAT, "stamp": stamp, "meta": meta or {}}))
        for i, leaf in enumerate(jax.tree_util.tree_leaves(tree)):
            array = io.BytesIO()
            np.lib.format.write_array(array, np.asarray(leaf), allow_pickle=False)
            archive.writestr(f"leaf{i}.npy", array.getvalue())
    atomic_write(Path(path), buffer.getvalue())


def refused(path: Path, why: str, what: str = "training run") -> CheckpointError:
    """The one line for a checkpoint file that is there but cannot be resumed from."""
    return CheckpointError(f"{path}: {why}, so this {what} cannot be resumed from it; delete it to start "
                           "afresh, or choose a fresh output path")


def load_tree(path: str | Path, template: Any | Callable[[dict], Any], stamp: str, *, what: str = "training run",
              log: Callable[[str], None] | None = None) -> tuple[Any, dict] | None:
    """(tree, meta) from the checkpoint at `path` when it is this run's (its stamp is `stamp`).

    Args:
      template: the tree the checkpoint must fit (leaf count, shapes and dtypes), or a function of the
        checkpoint's meta that returns it (None for a meta this run cannot have written).
      what: the run, as the messages name it ("MAP mask run").
      log: where the line about another run's checkpoint goes (default: `warnings.warn`).
    Returns None when there is no file or it is another run's; raises CheckpointError (one line)
    for a file that is not a readable checkpoint or does not fit (module docstring)."""
    path = Path(path)
    if not path.exists() and not path.is_symlink():
        return None
    if path.is_symlink() or not path.is_file():
        raise refused(path, "not a regular file", what)
    try:
        with zipfile.ZipFile(path) as archive:
            record = _read_meta(archive)
            if record is None:
                raise refused(path, f"not a jaxprov training checkpoint (no readable {META} of format {FORMAT})",
                              what)
            if record["stamp"] != stamp:
                line = f"{path}: a checkpoint of another {what} (other settings or data); starting afresh"
                if log is None:
                    import warnings

                    warnings.warn(line, stacklevel=2)
                else:
                    log(line)
                return None
            meta = record["meta"]
            expected = template(meta) if callable(template) else template
            if expected is None:
                raise refused(path, "its record (stage, step) is not one this run writes", what)
            leaves, treedef = jax.tree_util.tree_flatten(expected)
            names = {f"leaf{i}.npy" for i in range(len(leaves))}
            found = {n for n in archive.namelist() if n != META}
            if found != names:
                raise refused(path, f"it holds {len(found)} arrays where this run has {len(leaves)}", what)
            restored = []
            for i, leaf in enumerate(leaves):
                shape, dtype = _spec(leaf)
                array = _read_leaf(archive, f"leaf{i}.npy", shape, dtype)
                if array is None:
                    raise refused(path, f"its array {i} does not fit this run (which has {dtype} {shape})", what)
                restored.append(array)
    except CheckpointError:
        raise
    except _READ_ERRORS as err:
        raise refused(path, f"not a readable training checkpoint ({type(err).__name__})", what) from None
    return jax.tree_util.tree_unflatten(treedef, [jnp.asarray(a) for a in restored]), meta


def _spec(leaf) -> tuple[tuple, np.dtype]:
    """A template leaf's (shape, dtype): an array, a jax.ShapeDtypeStruct or a Python number."""
    dtype = getattr(leaf, "dtype", None)
    return tuple(np.shape(leaf)), np.dtype(dtype if dtype is not None else np.asarray(leaf).dtype)


def _read_meta(archive: zipfile.ZipFile) -> dict | None:
    """{format, stamp, meta} of an archive, None unless it is a whole record of this format."""
    if META not in archive.namelist():
        return None
    with archive.open(META) as member:
        raw = member.read(MAX_META_BYTES + 1)
    if len(raw) > MAX_META_BYTES:
        return None
    record = json.loads(raw.decode("utf-8"))
    if (not isinstance(record, dict) or record.get("format") != FORMAT or not isinstance(record.get("stamp"), str)
            or not isinstance(record.get("meta"), dict)):
        return None
    return record


def _read_leaf(archive: zipfile.ZipFile, name: str, shape: tuple, dtype: np.dtype) -> np.ndarray | None:
    """The array `name` if its .npy header declares exactly `shape` and `dtype` (read before any data:
    a hostile header costs nothing); None if it declares anything else or its data is short."""
    with archive.open(name) as member:
        version = np.lib.format.read_magic(member)
        if version == (1, 0):
            got_shape, fortran, got_dtype = np.lib.format.read_array_header_1_0(member)
        elif version == (2, 0):
            got_shape, fortran, got_dtype = np.lib.format.read_array_header_2_0(member)
        else:
            return None
        if tuple(got_shape) != tuple(shape) or got_dtype != dtype or got_dtype.hasobject:
            return None
        size = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
        data = member.read(size)
        if len(data) != size or member.read(1):  # short, or more than declared (reading to the end checks the CRC)
            return None
    return np.frombuffer(data, dtype).reshape(shape, order="F" if fortran else "C").copy()
