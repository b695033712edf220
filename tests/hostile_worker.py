"""Reads hostile checkpoints in a separate process, one case per stdin line, one JSON answer per line.

Run by tests/test_hostile_fuzz.py and benchmarks/fuzz_readers.py, so that a crash (a segfault from
an out-of-bounds view) kills this worker, not the test run, and the parent knows which case did it.
Each answer says whether the case loaded, the error's class and message, the Python heap peak while
reading (tracemalloc, above what the process held before the case: numpy buffers included), the
bytes of the tensors returned and whether any of them was non-zero. The parent adds what the worker wrote to stderr since the previous answer: a
traceback there (printed by a library's own thread, after the reader returned) is a failure too.
"""

import json
import sys
import tracemalloc
from pathlib import Path


def _tensors(path: Path):
    import converters
    from converters import readers

    if path.name.startswith("detector"):  # a DNA detector folder (tests/hostile_mutations.py)
        import jax

        from jaxprov import dna

        return jax.tree_util.tree_leaves(dna.load(path).params)
    if path.suffix == ".ckpt":  # a training checkpoint: another run's (None) is a correct answer too
        import jax

        from jaxprov.checkpoint import load_tree
        from tests.hostile_mutations import CHECKPOINT_STAMP, checkpoint_template

        restored = load_tree(path, checkpoint_template(), CHECKPOINT_STAMP, log=lambda line: None)
        return [] if restored is None else jax.tree_util.tree_leaves(restored[0])
    if path.is_dir():
        import jax

        model = converters.load_checkpoint(path)
        return [leaf for leaf in jax.tree_util.tree_leaves(model.params)]
    return list(readers.read_state_dict(path).values())


def _answer(path: Path) -> dict:
    import numpy as np

    from jaxprov.errors import JaxprovError

    base = tracemalloc.get_traced_memory()[0]  # tracing runs the whole time (main)
    tracemalloc.reset_peak()
    try:
        tensors = _tensors(path)
    except JaxprovError as err:
        return {"ok": False, "error": type(err).__name__, "message": str(err),
                "peak": tracemalloc.get_traced_memory()[1] - base}
    except Exception as err:  # noqa: BLE001 -- exactly what the suite is looking for
        return {"ok": False, "error": f"unexpected {type(err).__name__}", "message": str(err)[:500],
                "peak": tracemalloc.get_traced_memory()[1] - base}
    peak = tracemalloc.get_traced_memory()[1] - base
    arrays = [np.asarray(t) for t in tensors]
    return {"ok": True, "error": None, "message": "", "peak": peak,
            "out_bytes": int(sum(a.nbytes for a in arrays)),
            "nonzero": bool(any(np.any(np.ascontiguousarray(a).view(np.uint8) != 0) for a in arrays if a.size))}


def main() -> None:
    for warmup in sys.argv[1:]:  # import jax / transformers / orbax and read once, untraced (6x faster)
        _tensors(Path(warmup))
    # Started once, between valid reads, and never stopped: on CPython < 3.12.9, tracemalloc.stop()
    # while a native thread (tensorstore's) takes the GIL can crash the process (gh-128679).
    tracemalloc.start()
    print(json.dumps({"ready": True}), flush=True)
    for line in sys.stdin:
        print(json.dumps(_answer(Path(json.loads(line)["path"]))), flush=True)


if __name__ == "__main__":
    main()


# -- the parent's side -----------------------------------------------------------------------------

HANG_SECONDS = 120  # no case may take this long; it only turns a hang into a reported failure
# stderr lines that are a failure: a traceback, a fatal error (faulthandler's dump), a logged error
# or an exception Python could not raise (asyncio's and the unraisable hook's reports). orbax's own
# log lines about the file (absl's "WARNING:absl:" / "ERROR:absl:Failed to read Metadata file") are
# not: they name what orbax could not read, beside jaxprov's answer.
STDERR_FAILURES = ("Traceback (most recent call last)", "Fatal Python error", "ERROR:", "Exception ignored",
                   "exception was never retrieved")
STDERR_ALLOWED = ("WARNING:absl:", "ERROR:absl:")


