"""`jaxprov bench reuse`: a model-reuse detection benchmark that jaxprov builds, scores and reports.

The zoo (a declarative recipe, built by `jaxprov.zoo.recipe`) has two groups, "val" and "test",
made from DIFFERENT base models. In each group:

  bases          trained from scratch on MNIST's base split, one per (arch, seed) of the preset
  positives      every reuse type derived from each base (REUSE_TYPES below)
  independents   same arch other seed, other arch, other data (sklearn digits) ...
  their children fine-tuned / extracted copies of the independents (a child of X is a negative for Y)
  nulls          more independent models, never scored: the null distribution that turns a
                 method's similarity into evidence (`jaxprov.verdict.evidence`)

A *pair* is (reference R, suspect S) with R a base or an independent of the group and S any other
non-null model of the group; it is positive exactly when R is an ancestor of S. Each method scores
every pair; per reuse type we report ROC AUC (that type's positives against all of the group's
negatives), TPR at 1 % FPR, and ModelDiff's correctness (S's true parent scores above every unrelated
reference), with seeded bootstrap 95 % intervals.

The default verdict (a logistic model over every method's evidence) is fitted on the val group
only and reported on the test group only, so it is never scored on what it was fitted on. Single
methods have nothing to fit; their figures are reported on the same test group, and on all pairs.

Probes never look at an evaluation model: DDV twins, IPGuard boundary points and the reference's
mistakes are generated on the reference (the model owner's own model); every seed and anchor is
drawn by a fixed key from MNIST's held-out "test" split, which no zoo model trained on and no
attacker queried.
"""

from __future__ import annotations

import math
import os
import platform
import sys
import time
from pathlib import Path
from typing import Callable

import jax
import numpy as np

from jaxprov.bench import report
from jaxprov.bench.evaluation import evaluate, fit_default
from jaxprov.bench.presets import GROUPS, PRESETS
from jaxprov.bench.protocol import make_recipe
from jaxprov.bench.scoring import add_evidence, score_pairs
from jaxprov.cache import SignatureCache
from jaxprov.errors import JaxprovError
from jaxprov.training import recipe as zoo_recipe
from jaxprov.version import __version__


def run(preset_name: str, out: str | Path, log: Callable[[str], None] = print, command: str | None = None) -> dict:
    """Build the preset's zoo (resumably) under OUT/zoo, score it, fit the default verdict on val,
    evaluate everything on test, and write OUT/reuse.json, OUT/reuse.md, OUT/roc/*.png,
    OUT/heatmap_*.png and OUT/verdict.json. Returns the JSON document."""
    if preset_name not in PRESETS:
        raise JaxprovError(f"unknown preset {preset_name!r}; choose one of: {', '.join(PRESETS)}")
    preset = PRESETS[preset_name]
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    recipe = make_recipe(preset)
    cache = SignatureCache(out / "store")
    timings: dict[str, float] = {}

    t0 = time.perf_counter()
    log(f"[1/3] zoo: {len(recipe['models'])} models (resumable) -> {out / 'zoo'}")
    models = zoo_recipe.build(recipe, out / "zoo", cache=cache)
    timings["zoo"] = round(time.perf_counter() - t0, 1)

    t0 = time.perf_counter()
    log(f"[2/3] scoring with {', '.join(preset.methods)}")
    pairs, matrices = score_pairs(models, recipe, preset, cache=cache, log=log)
    timings["scoring"] = round(time.perf_counter() - t0, 1)

    t0 = time.perf_counter()
    log("[3/3] default verdict (fitted on val) and metrics (on test)")
    floors = add_evidence(pairs, preset.methods)
    default = fit_default(pairs, preset, floors)
    test = [p for p in pairs if p.group == "test"]
    x_test = np.asarray([[p.evidence[m] for m in preset.methods] for p in test])
    for p, prob in zip(test, default.probabilities(x_test) if test else []):
        p.default = float(prob)
    results = {m: evaluate(test, m, preset.n_boot) for m in [*preset.methods, "default"]}
    results_all = {m: evaluate(pairs, m, preset.n_boot) for m in preset.methods}
    timings["evaluation"] = round(time.perf_counter() - t0, 1)

    entries = {e["name"]: e for e in recipe["models"]}
    doc = {
        "benchmark": "reuse", "preset": preset.name,
        "command": command or f"jaxprov bench reuse --preset {preset.name}",
        "environment": environment(), "seconds": timings,
        "protocol": {"groups": {g: {"bases": [n for n, e in entries.items() if e["group"] == g and e["role"] == "base"],
                                    "models": sum(e["group"] == g for e in entries.values()),
                                    "nulls": [n for n, e in entries.items() if e["group"] == g and e["role"] == "null"]}
                                for g in GROUPS},
                     "reuse_types": preset.reuses(), "methods": list(preset.methods),
                     "method_config": {k: dict(v) for k, v in preset.method_config.items()},
                     "stages": {k: dict(v) for k, v in preset.stages.items()}, "seeds": preset.seeds,
                     "adversarial": dict(preset.adversarial), "n_boot": preset.n_boot,
                     "verdict_fitted_on": "val", "reported_on": "test"},
        "n_pairs": {"val": sum(p.group == "val" for p in pairs), "test": len(test), "total": len(pairs)},
        "results": results,
        "results_all_pairs": results_all,
        "verdict": default.to_json(),
        "accuracy": {n: (models[n].meta.get("accuracy") or {}) for n in entries},
        "pairs": [{"group": p.group, "reference": p.reference, "suspect": p.suspect, "label": p.label,
                   "reuse": p.reuse, "scores": {m: _num(v) for m, v in p.scores.items()},
                   "evidence": p.evidence, "null": {m: [_num(v) for v in vs] for m, vs in p.null.items()},
                   "default": _num(p.default)} for p in pairs],
    }
    report.write(out, doc, pairs, matrices)
    default.save(out / "verdict.json")
    return doc


def _num(v: float):
    return None if v is None or (isinstance(v, float) and math.isnan(v)) else float(v)


def environment() -> dict:
    """The versions, platform and device a run was measured on."""
    import flax
    import optax

    devices = jax.devices()
    return {"python": sys.version.split()[0], "jax": jax.__version__, "flax": flax.__version__,
            "optax": optax.__version__, "jaxprov": __version__, "platform": platform.platform(),
            "backend": jax.default_backend(), "device": str(devices[0].device_kind) if devices else "none",
            "n_devices": len(devices), "cpu_count": os.cpu_count()}
