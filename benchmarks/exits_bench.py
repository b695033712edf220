"""Timing fingerprints of multi-exit models, measured: per multi-exit arch, a zoo (an owner, its fine-tuned,
pruned, adversarially trained and distilled children, independents) built by the zoo builder, a
fingerprint of the owner, and verification of every suspect from response times alone, in process
and over HTTP against `jaxprov serve` (one subprocess per served model), against the label-agreement
baseline (IPGuard-style). Writes one JSON document (default docs/results/exits.json).

  /work/notes/heavy python benchmarks/exits_bench.py --root /tmp/exits-zoo [--out docs/results/exits.json]
  python benchmarks/exits_bench.py --size device --out docs/results/device/exits.json   # a GPU (device_suite.sh)
  python benchmarks/exits_bench.py --size smoke --out /tmp/exits-smoke.json             # tiny, any CPU

Sizes (`SIZES`): cpu, the small `cnn_exits` on MNIST, every suspect also over HTTP; device, the SDN
CIFAR families (ResNet-56, VGG-16-BN, MobileNet) on MNIST at 32x32x3; smoke, cnn_exits at a tiny
size. Calibration: the first half of the independents is the null the fingerprint is calibrated on,
the rest are scored negatives; and every independent is also verified against a null of the others
(leave-one-out, by the verifier's beta-binomial test, with the earlier binomial at the largest null
rate beside it), which counts false ownership claims at the calibrated threshold. Each in-process
row also records what the verifier cannot see: the share of samples that really stop where the
fingerprint expects (`stops_as_expected`) and the share whose time level is their real stop
(`levels_right`), which tell a changed model from timing noise.
"""

from __future__ import annotations

import argparse
import dataclasses
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

@dataclasses.dataclass(frozen=True)
class Size:
    """One size of the benchmark: which multi-exit archs, how their zoo trains and how much is timed."""

    archs: tuple[str, ...]
    epochs: dict  # per entry kind: owner, finetuned, pruned (its fine-tuning), adversarial, distilled, independent
    batch: int
    children: tuple[str, ...]  # of finetuned, pruned, adversarial, distilled
    independents: int  # the first half calibrate, the rest are scored negatives
    per_exit: int
    seeds_per_exit: int
    repeats: int  # in-process queries per sample
    http_repeats: int
    http: tuple[str, ...] | None  # the suspects also verified over HTTP (None: every one)
    slowdowns: bool = True  # also the owner under other thresholds and on a simulated slower machine
    independent_data: str = "mnist:base"
    craft_steps: int = craft.CraftConfig.steps
    owner_copies: int = 0  # the owner's own pruned copies (on its own data) crafting ranks robustness on
    decoys: int = 0  # independents crafting selects against (never calibrated on, never scored)
    assign: str = craft.CraftConfig.assign  # how seeds get their target exits (craft.assign_targets)
    pool: int = craft.CraftConfig.pool  # seeds ranked per seed crafted


CHILDREN = ("finetuned", "pruned", "adversarial", "distilled")
EPOCHS = {"owner": 6, "finetuned": 3, "pruned": 2, "adversarial": 3, "distilled": 8, "independent": 6}
SIZES = {
    # The 2-core CPU: the small multi-exit CNN on MNIST (docs/results/exits.json): twelve independents (a null
    # of six), two of the owner's own pruned copies for the robustness ranking.
    "cpu": Size(("cnn_exits",), EPOCHS, 32, CHILDREN, 12, 20, 60, 60, 60, None, owner_copies=2),
    # A lent GPU (benchmarks/device_suite.sh): the SDN CIFAR families on MNIST at 32x32x3.
    "device": Size(("sdn_resnet56", "sdn_vgg16_bn", "sdn_mobilenet"),
                   {"owner": 4, "finetuned": 2, "pruned": 1, "adversarial": 2, "distilled": 4, "independent": 4}, 64,
                   CHILDREN, 4, 20, 30, 60, 60, ("owner", "independent2")),
    # The same code at a tiny size, for tests/test_device_suite.py on a CPU.
    "smoke": Size(("cnn_exits",), {"owner": 2, "finetuned": 1, "independent": 1}, 64, ("finetuned",), 3, 5, 10, 4, 6,
                  ("owner",), slowdowns=False, independent_data="mnist:query", craft_steps=30),
}
THRESHOLD = 0.9


