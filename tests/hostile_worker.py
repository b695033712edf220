"""Reads hostile checkpoints in a separate process, one case per stdin line, one JSON answer per line.

Run by tests/test_hostile_fuzz.py and benchmarks/fuzz_readers.py, so that a crash (a segfault from
an out-of-bounds view) kills this worker, not the test run, and the parent knows which case did it.
Each answer says whether the case loaded, the error's class and message, the Python heap peak while
reading (tracemalloc: numpy buffers included), the bytes of the tensors returned and whether any of
them was non-zero.
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

    tracemalloc.start()
    tracemalloc.reset_peak()
    try:
        tensors = _tensors(path)
    except JaxprovError as err:
        return {"ok": False, "error": type(err).__name__, "message": str(err),
                "peak": tracemalloc.get_traced_memory()[1]}
    except Exception as err:  # noqa: BLE001 -- exactly what the suite is looking for
        return {"ok": False, "error": f"unexpected {type(err).__name__}", "message": str(err)[:500],
                "peak": tracemalloc.get_traced_memory()[1]}
    finally:
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    arrays = [np.asarray(t) for t in tensors]
    return {"ok": True, "error": None, "message": "", "peak": peak,
            "out_bytes": int(sum(a.nbytes for a in arrays)),
            "nonzero": bool(any(np.any(np.ascontiguousarray(a).view(np.uint8) != 0) for a in arrays if a.size))}


def main() -> None:
    for warmup in sys.argv[1:]:  # import jax / transformers / orbax and read once, outside tracemalloc
        _tensors(Path(warmup))
    print(json.dumps({"ready": True}), flush=True)
    for line in sys.stdin:
        print(json.dumps(_answer(Path(json.loads(line)["path"]))), flush=True)


if __name__ == "__main__":
    main()


# -- the parent's side -----------------------------------------------------------------------------

HANG_SECONDS = 120  # no case may take this long; it only turns a hang into a reported failure


class Worker:
    """A running worker process: `ask(path)` returns its answer, or {"crash": ...} if it died or hung."""

    def __init__(self, root: Path, warmup: Path | list[Path] | None = None):
        self._root = root
        self._warmup = [] if warmup is None else [warmup] if isinstance(warmup, Path) else list(warmup)
        self._start()

    def _start(self) -> None:
        import os
        import subprocess

        env = {**os.environ, "PYTHONPATH": str(self._root)}
        self._proc = subprocess.Popen([sys.executable, str(self._root / "tests" / "hostile_worker.py")]
                                      + [str(w) for w in self._warmup], cwd=self._root, env=env,
                                      text=True, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                      stderr=subprocess.DEVNULL)
        ready = self._read(timeout=600)
        if not ready or not ready.get("ready"):
            raise RuntimeError(f"the hostile-input worker did not start ({ready})")

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
            self._start()  # a fresh worker for the remaining cases
            return {"crash": f"worker {'hung' if code == -9 else 'died'} (exit {code})"}
        return answer

    def close(self) -> None:
        self._proc.stdin.close()
        self._proc.wait()


def problems(path: Path, answer: dict, sentinel: Path) -> list[str]:
    """What is wrong with one answer: anything but a correct all-zero load or one clear JaxprovError
    naming the input, a heap peak above 4x (input bytes + tensors returned) + 16 MiB, or the sentinel."""
    found = []
    if "crash" in answer:
        return [answer["crash"]]
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
