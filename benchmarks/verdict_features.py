"""How should the default verdict turn similarities into features? Compare designs on a reuse run.

Reads the reuse.json of `jaxprov bench reuse` (every pair keeps its raw scores and its arch-matched
null scores), fits the non-negative logistic model on the val group with each feature design and
each method subset, and prints held-out (test group) AUC overall, the mean AUC over the
extraction/distillation types, and the worst reuse type.

  python benchmarks/verdict_features.py RUN/reuse.json

Designs: "evidence" (what ships: signed log of MAD-scaled distance above the null median, the
MAD floored by the method's median null spread on val), "evidence-no-floor" (the same, floored at
verdict.SPREAD_FLOOR only),
"minus-median" (s - median(null)), "minus-max" (s - max(null)), "raw" (s itself: not comparable
across domains or architectures, so it is measured here, not shipped).
"""

from __future__ import annotations

import json
import sys

import numpy as np

from jaxprov import verdict as V
from jaxprov.metrics import roc_auc


def feature(score, null, design, floor):
    null = [v for v in null if v is not None]
    if score is None or len(null) < 2:
        return 0.0
    if design == "evidence":
        return V.evidence(score, null, floor)
    if design == "evidence-no-floor":
        return V.evidence(score, null)
    if design == "minus-median":
        return score - float(np.median(null))
    if design == "minus-max":
        return score - max(null)
    return score


def main(path: str) -> None:
    doc = json.loads(open(path).read())
    methods = doc["protocol"]["methods"]
    pairs = doc["pairs"]
    val = [p for p in pairs if p["group"] == "val"]
    test = [p for p in pairs if p["group"] == "test"]
    floors = V.spread_floors({m: [[np.nan if v is None else v for v in p["null"][m]] for p in val] for m in methods})
    subsets = [methods, [m for m in methods if m not in ("weights", "ipguard")], ["gradient_field", "cka"]]
    print(f"{'design':14s} {'methods':44s} {'overall':>8s} {'extract':>8s} {'worst':>6s}  weights")
    for design in ("evidence", "evidence-no-floor", "minus-median", "minus-max", "raw"):
        for subset in subsets:
            def rows(ps):
                return np.asarray([[feature(p["scores"][m], p["null"][m], design, floors[m]) for m in subset] for p in ps])

            v = V.fit(rows(val), np.asarray([p["label"] for p in val]), subset)
            prob = v.probabilities(rows(test))
            labels = np.asarray([p["label"] for p in test])
            neg = prob[labels == 0]
            per = {t: roc_auc(prob[[p["label"] == 1 and p["reuse"] == t for p in test]], neg)
                   for t in sorted({p["reuse"] for p in test if p["label"]})}
            extract = np.mean([a for t, a in per.items() if "extract" in t or "distill" in t])
            print(f"{design:14s} {','.join(subset):44s} {roc_auc(prob[labels == 1], neg):8.3f} {extract:8.3f} "
                  f"{min(per.values()):6.2f}  {np.round(v.weights, 2).tolist()}")


if __name__ == "__main__":
    main(sys.argv[1])
