"""MAP tuning runs on one domain pair: each MapConfig variant measured against the same source, the
way docs/results.md's "MAP tuning" table was made (changes are tried on one pair before the whole
benchmark is rerun). Appends one row per variant to --out (docs/results/map_tuning.json).

    PYTHONPATH=. python benchmarks/map_tune.py [--pair mnistm:mnist] [--setting source-available]
        [--synth '{"steps": 200, "jitter": 2}'] [--attack] --cfg '{"steps": 300, "alpha": 1.0}' [--cfg ...]

The source and splits are map_bench.py's (its train_source and split: lenet_bn, 4 epochs, key 1, on
the authorised training split), the mask key its first pair's (PRNGKey(map_bench.MASK_KEY)); a cfg
with "steps_list": [600, 1200] measures one run at each length (a checkpoint continues the shorter run). --attack adds the 1 % labelled fine-tuning of
the protected model (100 steps) and, once, of a fresh init (the attack's floor). --trace records the
test accuracies of every recorded step's mask (every 25 steps) beside its held-out figures, and
(BatchNorm models) its unauthorised test accuracy after recalibrating BatchNorm on 1 % of the
unauthorised training split, unlabelled ("recalibrated"); --attack adds that recalibration on 1 %
and on all of it ("recal"). --labels
gives the held-out choice the training data's labels (without it, it reads the source's answers).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import jax

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import jaxprov  # noqa: E402
import map_bench  # noqa: E402  (this script's folder is first on sys.path)
from jaxprov import atomic, datasets, models, protect, store  # noqa: E402
from jaxprov.protect import attacks  # noqa: E402
from jaxprov.training.loop import accuracy  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--pair", default="mnistm:mnist")
    ap.add_argument("--setting", default="source-available", choices=protect.SETTINGS)
    ap.add_argument("--cfg", action="append", default=[], help="JSON MapConfig overrides (batch 128 unless given)")
    ap.add_argument("--synth", default="{}", help="JSON SynthConfig overrides (n 512, steps 100 unless given)")
    ap.add_argument("--attack", action="store_true")
    ap.add_argument("--trace", action="store_true", help="the test accuracies of every recorded step's mask (every "
                                                         "25 steps), beside its held-out figures, in the row")
    ap.add_argument("--labels", action="store_true", help="give the held-out choice (select_n) the data's labels "
                                                          "(source-available: both domains; source-free: the "
                                                          "unauthorised one)")
    ap.add_argument("--cache", default=str(Path(tempfile.gettempdir()) / "map-tune"), help="source models kept here")
    ap.add_argument("--out", default=str(ROOT / "docs" / "results" / "map_tuning.json"))
    args = ap.parse_args()
    a, u = args.pair.split(":")
    spec = models.create(map_bench.ARCH)[2]
    split = map_bench.split
    xa, ya = datasets.inputs(split(a, "train"), spec)
    xu, yu = datasets.inputs(split(u, "train"), spec)
    ta, tu = datasets.inputs(split(a, "test"), spec), datasets.inputs(split(u, "test"), spec)
    cache = Path(args.cache) / f"src-{a}-e{map_bench.SOURCE_EPOCHS}"
    if cache.exists():
        src = jaxprov.load(cache)
    else:
        src = map_bench.train_source(a, xa, ya)
        try:
            store.save_model(src, cache)
        except jaxprov.JaxprovError:  # a run started beside this one cached it first: the same source
            if not cache.exists():
                raise
    ev = attacks.evaluator({"authorised": ta, "unauthorised": tu})
    common = {"pair": args.pair, "setting": args.setting, "synth": json.loads(args.synth), "labels": args.labels,
              "command": " ".join(["python", "benchmarks/map_tune.py", *sys.argv[1:]]),
              "machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "load": os.getloadavg()[0]}}
    rows = []

    def recalibrated(model):  # the unauthorised test accuracy after BatchNorm recalibration on 1 % (unlabelled)
        if not protect.synth.has_batchnorm(model):
            return {}
        (r,) = attacks.recalibrate_unauthorised(model, xu, (0.01,), jax.random.PRNGKey(9),
                                                attacks.evaluator({"unauthorised": tu}))
        return {"recalibrated": r["unauthorised"]}
    if args.attack:
        (fresh,) = attacks.fresh_reference(src, xu, yu, (0.01,), jax.random.PRNGKey(9), ev, steps=100)
        rows.append({**common, "variant": "fresh init, 1 % fine-tuning", "ft1": fresh})
        print(json.dumps(rows[-1]), flush=True)
    for c in args.cfg:
        kw = json.loads(c)
        checkpoint = Path(args.cache) / ("ck-" + hashlib.sha256((c + args.pair + args.setting + args.synth
                                                                 + ("labels" if args.labels else "")).encode())
                                         .hexdigest()[:16] + ".npz")
        for steps in kw.pop("steps_list", [kw.get("steps", protect.MapConfig().steps)]):
            cfg = protect.MapConfig(**{"batch": 128, **kw, "steps": steps})
            t0 = time.time()
            steps_seen = []

            def trace(row, masks):
                masked = src.replace(params=protect.masks.apply(src.params, masks))
                steps_seen.append({"step": row["step"], "authorised": accuracy(masked, *ta),
                                   "unauthorised": accuracy(masked, *tu), **recalibrated(masked),
                                   **{k: v for k, v in row.items() if k.startswith("held_")}})
            r = protect.protect(src, args.setting, jax.random.PRNGKey(map_bench.MASK_KEY), cfg, checkpoint=checkpoint,
                                synth_config=protect.SynthConfig(**{"n": 512, "steps": 100, **json.loads(args.synth)}),
                                trace=trace if args.trace else None,
                                **map_bench.setting_data(args.setting, (xa, ya), (xu, yu), args.labels))
            e = protect.evaluate(src, r.model, ta, tu)
            row = {**common, "variant": {**kw, "steps": steps}, "density": r.run.density,
                   "seconds": round(time.time() - t0), **{k: e[k] for k in (
                       "authorised_before", "authorised_after", "unauthorised_before", "unauthorised_after", "st_d")}}
            if r.run.selected is not None:
                row["selected"] = r.run.selected
            if args.trace:  # a resumed run traces the steps after its checkpoint only
                row["trace"] = steps_seen
            if args.attack:
                (row["ft1"],) = attacks.finetune_unauthorised(r.model, xu, yu, (0.01,), jax.random.PRNGKey(9), ev,
                                                              steps=100)
                row["recal"] = attacks.recalibrate_unauthorised(r.model, xu, (0.01, 1.0), jax.random.PRNGKey(9), ev)
            rows.append(row)
            print(json.dumps(row), flush=True)
    out = Path(args.out)
    old = json.loads(out.read_text()) if out.exists() else {"benchmark": "map_tuning", "rows": []}
    old["rows"] += rows
    atomic.atomic_write(out, (json.dumps(old, indent=2) + "\n").encode())
    return 0


if __name__ == "__main__":
    sys.exit(main())
