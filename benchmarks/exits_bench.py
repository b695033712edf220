"""Timing fingerprints of multi-exit models, measured: a multi-exit MNIST zoo (an owner, its fine-tuned,
pruned, adversarially trained and distilled children, six independents) built by the zoo builder, a
fingerprint of the owner, and verification of every suspect from response times alone, in process
and over HTTP against `jaxprov serve` (one subprocess per served model), against the label-agreement
baseline (IPGuard-style). Writes docs/results/exits.json.

  /work/notes/heavy python benchmarks/exits_bench.py --root /tmp/exits-zoo [--out docs/results/exits.json]

Calibration: independents 0-2 are the null the fingerprint is calibrated on; independents 3-5 are
scored negatives; and every independent is also verified against a null of the other five
(leave-one-out), which counts false ownership claims at the calibrated threshold.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import select
import subprocess
import sys
import time
from pathlib import Path

import jax
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from jaxprov import datasets  # noqa: E402
from jaxprov.atomic import atomic_write  # noqa: E402
from jaxprov.exits import client, craft, make, staged, verify  # noqa: E402
from jaxprov.models.multi_exit import EXITS  # noqa: E402
from jaxprov.training import recipe as zoo_recipe  # noqa: E402
from jaxprov.version import __version__  # noqa: E402

ARCH = "cnn_exits"
COMMON = {"batch": 32}
RECIPE = {
    "name": "exits-bench",
    "description": "multi-exit MNIST zoo of benchmarks/exits_bench.py",
    "models": [
        {"name": "owner", "op": "train_exits", "arch": ARCH, "data": "mnist:base", "seed": 1, "epochs": 6,
         "lr": 2e-3, **COMMON},
        {"name": "finetuned", "op": "finetune", "parent": "owner", "data": "mnist:finetune", "seed": 2, "epochs": 3,
         "lr": 5e-4, **COMMON},
        {"name": "pruned", "op": "prune", "parent": "owner", "fraction": 0.5, "data": "mnist:finetune", "seed": 3,
         "finetune_epochs": 2, "lr": 1e-3, **COMMON},
        {"name": "adversarial", "op": "finetune", "parent": "owner", "data": "mnist:finetune", "seed": 4, "epochs": 3,
         "lr": 1e-3, "adversarial": {"eps": 0.3, "steps": 3}, **COMMON},
        {"name": "distilled", "op": "distill", "parent": "owner", "arch": ARCH, "data": "mnist:query", "seed": 5,
         "epochs": 8, "temperature": 4.0, "lr": 2e-3, **COMMON},
        *({"name": f"independent{i}", "op": "train_exits", "arch": ARCH, "data": "mnist:base", "seed": 11 + i,
           "epochs": 6, "lr": 2e-3, **COMMON} for i in range(6)),
    ],
}
THRESHOLD = 0.9
NULL, NEGATIVES = [f"independent{i}" for i in range(3)], [f"independent{i}" for i in range(3, 6)]
CHILDREN = ["finetuned", "pruned", "adversarial", "distilled"]


def _served(model_dir: Path, threshold: float):
    process = subprocess.Popen([sys.executable, "-m", "jaxprov.cli", "serve", str(model_dir), "--port", "0",
                                "--threshold", str(threshold)], cwd=ROOT, stderr=subprocess.PIPE, text=True,
                               env={**os.environ, "PYTHONPATH": str(ROOT)})
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:
        ready, _, _ = select.select([process.stderr], [], [], 1.0)
        found = re.search(r"at (http://127\.0\.0\.1:\d+)", process.stderr.readline() if ready else "")
        if found:
            return process, found.group(1)
        if process.poll() is not None:
            break
    process.kill()
    raise RuntimeError(f"jaxprov serve {model_dir} did not start")


def _row(kind, transport, result: verify.Verification, seconds: float) -> dict:
    return {"suspect": kind, "transport": transport, "match": result.timing.score, "p_value": result.timing.p_value,
            "verdict": result.verdict, "label_agreement": result.labels.score, "label_p_value": result.labels.p_value,
            "label_verdict": result.labels.verdict, "centres_ms": [c * 1e3 for c in result.centres_s],
            "seconds": round(seconds, 1)}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--root", default="/tmp/jaxprov-exits-bench")
    parser.add_argument("--out", default=str(ROOT / "docs/results/exits.json"))
    parser.add_argument("--repeats", type=int, default=15, help="in-process queries per sample")
    parser.add_argument("--http-repeats", type=int, default=40, help="HTTP queries per sample")
    args = parser.parse_args()
    started = time.time()
    load_start = os.getloadavg()
    zoo = zoo_recipe.build(RECIPE, args.root, progress=lambda n, a: print(f"  {a} {n}", flush=True))
    build_s = time.time() - started
    spec = zoo["owner"].input_spec
    x_test, y_test = datasets.inputs("mnist:test", spec)
    accuracy = {name: np.mean(np.argmax(np.asarray(m.features(m.params, x_test)[EXITS]), -1) == y_test[:, None],
                              axis=0).round(4).tolist() for name, m in zoo.items()}

    t = time.time()
    config = craft.CraftConfig(per_exit=20, seeds_per_exit=30)
    fp = make.make(zoo["owner"], "mnist:test", THRESHOLD, config, jax.random.PRNGKey(0), [zoo[n] for n in NULL],
                   args.repeats)
    craft_s = time.time() - t
    fp.save(Path(args.root) / "owner.fingerprint.npz")
    print(f"fingerprint: {fp.n} samples, kept {fp.meta['recipe']['kept']}, calibration {fp.meta['calibration']}")

    rows = []

    def run(kind, suspect, transport="in-process", repeats=args.repeats):
        t0 = time.time()
        result = verify.verify(fp, suspect, repeats)
        rows.append(_row(kind, transport, result, time.time() - t0))
        print(f"  {transport:10s} {kind:28s} match {result.timing.score:.3f} p {result.timing.p_value:.2g} "
              f"{result.verdict:14s} labels {result.labels.score:.3f} {result.labels.verdict}", flush=True)

    for name in ["owner", *CHILDREN, *NEGATIVES]:
        run(name, verify.InProcessSuspect(zoo[name], THRESHOLD))
    for q in (0.8, 0.95):
        run(f"owner, threshold {q}", verify.InProcessSuspect(zoo["owner"], q))
    owner_profile = fp.meta["profile"]
    gap = float(np.median(np.diff([m for m in owner_profile["median_s"] if m is not None])))
    for factor, jitter in ((2.0, 0.0), (2.0, 0.5 * gap), (2.0, gap)):
        suspect = verify.SlowedSuspect(verify.InProcessSuspect(zoo["owner"], THRESHOLD), factor, jitter, seed=1)
        run(f"owner, {factor:g}x slower + jitter {jitter * 1e3:.3f} ms", suspect)
    for name in ["owner", *CHILDREN, *NEGATIVES]:
        process, url = _served(Path(args.root) / name, THRESHOLD)
        try:
            run(name, client.HttpSuspect(url), "http", args.http_repeats)
        finally:
            process.terminate()
            process.wait(timeout=30)

    # Leave-one-out over all six independents: each verified against a null of the other five.
    independents = [f"independent{i}" for i in range(6)]
    null_scores = {}
    for name in independents:
        null_scores[name] = verify.score(fp, *verify.measure(verify.InProcessSuspect(zoo[name], THRESHOLD),
                                                             fp.samples, args.repeats))[:2]
    loo = []
    for name in independents:
        others = [null_scores[o] for o in independents if o != name]
        p0 = max(o[0] for o in others)
        matches = round(null_scores[name][0] * fp.n)
        p = verify.binomial_tail(matches, fp.n, p0)
        loo.append({"suspect": name, "match": null_scores[name][0], "p0": p0, "p_value": p,
                    "claimed": bool(p < verify.ALPHA)})

    doc = {
        "command": "python benchmarks/exits_bench.py " + " ".join(sys.argv[1:]),
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "jax_backend": jax.default_backend(),
                    "load_average_at_start": load_start, "note": "shared 2-core CPU, other jobs running"},
        "versions": {"jaxprov": __version__, "jax": jax.__version__, "python": platform.python_version()},
        "arch": ARCH, "threshold": THRESHOLD, "recipe": RECIPE, "alpha": verify.ALPHA,
        "repeats": {"in_process": args.repeats, "http": args.http_repeats},
        "fingerprint": {"n": fp.n, "kept_per_exit": fp.meta["recipe"]["kept"], "craft": fp.meta["recipe"]["craft"],
                        "digest": fp.digest, "owner_profile": owner_profile, "calibration": fp.meta["calibration"]},
        "accuracy_per_exit": accuracy,
        "results": rows,
        "leave_one_out": {"rows": loo, "false_claims": sum(r["claimed"] for r in loo), "of": len(loo)},
        "seconds": {"zoo_build_or_load": round(build_s, 1), "craft_profile_calibrate": round(craft_s, 1),
                    "total": round(time.time() - started, 1)},
    }
    atomic_write(Path(args.out), (json.dumps(doc, indent=2) + "\n").encode())
    print(f"wrote {args.out}  ({doc['seconds']['total']} s)")


if __name__ == "__main__":
    main()