class Worker:
    """A running worker process: `ask(path)` returns its answer, or {"crash": ...} if it died or hung."""

    def __init__(self, root: Path, warmup: Path | list[Path] | None = None):
        self._root = root
        self._warmup = [] if warmup is None else [warmup] if isinstance(warmup, Path) else list(warmup)
        self._start()

    def _start(self) -> None:
        import os
        import subprocess
        import tempfile

        env = {**os.environ, "PYTHONPATH": str(self._root), "PYTHONFAULTHANDLER": "1"}
        self._stderr, self._stderr_read = tempfile.TemporaryFile(), 0  # read back after each answer (`_new_stderr`)
        self._proc = subprocess.Popen([sys.executable, str(self._root / "tests" / "hostile_worker.py")]
                                      + [str(w) for w in self._warmup], cwd=self._root, env=env,
                                      text=True, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                      stderr=self._stderr)
        ready = self._read(timeout=600)
        if not ready or not ready.get("ready"):
            raise RuntimeError(f"the hostile-input worker did not start ({ready})")
        self._new_stderr()  # the warm-up's output is not a case's

    def _new_stderr(self) -> str:
        """What the worker wrote to stderr since the last call."""
        self._stderr.seek(self._stderr_read)
        raw = self._stderr.read()
        self._stderr_read += len(raw)
        return raw.decode(errors="replace")

    def _read(self, timeout: float):
        import select

        ready, _, _ = select.select([self._proc.stdout], [], [], timeout)
        if not ready:
            return None
        line = self._proc.stdout.readline()
        return json.loads(line) if line else None

    def ask(self, path: Path) -> dict:
        try:
            self._proc.stdin.write(json.dumps({"path": str(path)}) + "\n")
            self._proc.stdin.flush()
        except BrokenPipeError:
            pass
        answer = self._read(HANG_SECONDS)
        if answer is None:
            self._proc.kill()
            code = self._proc.wait()
            lines = [line for line in self._new_stderr().splitlines()
                     if line.strip() and not line.startswith("Extension modules")]
            fatal = [i for i, line in enumerate(lines) if line.startswith("Fatal Python error")]
            tail = " | ".join(lines[fatal[-1]:][:8] if fatal else lines[-8:])  # faulthandler's dump, if any
            self._start()  # a fresh worker for the remaining cases
            return {"crash": f"worker {'hung' if code == -9 else 'died'} (exit {code}); its stderr ends: {tail[-600:]}"}
        return {**answer, "stderr": self._new_stderr()}

    def close(self) -> str:
        """Stop the worker; returns what it wrote to stderr after the last answer (to check as well)."""
        self._proc.stdin.close()
        self._proc.wait()
        return self._new_stderr()


def problems(path: Path, answer: dict, sentinel: Path) -> list[str]:
    """What is wrong with one answer: anything but a correct all-zero load or one clear JaxprovError
    naming the input, a heap peak above 4x (input bytes + tensors returned) + 16 MiB, or the sentinel."""
    found = []
    if "crash" in answer:
        return [answer["crash"]]
    found += stderr_problems(answer.get("stderr", ""))
    if sentinel.exists():
        found.append("the payload ran (sentinel file exists)")
    if answer["error"] and answer["error"].startswith("unexpected"):
        found.append(f"{answer['error']}: {answer['message'][:200]}")
    elif answer["error"] and ("\n" in answer["message"] or str(path) not in answer["message"]):
        found.append(f"not one line naming the input: {answer['message'][:200]!r}")
    if answer["ok"] and answer["nonzero"]:
        found.append("a non-zero weight from an all-zero file (bytes from outside it)")
    files = [p for p in path.rglob("*") if p.is_file() and not p.is_symlink()] if path.is_dir() else [path]
    size = sum(p.stat().st_size for p in files) if path.exists() else 0
    if answer["peak"] > 4 * (size + answer.get("out_bytes", 0)) + 16 * 2**20:
        found.append(f"heap peak {answer['peak']:,} bytes for {size:,} bytes of input")
    return found


def stderr_problems(text: str) -> list[str]:
    """The failures in a stretch of the worker's stderr (STDERR_FAILURES), as one problem naming the
    first such line; output can come late (from another thread), so it may belong to the case before."""
    lines = [line for line in text.splitlines()
             if any(marker in line for marker in STDERR_FAILURES) and not line.startswith(STDERR_ALLOWED)]
    return [f"wrote to stderr while this case (or the one before it) was read: {lines[0][:200]!r} "
            f"({len(lines)} such lines)"] if lines else []