def recipe_for(arch: str, size: Size) -> dict:
    """The zoo of one arch: an owner, its children and independents, as a zoo builder recipe."""
    common, e = {"batch": size.batch}, size.epochs
    children = {
        "finetuned": {"name": "finetuned", "op": "finetune", "parent": "owner", "data": "mnist:finetune", "seed": 2,
                      "epochs": e["finetuned"], "lr": 5e-4, **common},
        "pruned": {"name": "pruned", "op": "prune", "parent": "owner", "fraction": 0.5, "data": "mnist:finetune",
                   "seed": 3, "finetune_epochs": e.get("pruned", 0), "lr": 1e-3, **common},
        "adversarial": {"name": "adversarial", "op": "finetune", "parent": "owner", "data": "mnist:finetune", "seed": 4,
                        "epochs": e.get("adversarial", 0), "lr": 1e-3, "adversarial": {"eps": 0.3, "steps": 3},
                        **common},
        "distilled": {"name": "distilled", "op": "distill", "parent": "owner", "arch": arch, "data": "mnist:query",
                      "seed": 5, "epochs": e.get("distilled", 0), "temperature": 4.0, "lr": 2e-3, **common},
    }
    return {
        "name": "exits-bench" if arch == "cnn_exits" else f"exits-bench-{arch}",
        "description": "multi-exit MNIST zoo of benchmarks/exits_bench.py",
        "models": [
            {"name": "owner", "op": "train_exits", "arch": arch, "data": "mnist:base", "seed": 1, "epochs": e["owner"],
             "lr": 2e-3, **common},
            *(children[c] for c in size.children),
            *({"name": f"independent{i}", "op": "train_exits", "arch": arch, "data": size.independent_data,
               "seed": 11 + i, "epochs": e["independent"], "lr": 2e-3, **common} for i in range(size.independents)),
            # The owner's side of crafting: its own copies (pruned as a thief might, on the owner's own data,
            # not the children's mnist:finetune) and decoys (independents like the null, other seeds).
            *({"name": f"owner-copy{i}", "op": "prune", "parent": "owner", "fraction": 0.5, "data": "mnist:base",
               "seed": 201 + i, "finetune_epochs": 2, "lr": 1e-3, **common} for i in range(size.owner_copies)),
            *({"name": f"decoy{i}", "op": "train_exits", "arch": arch, "data": size.independent_data,
               "seed": 31 + i, "epochs": e["independent"], "lr": 2e-3, **common} for i in range(size.decoys)),
        ],
    }


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


def _row(kind, transport, result: verify.Verification, seconds: float, truth: np.ndarray | None,
         expected: np.ndarray) -> dict:
    row = {"suspect": kind, "transport": transport, "match": result.timing.score, "p_value": result.timing.p_value,
           "null": {"p0": result.timing.p0, "rho": result.timing.rho, "model": result.timing.null_model},
           "verdict": result.verdict, "label_agreement": result.labels.score, "label_p_value": result.labels.p_value,
           "label_verdict": result.labels.verdict, "centres_ms": [c * 1e3 for c in result.centres_s],
           "quantile": result.quantile, "split_half_agreement": result.agreement,
           "seconds": round(seconds, 1)}
    if truth is not None:  # what the verifier cannot see: where the suspect really stopped
        row["stops_as_expected"] = float(np.mean(truth == expected))
        row["levels_right"] = float(np.mean(np.asarray(result.levels) == truth))
    return row


def true_stops(model, threshold: float, samples) -> np.ndarray:
    early = staged.EarlyExit(model, threshold)
    return np.asarray([early(x).stop for x in samples])


