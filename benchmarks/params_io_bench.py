"""What draining orbax's event loops costs per restore (jaxprov.params_io, docs/security.md).

    python benchmarks/params_io_bench.py [--repeats 40] 2>/dev/null

Reads a stored LeNet's params (OCDBT as written, and rewritten as plain zarr) and a zarr copy with
one chunk cut short (refused: the other arrays' reads are left behind by orbax) through
`jaxprov.load`, alternately with `params_io`'s drained loops and without them (orbax's own loops),
in one process, and prints the median milliseconds of each and their difference. Without the
drain, the damaged folder's abandoned reads print orbax's "Event loop is closed" tracebacks on
stderr (what the drain removes), hence the 2>/dev/null.
"""

from __future__ import annotations

import argparse
import contextlib
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import jax  # noqa: E402

import jaxprov  # noqa: E402
from jaxprov import params_io  # noqa: E402
from tests.hostile_files import rewrite_without_ocdbt  # noqa: E402


def _load_ms(folder: Path, drained: bool) -> float:
    params_io._drained_loops = DRAINED if drained else contextlib.nullcontext
    start = time.perf_counter()
    try:
        jaxprov.load(folder)
    except jaxprov.errors.JaxprovError:
        pass
    return (time.perf_counter() - start) * 1000


DRAINED = params_io._drained_loops


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=40)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="jaxprov-params-io-") as tmp:
        tmp = Path(tmp)
        ocdbt = jaxprov.save_model(jaxprov.models.init("lenet", jax.random.PRNGKey(0)), tmp / "ocdbt")
        zarr = shutil.copytree(ocdbt, tmp / "zarr")
        rewrite_without_ocdbt(zarr / "params")
        damaged = shutil.copytree(zarr, tmp / "damaged")
        chunk = next(c for c in sorted((damaged / "params").rglob("*")) if c.is_file() and c.parent != damaged / "params"
                     and not c.name.startswith("."))
        chunk.write_bytes(chunk.read_bytes()[:5])
        try:
            for name, folder in (("valid, OCDBT", ocdbt), ("valid, zarr", zarr), ("damaged chunk, zarr", damaged)):
                times = {False: [], True: []}
                for i in range(args.repeats + 1):  # the first pair warms up
                    for drained in (False, True):
                        ms = _load_ms(folder, drained)
                        if i:
                            times[drained].append(ms)
                plain, drained = statistics.median(times[False]), statistics.median(times[True])
                print(f"{name}: median {plain:.1f} ms with orbax's loops, {drained:.1f} ms drained "
                      f"({drained - plain:+.1f} ms)", flush=True)
        finally:
            params_io._drained_loops = DRAINED
    return 0


if __name__ == "__main__":
    sys.exit(main())
