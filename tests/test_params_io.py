"""jaxprov.params_io's orbax calls leave nothing running: a damaged params folder is refused with one
line, and no tensorstore read that orbax abandoned calls back into its closed event loop afterwards
(that printed "RuntimeError: Event loop is closed" tracebacks after the refusal and, in a process
tracing its heap with tracemalloc, killed it with SIGSEGV: docs/security.md)."""

import asyncio
import os
import shutil
import subprocess
import sys
from pathlib import Path

import jax
import pytest

import jaxprov
from jaxprov import params_io
from tests.hostile_files import rewrite_without_ocdbt
from tests.hostile_worker import stderr_problems

ROOT = Path(__file__).resolve().parents[1]
DAMAGED = 12  # copies, each with one array's chunk cut short: its read fails while the others still run


@pytest.fixture(scope="module")
def damaged_models(tmp_path_factory):
    """DAMAGED stored LeNets as plain zarr arrays (one file per chunk), each with one chunk cut to 5 bytes."""
    out = tmp_path_factory.mktemp("damaged")
    base = jaxprov.save_model(jaxprov.models.init("lenet", jax.random.PRNGKey(0)), out / "base")
    rewrite_without_ocdbt(base / "params")
    arrays = sorted(p for p in (base / "params").iterdir() if (p / ".zarray").exists())
    folders = []
    for i in range(DAMAGED):
        folder = shutil.copytree(base, out / f"m{i:02d}")
        array = folder / "params" / arrays[i % len(arrays)].name
        chunk = next(c for c in sorted(array.iterdir()) if not c.name.startswith("."))
        chunk.write_bytes(chunk.read_bytes()[:5])
        folders.append(folder)
    return folders


def test_damaged_params_are_one_line_each_and_nothing_writes_to_stderr_after(damaged_models):
    # In one process, as `scan` reads a folder of models: the tensorstore reads a failed restore left
    # behind called back into the closed loop while the next models were read (seen 5 of 5 runs of 6).
    script = ("import sys, jaxprov\n"
              "for d in sys.argv[1:]:\n"
              "    try:\n"
              "        jaxprov.load(d)\n"
              "        print('loaded', d)\n"
              "    except jaxprov.errors.JaxprovError as err:\n"
              "        print(err)\n")
    done = subprocess.run([sys.executable, "-c", script, *map(str, damaged_models)], cwd=ROOT, capture_output=True,
                          text=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert done.returncode == 0, done.stderr[-2000:]
    lines = done.stdout.splitlines()
    assert len(lines) == DAMAGED
    for line, folder in zip(lines, damaged_models):
        assert line == (f"{folder}: the stored params cannot be read (ValueError); delete the directory and "
                        "convert again"), line
    assert not stderr_problems(done.stderr), done.stderr[-2000:]


def test_a_drained_loop_finishes_what_a_failed_step_left_before_it_closes():
    # What orbax's run_sync does: run one step in a fresh loop, close it when the step raises.
    finished = []

    async def read(delay):
        await asyncio.sleep(delay)
        finished.append(delay)

    async def fail():
        raise ZeroDivisionError

    async def step():
        await asyncio.gather(read(0.05), read(0), fail())

    with params_io._drained_loops():
        loop = asyncio.new_event_loop()
    assert isinstance(loop, params_io._DrainedLoop)
    with pytest.raises(ZeroDivisionError):
        loop.run_until_complete(step())
    assert 0.05 not in finished  # the gather raised with a sibling still running
    loop.close()
    assert loop.is_closed() and 0.05 in finished and not asyncio.all_tasks(loop)
    assert not isinstance(asyncio.new_event_loop(), params_io._DrainedLoop)  # the policy is put back


def test_a_left_behind_task_that_never_ends_is_cancelled_not_waited_for(monkeypatch):
    monkeypatch.setattr(params_io, "DRAIN_SECONDS", 0.01)
    loop = params_io._DrainedLoop()
    never = loop.create_future()
    task = loop.create_task(asyncio.wait_for(never, None))
    loop.run_until_complete(asyncio.sleep(0))
    loop.close()
    assert task.cancelled() and loop.is_closed()
