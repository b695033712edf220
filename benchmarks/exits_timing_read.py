"""How the verifier reads response times, measured: on a zoo and fingerprint `exits_bench.py` built, time
every suspect once in process and once over `jaxprov serve`, then read the same raw times two ways:
the shipped reading (`jaxprov.exits.timing`: detrended along the query order, the per-sample
quantile chosen by split halves) and the reading before it (the 10th percentile of each sample's
raw repeats). Optionally with B busy loops on the machine for the whole run (contention). Beside each
reading: the share of samples whose inferred level is their real stop (the suspect's early exit run
in process, which the verifier never sees) and the verdict against the fingerprint's calibration.

  python benchmarks/exits_timing_read.py --root /tmp/exits-bench --out docs/results/exits_timing_read_idle.json
  python benchmarks/exits_timing_read.py --root /tmp/exits-bench --busy 2 --out docs/results/exits_timing_read_busy2.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import jax
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import exits_bench  # noqa: E402  (`_served`: one `jaxprov serve` subprocess per suspect; `true_stops`)

from jaxprov import api  # noqa: E402
from jaxprov.atomic import atomic_write  # noqa: E402
from jaxprov.exits import client, fingerprint, timing, verify  # noqa: E402
from jaxprov.version import __version__  # noqa: E402

SUSPECTS = ("owner", "finetuned", "pruned", "adversarial", *(f"independent{i}" for i in range(6, 12)))
BEFORE_QUANTILE = 0.1  # the reading before: this quantile of each sample's raw repeats


def _readings(fp, times, order, truth, calibration) -> dict:
    out = {}
    for name, read in (("shipped", timing.time_levels(times, fp.num_exits, order)),
                       ("before", timing.time_levels(np.quantile(times, BEFORE_QUANTILE, axis=1), fp.num_exits))):
        match = float(np.mean(read.levels == fp.stops))
        test = verify.null_test(match, fp.n, calibration["match"])
        out[name] = {"match": match, "levels_right": float(np.mean(read.levels == truth)),
                     "p_value": test.p_value, "verdict": test.verdict, "quantile": read.quantile,
                     "split_half_agreement": read.agreement}
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--root", default="/tmp/jaxprov-exits-bench", help="exits_bench.py's --root")
    parser.add_argument("--arch", default="cnn_exits")
    parser.add_argument("--suspects", default=",".join(SUSPECTS))
    parser.add_argument("--repeats", type=int, default=verify.DEFAULT_REPEATS)
    parser.add_argument("--busy", type=int, default=0, help="busy loops running through the whole measurement")
    parser.add_argument("--transports", default="process,http")
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    zoo = Path(args.root) / args.arch
    fp = fingerprint.load(zoo / "owner.fingerprint.npz")
    calibration = fp.meta["calibration"]
    busy = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(args.busy)]
    rows = []
    try:
        time.sleep(2.0 if busy else 0.0)
        for name in args.suspects.split(","):
            model = api.load(str(zoo / name))
            truth = exits_bench.true_stops(model, fp.threshold, fp.samples)
            for transport in args.transports.split(","):
                load = os.getloadavg()[0]
                if transport == "http":
                    process, url = exits_bench._served(zoo / name, fp.threshold)
                    try:
                        times, _, order = verify.measure(client.HttpSuspect(url), fp.samples, args.repeats)
                    finally:
                        process.kill()
                        process.wait(timeout=30)
                else:
                    times, _, order = verify.measure(verify.InProcessSuspect(model, fp.threshold), fp.samples,
                                                     args.repeats)
                rows.append({"suspect": name, "transport": transport,
                             "stops_as_expected": float(np.mean(truth == fp.stops)),
                             "median_ms": float(np.median(times) * 1e3),
                             "iqr_ms": float(np.mean(np.subtract(*np.quantile(times, [0.75, 0.25], axis=1))) * 1e3),
                             **_readings(fp, times, order, truth, calibration),
                             "load": [round(load, 2), round(os.getloadavg()[0], 2)]})
                print(json.dumps(rows[-1]), flush=True)
    finally:
        for process in busy:
            process.kill()
    record = {"command": "python benchmarks/exits_timing_read.py " + " ".join(sys.argv[1:]),
              "machine": {"platform": platform.platform(), "cpus": os.cpu_count()},
              "versions": {"jaxprov": __version__, "jax": jax.__version__, "python": platform.python_version()},
              "fingerprint": str(zoo / "owner.fingerprint.npz"), "fingerprint_digest": fp.digest,
              "repeats": args.repeats, "busy_loops": args.busy,
              "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "rows": rows}
    atomic_write(Path(args.out), (json.dumps(record, indent=1) + "\n").encode())


if __name__ == "__main__":
    main()
