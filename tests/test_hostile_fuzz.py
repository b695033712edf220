"""Generated hostile inputs (tests/hostile_mutations.py, fixed seed and count): every mutated .pt
zip, pickle, safetensors header, config.json, shard index, DNA detector folder and MAP/DNA training
checkpoint gives a correct all-zero model (or, for a checkpoint, another run's: ignored) or one
clear JaxprovError line naming it; never another exception, a crash or a hang (each case runs in a
worker process), never a traceback or logged error on the worker's stderr (a library's thread can
print one after the reader returned), never a heap peak beyond a small multiple of the input plus
the tensors returned, never a non-zero weight (which could only come from outside the file), never
an execution.
A longer run: benchmarks/fuzz_readers.py --examples N."""

from pathlib import Path

import pytest

from tests.hostile_mutations import detector_bases, cases, valid_folder
from tests.hostile_worker import Worker, problems, stderr_problems

SEED = 9
COUNTS = {"pt": 500, "safetensors": 400, "folder": 40, "detector": 60, "checkpoint": 120}
ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def worker(tmp_path_factory):
    warmup = tmp_path_factory.mktemp("warmup")
    w = Worker(ROOT, [valid_folder(warmup / "bert"), detector_bases(warmup)["zarr"]])
    yield w
    late = stderr_problems(w.close())
    assert not late, f"after the last case: {late}"


@pytest.mark.parametrize("kind", sorted(COUNTS))
def test_generated_hostile_inputs(tmp_path, worker, kind):
    sentinel = tmp_path / "pwned"
    failures, loaded = [], 0
    for description, path in cases(kind, COUNTS[kind], SEED, tmp_path / "cases", sentinel):
        answer = worker.ask(path)
        loaded += bool(answer.get("ok"))
        failures += [f"{description}: {p}" for p in problems(path, answer, sentinel)]
        sentinel.unlink(missing_ok=True)
    assert not failures, f"{len(failures)} of {COUNTS[kind]} cases failed:\n" + "\n".join(failures[:30])
    # The mutations must not all be trivially refused: some cases still load (and give zeros).
    assert 0 < loaded < COUNTS[kind]
