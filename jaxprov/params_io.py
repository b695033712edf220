"""A params tree in an orbax folder: the one writer and the one checked reader.

Stored models (`jaxprov.store`, `MODEL/params/`) and Model DNA detectors (`jaxprov.dna.detector`,
`DETECTOR/params/`) both keep their params as an orbax-checkpoint folder; these two functions are
all either does with orbax.

`save(folder, params)`: orbax finishes a save by globbing its folder, so a `[ ] * ?` anywhere in the
folder's path silently drops the params (the folder then cannot be read back). The writer refuses
such a path with one line (`check_path`, which callers also run before any long work), and writes
synchronously (an async checkpointer's threads outlived a failed save and kept the process alive).

`restore(folder, abstract, sha256)`: the folder is untrusted. Its metadata (tensorstore's array
headers: shapes, dtypes, chunk shapes, read without any array data) must declare exactly the
expected tree's paths and shapes, numeric dtypes and chunks no larger than their array, before
anything is restored; only then is it restored against that abstract tree and its bytes checked
against the recorded sha256. orbax alone does not refuse a mis-declared array: restoring against
an abstract tree of another shape (orbax-checkpoint 0.12.4 and 0.12.8 alike) returns the shape on
disk, allocated in full, so a folder declaring a huge array would be allocated before any check.

Every orbax call runs its event loops through `_drained_loops`: orbax (`asyncio_utils.run_sync`,
0.12.8) runs each step in a fresh event loop and closes it as soon as the step's coroutine ends;
when one read of an `asyncio.gather` fails (a damaged file), the gather raises at once and its
sibling reads, tensorstore futures still running in tensorstore's threads, are left behind in the
closed loop. Each of them later calls back into that loop from a native thread, prints a
"RuntimeError: Event loop is closed" traceback to stderr (after the caller's one-line refusal)
and, in a process tracing its heap with `tracemalloc` on CPython < 3.12.9 (gh-128679), can kill
the process with SIGSEGV. A drained loop runs every task it still holds to its end before it
closes, so nothing orbax started outlives the call (docs/security.md).
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import threading
import warnings
from pathlib import Path
from typing import Any

import jax
import numpy as np

from jaxprov.errors import JaxprovError
from jaxprov.identity import params_digest

GLOB_CHARS = re.compile(r"[\[\]*?]")
DRAIN_SECONDS = 60.0  # a left-behind task still running after this long is cancelled (a hang, not a slow read)


class _DrainedLoop(asyncio.SelectorEventLoop):
    """An event loop that, when closed, first runs every task it still holds to its end."""

    def close(self) -> None:
        if not self.is_closed() and not self.is_running():
            pending = [task for task in asyncio.all_tasks(self) if not task.done()]
            if pending:
                self.run_until_complete(_finish(pending))
        super().close()


async def _finish(tasks) -> None:
    """Wait for `tasks` (their results and errors are dropped: the step they belong to has already
    failed); cancel any still running after DRAIN_SECONDS and wait for the cancellation too."""
    done, running = await asyncio.wait(tasks, timeout=DRAIN_SECONDS)
    for task in running:
        task.cancel()
    for task in [*done, *running]:
        with contextlib.suppress(BaseException):
            await task  # retrieves the error, so asyncio logs no "exception was never retrieved"


class _DrainedPolicy(asyncio.DefaultEventLoopPolicy):
    def new_event_loop(self) -> asyncio.AbstractEventLoop:
        return _DrainedLoop()


_POLICY_LOCK = threading.Lock()


@contextlib.contextmanager
def _drained_loops():
    """New event loops are `_DrainedLoop`s while inside (one thread at a time: the policy is global)."""
    with _POLICY_LOCK, warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # policies are deprecated from Python 3.14
        previous = asyncio.get_event_loop_policy()
        asyncio.set_event_loop_policy(_DrainedPolicy())
        try:
            yield
        finally:
            asyncio.set_event_loop_policy(previous)


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
    with _drained_loops(), ocp.Checkpointer(ocp.StandardCheckpointHandler()) as checkpointer:
        checkpointer.save(folder, args=ocp.args.StandardSave(jax.tree_util.tree_map(np.asarray, params)))


def restore(folder: str | Path, abstract: Any, sha256: str, *, shown: str | Path, what: str, fits: str, advice: str,
            error: type[JaxprovError] = JaxprovError) -> Any:
    """The params in `folder` as numpy arrays in `abstract`'s structure (empty subtrees kept), checked.

    Args:
      abstract: the expected tree (ShapeDtypeStructs or arrays): paths and shapes must match it.
      sha256: the recorded `params_digest` the restored params must have.
      shown, what, fits, advice: the messages' words: "{shown}: {what} do not fit {fits} (...); {advice}".
    Raises `error` with one line when the folder cannot be read, declares other paths, shapes,
    non-numeric dtypes or oversized chunks, or holds other bytes than the recorded sha256 says."""
    import orbax.checkpoint as ocp

    folder = Path(folder)
    expected = {jax.tree_util.keystr(k): tuple(np.shape(v)) for k, v in jax.tree_util.tree_leaves_with_path(abstract)}
    try:
        with _drained_loops(), ocp.Checkpointer(ocp.StandardCheckpointHandler()) as checkpointer:
            declared = checkpointer.metadata(folder)
            declared = getattr(getattr(declared, "item_metadata", declared), "tree", declared)
            leaves = _declared_leaves(declared)
            problems = _problems(leaves, expected)
            if problems:
                raise error(f"{shown}: {what} do not fit {fits} ({'; '.join(problems[:4])}"
                            f"{'; ...' if len(problems) > 4 else ''}); {advice}")
            # The declared tree as the target (empty subtrees as orbax wrote them, or not), its shapes checked.
            target = jax.tree_util.tree_map(lambda leaf: jax.ShapeDtypeStruct(tuple(leaf.shape), leaf.dtype), declared)
            restored = checkpointer.restore(folder, args=ocp.args.StandardRestore(target))
        got = {jax.tree_util.keystr(k): np.asarray(v) for k, v in jax.tree_util.tree_leaves_with_path(restored)}
    except JaxprovError:
        raise
    except Exception as err:  # noqa: BLE001 -- orbax and tensorstore raise many types for a damaged folder
        raise error(f"{shown}: {what} cannot be read ({type(err).__name__}); {advice}") from None
    if set(got) != set(expected) or any(got[k].shape != expected[k] for k in expected):
        raise error(f"{shown}: {what} do not fit {fits} (they changed while being read); {advice}")
    paths, treedef = jax.tree_util.tree_flatten_with_path(abstract)
    params = jax.tree_util.tree_unflatten(treedef, [got[jax.tree_util.keystr(k)] for k, _ in paths])
    if params_digest(params) != sha256:
        raise error(f"{shown}: {what} do not match their recorded sha256 (changed after they were written); {advice}")
    return params


def _declared_leaves(tree) -> dict[str, tuple[tuple, np.dtype, tuple | None]]:
    """{path: (shape, dtype, chunk shape)} of orbax's metadata tree (dicts of ArrayMetadata)."""
    out = {}
    for path, leaf in jax.tree_util.tree_leaves_with_path(tree):
        storage = getattr(leaf, "storage", None)
        chunks = getattr(storage, "chunk_shape", None)
        out[jax.tree_util.keystr(path)] = (tuple(leaf.shape), np.dtype(leaf.dtype),
                                           None if chunks is None else tuple(chunks))
    return out


def _problems(declared: dict, expected: dict) -> list[str]:
    problems = ([f"missing {k}" for k in sorted(expected.keys() - declared.keys())]
                + [f"unexpected {k}" for k in sorted(declared.keys() - expected.keys())])
    for k in sorted(expected.keys() & declared.keys()):
        shape, dtype, chunks = declared[k]
        if shape != expected[k]:
            problems.append(f"{k} has shape {shape}, {expected[k]} expected")
        elif dtype.kind not in "biuf":
            problems.append(f"{k} holds {dtype}, not numbers")
        elif chunks is not None and (len(chunks) != len(shape) or any(not 0 < c <= max(s, 1)
                                                                      for c, s in zip(chunks, shape))):
            problems.append(f"{k} declares chunks {chunks} for shape {shape}")
    return problems
