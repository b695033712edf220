"""Model DNA on the reuse benchmark's cpu preset (images) or text preset (tiny BERTs, `--preset text`): DNA alone, the old default verdict and the new one
(refitted on the val group with DNA's evidence added) side by side per reuse type on the held-out
test group, with the ablations (no g, no stage 1, cosine instead of the classifier, output views,
number of training lineages). Writes docs/results/dna.json.

  /work/notes/heavy python benchmarks/dna_bench.py --bench /tmp/dna-runs/cpu --train /tmp/dna-runs/cpu-train \\
      [--out docs/results/dna.json] [--ship jaxprov/data/dna/mnist]
  /work/notes/heavy python benchmarks/dna_bench.py --preset text --bench /tmp/dna-runs/text \
      --train /tmp/dna-runs/text-train --only dna no-g no-stage-1 cosine   # -> the "text" section

--bench is the folder of a finished `jaxprov bench reuse --preset cpu --out DIR` (its zoo and reuse.json:
every other method's scores are read from there); --train holds the DNA training zoo (built there if
absent: the cpu protocol from bases and seeds 3xx, no lineage shared with val or test) and one
detector folder per variant. Every detector trains only on the train group; the new default is fitted
on val only; every figure is on test.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import shutil
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

from jaxprov import dna  # noqa: E402
from jaxprov.atomic import atomic_write  # noqa: E402
from jaxprov.bench import dna as bench_dna  # noqa: E402
from jaxprov.bench.evaluation import evaluate, fit_default  # noqa: E402
from jaxprov.bench.presets import PRESETS  # noqa: E402
from jaxprov.bench.protocol import make_recipe  # noqa: E402
from jaxprov.bench.reuse import environment  # noqa: E402
from jaxprov.bench.scoring import Pair, add_evidence, score_pairs  # noqa: E402
from jaxprov.training import recipe as zoo_recipe  # noqa: E402

N_SEEDS = 300


def variants(steps: int, base: dna.Architecture) -> dict[str, tuple[dna.Architecture, dna.TrainConfig, int | None]]:
    """name -> (architecture, training config, number of training bases: None = all)."""
    config = dna.TrainConfig(stage1_steps=steps, stage2_steps=steps)
    return {
        "dna": (base, config, None),
        "view=probs": (dataclasses.replace(base, view="probs"), config, None),
        "view=sorted": (dataclasses.replace(base, view="sorted"), config, None),
        "view=both": (dataclasses.replace(base, view="both"), config, None),
        "no-g": (dataclasses.replace(base, encoder=None), config, None),
        "no-stage-1": (base, dataclasses.replace(config, stage1_steps=0), None),
        "cosine": (dataclasses.replace(base, embedding_hidden=None), config, None),
        "lineages=1": (base, config, 1),
        "lineages=2": (base, config, 2),
    }


def _pairs_from(doc: dict) -> list[Pair]:
    nan = lambda v: math.nan if v is None else float(v)  # noqa: E731
    return [Pair(p["group"], p["reference"], p["suspect"], p["label"], p["reuse"],
                 {m: nan(v) for m, v in p["scores"].items()}, dict(p["evidence"]),
                 {m: [nan(v) for v in vs] for m, vs in p["null"].items()}, nan(p["default"])) for p in doc["pairs"]]


def _subset(data: dna.TrainingSet, entries: dict, n_bases: int | None) -> dna.TrainingSet:
    """The training set with only the first `n_bases` bases' lineages (independents and nulls kept)."""
    if n_bases is None:
        return data
    roots = bench_dna.lineage_roots(entries)
    bases = [n for n in data.names if entries[n]["role"] == "base"][:n_bases]
    keep = [i for i, n in enumerate(data.names) if entries[n]["role"] not in ("base", "positive") or roots[n] in bases]
    names = [data.names[i] for i in keep]
    return dataclasses.replace(data, names=names, logits=[data.logits[i] for i in keep],
                               ancestors={n: data.ancestors[n] for n in names},
                               references=[n for n in data.references if n in names])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--bench", required=True)
    ap.add_argument("--preset", default="cpu", choices=["cpu", "text", "text-ci"],
                    help="the reuse benchmark's preset (text: tiny BERTs; written as the 'text' section of --out)")
    ap.add_argument("--train", required=True)
    ap.add_argument("--out", default=str(ROOT / "docs/results/dna.json"))
    ap.add_argument("--steps", type=int, default=600)
    ap.add_argument("--training-bases", type=int, default=4, help="bases of the DNA training zoo (default 4)")
    ap.add_argument("--only", nargs="*", help="variants to run (default: all)")
    ap.add_argument("--ship", help="copy the main detector here (jaxprov/data/dna/mnist)")
    ap.add_argument("--verdict-out", help="write the new default verdict here (jaxprov/data/verdict.json)")
    ap.add_argument("--detector", help="score this detector as the main row 'dna' instead of training one "
                                       "(the shipped one: jaxprov/data/dna/mnist)")
    args = ap.parse_args()
    t_start = time.perf_counter()
    preset = PRESETS[args.preset]
    bench, train_root = Path(args.bench), Path(args.train)
    doc = json.loads((bench / "reuse.json").read_text())
    recipe = make_recipe(preset)
    models = zoo_recipe.build(recipe, bench / "zoo")
    train_recipe = bench_dna.training_recipe(args.preset, args.training_bases)
    train_models = zoo_recipe.build(train_recipe, train_root / "zoo")
    train_entries = {e["name"]: e for e in train_recipe["models"]}
    roots = bench_dna.lineage_roots({**train_entries, **{e["name"]: e for e in recipe["models"]}})
    eval_roots = {roots[e["name"]] for e in recipe["models"]}
    assert not {roots[n] for n in train_entries} & eval_roots, "training and evaluation lineages overlap"
    t0 = time.perf_counter()
    data = bench_dna.training_set(train_models, train_entries, seeds=preset.seeds)
    spec = next(iter(train_models.values())).input_spec
    record = bench_dna.input_record(spec)
    seconds = {"training_set": round(time.perf_counter() - t0, 1)}
    pairs = _pairs_from(doc)
    old_methods = list(doc["protocol"]["methods"])
    chosen = variants(args.steps, bench_dna.default_architecture(spec))
    if args.only:
        chosen = {k: v for k, v in chosen.items() if k in args.only}
    records = {}
    for name, (arch, config, n_bases) in chosen.items():
        folder = train_root / f"detector-{name}"
        t0 = time.perf_counter()
        subset = _subset(data, train_entries, n_bases)
        if name == "dna" and args.detector:
            folder = args.detector  # a shipped name ("mnist") or a folder, as the verdict will record it
            det = dna.load(folder)
            arch, config = det.arch, dna.TrainConfig(**det.meta["train_config"])
        else:
            det = dna.train(subset, arch, config, out=folder, log=print, name=name,
                            recipe_digest=bench_dna.recipe_digest(train_recipe))
            det.with_params(det.params, **record).save(folder)
        t_train = time.perf_counter() - t0
        t0 = time.perf_counter()
        scoring = dataclasses.replace(preset, methods=("dna",),
                                      method_config={"dna": {"detector": str(folder), "n_seeds": N_SEEDS}})
        scored, _ = score_pairs(models, recipe, scoring, log=lambda line: None)
        by_key = {(p.group, p.reference, p.suspect): p for p in scored}
        method = "dna" if name == "dna" else f"dna[{name}]"
        for p in pairs:
            s = by_key[(p.group, p.reference, p.suspect)]
            p.scores[method], p.null[method] = s.scores["dna"], s.null["dna"]
        if method == "dna":
            main_detector, main_config = det, {"detector": str(folder), "n_seeds": N_SEEDS}
        records[method] = {"architecture": dataclasses.asdict(arch), "train_config": dataclasses.asdict(config),
                           "training_bases": n_bases or "all", "n_training_models": len(subset.names),
                           "seconds": {"train": round(t_train, 1), "score": round(time.perf_counter() - t0, 1)}}
        print(f"{method}: trained in {t_train:.0f} s, scored in {records[method]['seconds']['score']:.0f} s")
        if name == "dna" and args.ship:
            ship = Path(args.ship)
            shutil.rmtree(ship, ignore_errors=True)
            ship.mkdir(parents=True)
            shutil.copytree(folder / "params", ship / "params")
            shutil.copy(folder / "dna.json", ship / "dna.json")
    dna_methods = list(records)
    calibrated = {"dna": main_detector.probability} if "dna" in records else {}
    floors = add_evidence(pairs, old_methods + dna_methods, calibrated)
    test = [p for p in pairs if p.group == "test"]
    results = {m: evaluate(test, m, preset.n_boot) for m in old_methods + dna_methods}
    results["default (old)"] = evaluate(test, "default", preset.n_boot)
    val = [p for p in pairs if p.group == "val"]
    results_val = {m: evaluate(val, m, 200) for m in dna_methods + [m for m in ("weights", "mistakes", "cka")
                                                                     if m in old_methods]}
    verdicts = {}
    for method in [m for m in ("dna",) if m in records]:
        fitting = dataclasses.replace(preset, methods=(*old_methods, method),
                                      method_config={**preset.method_config, method: main_config})
        new = fit_default(pairs, fitting, floors, calibrated=(method,),
                          provenance={"fitted_on": f"benchmarks/dna_bench.py on jaxprov bench reuse --preset "
                                                   f"{args.preset}: val group (DNA trained on the separate train group)"})
        if args.verdict_out:
            new.save(args.verdict_out)
        x = np.asarray([[p.evidence[m] for m in new.methods] for p in test])
        for p, prob in zip(test, new.probabilities(x)):
            p.default = float(prob)
        results["default (new)"] = evaluate(test, "default", preset.n_boot)
        verdicts["default (new)"] = new.to_json()
    out = {"benchmark": "dna", "preset": args.preset, "command": " ".join(["python benchmarks/dna_bench.py", *sys.argv[1:]]),
           "environment": environment(), "n_seeds": N_SEEDS, "steps": args.steps,
           "seconds": {**seconds, "total": round(time.perf_counter() - t_start, 1)},
           "training_zoo": {"recipe": train_recipe["name"], "n_models": len(train_entries),
                            "bases": [n for n, e in train_entries.items() if e["role"] == "base"],
                            "recipe_digest": bench_dna.recipe_digest(train_recipe)},
           "evaluation": {"bench": str(bench), "fitted_on": "val", "reported_on": "test",
                          "n_pairs": {"val": sum(p.group == "val" for p in pairs), "test": len(test)}},
           "variants": records, "results": results, "results_val": results_val, "verdicts": verdicts}
    if args.preset != "cpu":  # a section of its own beside the image (cpu) results
        whole = json.loads(Path(args.out).read_text()) if Path(args.out).is_file() else {}
        out = {**whole, args.preset: out}
    atomic_write(Path(args.out), (json.dumps(out, indent=1, allow_nan=False) + "\n").encode())
    rows = [t for t in [*doc["protocol"]["reuse_types"], "overall"] if t in results["default (old)"]]
    show = [m for m in ["default (old)", "default (new)", *dna_methods] if m in results]
    print(markdown(results, rows, show))
    best = max(old_methods, key=lambda m: results[m]["overall"]["auc"])
    print(f"\nbest single existing method overall: {best} {results[best]['overall']['auc']:.2f} / "
          f"{results[best]['overall']['tpr_at_1pct_fpr']:.2f}")


def markdown(results: dict, rows: list[str], methods: list[str]) -> str:
    """AUC / TPR at 1 % FPR per reuse type (rows) and method (columns), as a markdown table."""
    lines = ["| reuse type | n pos | " + " | ".join(methods) + " |", "|---|---:|" + "---:|" * len(methods)]
    for t in rows:
        n_pos = next(results[m][t]["n_pos"] for m in methods if t in results[m])
        cells = [f"{results[m][t]['auc']:.2f} / {results[m][t]['tpr_at_1pct_fpr']:.2f}" if t in results[m] else "–"
                 for m in methods]
        lines.append(f"| {t} | {n_pos} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