def run_arch(arch: str, size: Size, root: Path, args, log) -> dict:
    """Build one arch's zoo, fingerprint its owner and verify every suspect; -> that arch's document."""
    started = time.time()
    recipe = recipe_for(arch, size)
    zoo = zoo_recipe.build(recipe, root, progress=lambda n, a: log(f"  {arch}: {a} {n}"))
    build_s = time.time() - started
    spec = zoo["owner"].input_spec
    x_test, y_test = datasets.inputs("mnist:test", spec)
    accuracy = {name: np.mean(np.argmax(np.asarray(m.features(m.params, x_test)[EXITS]), -1) == y_test[:, None],
                              axis=0).round(4).tolist() for name, m in zoo.items()}
    independents = [f"independent{i}" for i in range(size.independents)]
    null, negatives = independents[:size.independents // 2 or 1], independents[size.independents // 2 or 1:]
    repeats = args.repeats or size.repeats
    http_repeats = args.http_repeats or size.http_repeats

    t = time.time()
    config = craft.CraftConfig(per_exit=size.per_exit, seeds_per_exit=size.seeds_per_exit, steps=size.craft_steps,
                               assign=size.assign, pool=size.pool)
    copies = [zoo[f"owner-copy{i}"] for i in range(size.owner_copies)]
    decoys = [zoo[f"decoy{i}"] for i in range(size.decoys)]
    fp = make.make(zoo["owner"], "mnist:test", THRESHOLD, config, jax.random.PRNGKey(0), [zoo[n] for n in null],
                   repeats, copies=copies, decoys=decoys)
    craft_s = time.time() - t
    fp.save(root / "owner.fingerprint.npz")
    log(f"{arch} fingerprint: {fp.n} samples, kept {fp.meta['recipe']['kept']}, robust {fp.meta['recipe']['robust']}, "
        f"decoy hits {fp.meta['recipe']['decoy_hits']}, calibration {fp.meta['calibration']}")

    rows, truth = [], {}

    def run(kind, suspect, truth_of=None, transport="in-process", n_repeats=repeats):
        t0 = time.time()
        result = verify.verify(fp, suspect, n_repeats)
        rows.append(_row(kind, transport, result, time.time() - t0, truth_of, fp.stops))
        r = rows[-1]
        log(f"  {arch} {transport:10s} {kind:28s} match {r['match']:.3f} p {r['p_value']:.2g} {r['verdict']:14s} "
            f"stops as expected {r.get('stops_as_expected', float('nan')):.3f} levels right "
            f"{r.get('levels_right', float('nan')):.3f} labels {r['label_agreement']:.3f} {r['label_verdict']}")

    suspects = ["owner", *size.children, *negatives]
    for name in suspects:
        truth[name] = true_stops(zoo[name], THRESHOLD, fp.samples)
        run(name, verify.InProcessSuspect(zoo[name], THRESHOLD), truth[name])
    if size.slowdowns:
        for q in (0.8, 0.95):
            run(f"owner, threshold {q}", verify.InProcessSuspect(zoo["owner"], q),
                true_stops(zoo["owner"], q, fp.samples))
        owner_profile = fp.meta["profile"]
        gap = float(np.median(np.diff([m for m in owner_profile["median_s"] if m is not None])))
        for factor, jitter in ((2.0, 0.0), (2.0, 0.5 * gap), (2.0, gap)):
            suspect = verify.SlowedSuspect(verify.InProcessSuspect(zoo["owner"], THRESHOLD), factor, jitter, seed=1)
            run(f"owner, {factor:g}x slower + jitter {jitter * 1e3:.3f} ms", suspect, truth["owner"])
    for name in [n for n in suspects if size.http is None or n in size.http]:
        process, url = _served(root / name, THRESHOLD)
        try:
            run(name, client.HttpSuspect(url), truth[name], "http", http_repeats)
        finally:
            process.terminate()
            process.wait(timeout=30)

    # Leave-one-out over every independent: each verified against a null of the others.
    null_scores = {name: verify.score(fp, *verify.measure(verify.InProcessSuspect(zoo[name], THRESHOLD), fp.samples,
                                                          repeats))[:2] for name in independents}
    loo = []
    for name in independents:
        others = [null_scores[o][0] for o in independents if o != name]
        test = verify.null_test(null_scores[name][0], fp.n, others)
        binomial = verify.null_test(null_scores[name][0], fp.n, others, null_model="binomial")
        loo.append({"suspect": name, "match": null_scores[name][0], "p0": test.p0, "rho": test.rho,
                    "p_value": test.p_value, "claimed": bool(test.p_value < verify.ALPHA),
                    "binomial_max_p_value": binomial.p_value,
                    "binomial_max_claimed": bool(binomial.p_value < verify.ALPHA)})
    return {
        "arch": arch, "threshold": THRESHOLD, "recipe": recipe, "alpha": verify.ALPHA,
        "repeats": {"in_process": repeats, "http": http_repeats},
        "fingerprint": {"n": fp.n, "kept_per_exit": fp.meta["recipe"]["kept"], "craft": fp.meta["recipe"]["craft"],
                        "robust_per_exit": fp.meta["recipe"]["robust"], "decoy_hits_per_exit": fp.meta["recipe"]["decoy_hits"],
                        "copies": [c.name for c in copies], "decoys": [d.name for d in decoys],
                        "digest": fp.digest, "owner_profile": fp.meta["profile"],
                        "calibration": fp.meta["calibration"]},
        "accuracy_per_exit": accuracy,
        "results": rows,
        "leave_one_out": {"rows": loo, "false_claims": sum(r["claimed"] for r in loo), "of": len(loo),
                          "binomial_max_false_claims": sum(r["binomial_max_claimed"] for r in loo)},
        "seconds": {"zoo_build_or_load": round(build_s, 1), "craft_profile_calibrate": round(craft_s, 1),
                    "total": round(time.time() - started, 1)},
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--size", choices=sorted(SIZES), default="cpu")
    parser.add_argument("--arch", action="append", help="only these archs (repeatable; default: the size's)")
    parser.add_argument("--root", default="/tmp/jaxprov-exits-bench", help="zoo folders (reused on a rerun)")
    parser.add_argument("--out", default=str(ROOT / "docs/results/exits.json"))
    parser.add_argument("--repeats", type=int, help="in-process queries per sample (default: the size's)")
    parser.add_argument("--http-repeats", type=int, help="HTTP queries per sample (default: the size's)")
    parser.add_argument("--owner-copies", type=int, help="the owner's own pruned copies crafting ranks on (default: "
                                                         "the size's)")
    parser.add_argument("--decoys", type=int, help="independents crafting selects against (default: the size's)")
    parser.add_argument("--assign", choices=craft.ASSIGN, help="target assignment of the seeds (default: the size's)")
    parser.add_argument("--pool", type=int, help="seeds ranked per seed crafted (default: the size's)")
    parser.add_argument("--independents", type=int, help="independents, the first half the null (default: the size's)")
    args = parser.parse_args()
    size = SIZES[args.size]
    overrides = {field: getattr(args, field) for field in ("owner_copies", "decoys", "assign", "pool", "independents")
                 if getattr(args, field) is not None}
    size = dataclasses.replace(size, **overrides)
    started = time.time()
    doc = {
        "command": "python benchmarks/exits_bench.py " + " ".join(sys.argv[1:]), "size": args.size,
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "jax_backend": jax.default_backend(),
                    "device": jax.devices()[0].device_kind, "load_average_at_start": os.getloadavg()},
        "versions": {"jaxprov": __version__, "jax": jax.__version__, "python": platform.python_version()},
        "archs": {}, "errors": {},
    }

    def log(line):
        print(line, flush=True)

    for arch in args.arch or size.archs:
        # Each arch's figures are written as soon as it ends, so a time limit keeps the finished ones.
        try:
            doc["archs"][arch] = run_arch(arch, size, Path(args.root) / arch, args, log)
        except KeyboardInterrupt:  # the device suite's time limit (SIGINT): record it, keep the finished archs
            doc["errors"][arch] = f"interrupted after {time.time() - started:.0f} s (a time limit?)"
            log(f"{arch}: {doc['errors'][arch]}")
            doc["seconds"] = round(time.time() - started, 1)
            atomic_write(Path(args.out), (json.dumps(doc, indent=2) + "\n").encode())
            sys.exit(130)
        except Exception as err:  # noqa: BLE001 - one arch failing (e.g. out of memory) keeps the others
            doc["errors"][arch] = f"{type(err).__name__}: {err}"
            log(f"{arch}: {doc['errors'][arch]}")
        doc["seconds"] = round(time.time() - started, 1)
        atomic_write(Path(args.out), (json.dumps(doc, indent=2) + "\n").encode())
    print(f"wrote {args.out}  ({doc['seconds']} s)")
    if doc["errors"]:
        sys.exit(1)


if __name__ == "__main__":
    main()
