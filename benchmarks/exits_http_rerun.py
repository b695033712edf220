"""Rerun only the HTTP rows of `exits_bench.py` on a zoo and fingerprint it already built.

HTTP timing on a shared machine varies from run to run (docs/results.md, timing fingerprints): this
script times the suspects again over `jaxprov serve`, with nothing crafted or calibrated anew, so a
run's HTTP figures can be checked against a second measurement of the same fingerprint. Beside each
match it records the suspect's real stops (its early exit run in process), which the verifier never
sees.

  python benchmarks/exits_http_rerun.py --root /tmp/exits-bench --out docs/results/exits_http_rerun.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import jax
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import exits_bench  # noqa: E402  (its `_served` starts one `jaxprov serve` subprocess per suspect)

from jaxprov import api  # noqa: E402
from jaxprov.exits import client, fingerprint, staged, verify  # noqa: E402
from jaxprov.version import __version__  # noqa: E402

SUSPECTS = ("owner", "finetuned", "pruned", "adversarial", "distilled",
            *(f"independent{i}" for i in range(6, 12)))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--root", default="/tmp/jaxprov-exits-bench", help="exits_bench.py's --root")
    parser.add_argument("--arch", default="cnn_exits")
    parser.add_argument("--suspects", default=",".join(SUSPECTS))
    parser.add_argument("--repeats", type=int, default=verify.DEFAULT_REPEATS)
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    zoo = Path(args.root) / args.arch
    fp = fingerprint.load(zoo / "owner.fingerprint.npz")
    rows = []
    for name in args.suspects.split(","):
        early = staged.EarlyExit(api.load(str(zoo / name)), fp.threshold)
        stops = np.array([early(x).stop for x in fp.samples])
        process, url = exits_bench._served(zoo / name, fp.threshold)
        try:
            load, start = os.getloadavg()[0], time.perf_counter()
            result = verify.verify(fp, client.HttpSuspect(url), repeats=args.repeats)
            seconds = time.perf_counter() - start
        finally:
            process.kill()
        rows.append({"suspect": name, "match": result.timing.score, "p_value": result.timing.p_value,
                     "verdict": result.verdict, "stops": float(np.mean(stops == fp.stops)),
                     "load": [round(load, 2), round(os.getloadavg()[0], 2)], "seconds": round(seconds, 1)})
        print(json.dumps(rows[-1]), flush=True)
    record = {"command": "python benchmarks/exits_http_rerun.py " + " ".join(sys.argv[1:]),
              "machine": {"platform": platform.platform(), "cpus": os.cpu_count()},
              "versions": {"jaxprov": __version__, "jax": jax.__version__, "python": platform.python_version()},
              "fingerprint": str(zoo / "owner.fingerprint.npz"),
              "fingerprint_digest": fp.digest, "repeats": args.repeats,
              "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "rows": rows}
    Path(args.out).write_text(json.dumps(record, indent=1) + "\n")


if __name__ == "__main__":
    main()
