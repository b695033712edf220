"""A longer run of the hostile-input suite (tests/test_hostile_fuzz.py runs a fixed few hundred).

    python benchmarks/fuzz_readers.py --examples 20000 --seed 1 [--kinds pt safetensors folder ...]

Kinds (tests/hostile_mutations.KINDS): pt, safetensors, folder, detector (DNA detector folders:
dna.json and the orbax files of params/) and checkpoint (MAP/DNA training checkpoints); all by default.

Generates that many mutated checkpoints per kind (tests/hostile_mutations.py), reads each in a
worker process (tests/hostile_worker.py) and prints every case that gave anything but a correct
all-zero model or one clear JaxprovError line: another exception, a crash or hang, a traceback or
logged error on stderr, a non-zero weight, a heap peak beyond 4x (input + tensors) + 16 MiB, or an
executed payload. Exits 1 if any.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.hostile_mutations import KINDS, cases, detector_bases, valid_folder  # noqa: E402
from tests.hostile_worker import Worker, problems, stderr_problems  # noqa: E402


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--examples", type=int, default=2000, help="cases per kind")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--kinds", nargs="+", default=list(KINDS), choices=KINDS)
    args = parser.parse_args(argv)
    failed = 0
    with tempfile.TemporaryDirectory(prefix="jaxprov-fuzz-") as tmp:
        tmp = Path(tmp)
        warmup = [valid_folder(tmp / "warmup")]
        if "detector" in args.kinds:  # orbax imported outside the measured cases
            warmup.append(detector_bases(tmp / "warmup-detector")["zarr"])
        worker = Worker(ROOT, warmup)
        for kind in args.kinds:
            start, loaded, bad = time.time(), 0, 0
            sentinel = tmp / f"{kind}-pwned"
            for description, path in cases(kind, args.examples, args.seed, tmp / kind, sentinel):
                answer = worker.ask(path)
                loaded += bool(answer.get("ok"))
                for problem in problems(path, answer, sentinel):
                    bad += 1
                    print(f"{kind}: {description}: {problem}", flush=True)
                sentinel.unlink(missing_ok=True)
                if path.is_dir():
                    shutil.rmtree(path)
                elif path.is_file():
                    path.unlink()
            failed += bad
            print(f"{kind}: {args.examples} cases, {loaded} loaded, {bad} problems, {time.time() - start:.0f} s",
                  flush=True)
        for problem in stderr_problems(worker.close()):  # written after the last answer
            failed += 1
            print(f"after the last case: {problem}", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
