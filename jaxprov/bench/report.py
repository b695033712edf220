"""Files of a reuse-benchmark run: reuse.json (every figure and every scored pair), reuse.md (the
table), roc/<reuse type>.png (ROC curves of every method on the held-out group) and heatmap_<group>.png
(the gradient-field similarity of the group's zoo). Every file is written atomically."""

from __future__ import annotations

import io
import json
import math
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from jaxprov.atomic import atomic_write
from jaxprov.bench.evaluation import pair_scores
from jaxprov.report import heatmap_png

HEATMAP_METHOD = "gradient_field"


def _fmt(value, ci=None) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    text = f"{value:.2f}"
    if ci:
        text += f" [{ci[0]:.2f}, {ci[1]:.2f}]"
    return text


def markdown(doc: Mapping) -> str:
    """The headline tables: per reuse type, each method's AUC, TPR at 1 % FPR and correctness."""
    results = doc["results"]
    methods = ["default", *[m for m in results if m != "default"]]
    types = [t for t in [*doc["protocol"]["reuse_types"], "overall"] if any(t in results[m] for m in methods)]
    env = doc["environment"]
    lines = [f"# Reuse benchmark, preset `{doc['preset']}`", "",
             f"Command: `{doc['command']}`  ",
             f"Device: {env['device']} ({env['backend']}, {env['n_devices']} device(s), {env['cpu_count']} CPU cores); "
             f"jax {env['jax']}, flax {env['flax']}, jaxprov {env['jaxprov']}  ",
             f"Time: zoo {doc['seconds']['zoo']} s, scoring {doc['seconds']['scoring']} s, "
             f"evaluation {doc['seconds']['evaluation']} s  ",
             f"Pairs: {doc['n_pairs']['val']} val (fits the default verdict), {doc['n_pairs']['test']} test "
             f"(every figure below); bases val {', '.join(doc['protocol']['groups']['val']['bases'])}; "
             f"test {', '.join(doc['protocol']['groups']['test']['bases'])}", ""]
    for metric, title in (("auc", "ROC AUC"), ("tpr_at_1pct_fpr", "TPR at 1 % FPR"),
                          ("correctness", "Correctness (true parent above every unrelated reference)")):
        lines += [f"## {title} — held-out test group", "",
                  "| reuse type | n pos | " + " | ".join(methods) + " |",
                  "|---|---:|" + "---:|" * len(methods)]
        for t in types:
            n_pos = next((results[m][t]["n_pos"] for m in methods if t in results[m]), 0)
            cells = [_fmt(results[m].get(t, {}).get(metric)) for m in methods]
            lines.append(f"| {t} | {n_pos} | " + " | ".join(cells) + " |")
        lines.append("")
    n_neg = next(iter(results["default"].values()))["n_neg"] if results["default"] else 0
    lines += [f"Negatives per row: {n_neg} (TPR at 1 % FPR then allows "
              f"{math.floor(0.01 * n_neg + 1e-9)} false positive(s)). 95 % bootstrap intervals are in reuse.json.",
              "", "## Default verdict", "",
              "Logistic model over each method's evidence (signed log of null spreads above the null median, "
              "each spread at least the method's floor: its median null spread on val), fitted on the val group:", "",
              "| method | weight | floor |", "|---|---:|---:|"]
    v = doc["verdict"]
    floors = v.get("floors", {})
    lines += [f"| {m} | {w:+.3f} | {floors.get(m, float('nan')):.4f} |" for m, w in zip(v["methods"], v["weights"])]
    lines += [f"| (bias) | {v['bias']:+.3f} | |", ""]
    return "\n".join(lines)


def roc_png(title: str, curves: Mapping[str, tuple[np.ndarray, np.ndarray]]) -> bytes:
    """ROC curves (one per method) as PNG bytes; curves: method -> (positive scores, negative scores)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(5.2, 4.6), dpi=110, layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    for method, (pos, neg) in curves.items():
        fpr, tpr = _roc(pos, neg)
        ax.plot(fpr, tpr, lw=2.2 if method == "default" else 1.2, label=method,
                color="black" if method == "default" else None)
    ax.plot([0, 1], [0, 1], ls=":", color="grey", lw=0.8)
    ax.set_xlabel("false-positive rate")
    ax.set_ylabel("true-positive rate")
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=7, loc="lower right")
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    return buffer.getvalue()


def _roc(pos: np.ndarray, neg: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    thresholds = np.unique(np.concatenate([pos, neg]))[::-1]
    tpr = [0.0] + [float(np.mean(pos >= t)) for t in thresholds]
    fpr = [0.0] + [float(np.mean(neg >= t)) for t in thresholds]
    return np.asarray(fpr), np.asarray(tpr)


def write(out: Path, doc: Mapping, pairs: Sequence, matrices: Mapping[str, Mapping]) -> dict[str, Path]:
    out = Path(out)
    files = {"json": out / "reuse.json", "markdown": out / "reuse.md"}
    atomic_write(files["json"], (json.dumps(doc, indent=1, allow_nan=False) + "\n").encode())
    atomic_write(files["markdown"], markdown(doc).encode())
    test = [p for p in pairs if p.group == "test"]
    methods = ["default", *doc["protocol"]["methods"]]
    scores = {m: pair_scores(test, m) for m in methods}
    negative = np.asarray([p.label == 0 for p in test])
    for reuse in sorted({p.reuse for p in test if p.label}):
        positive = np.asarray([p.label == 1 and p.reuse == reuse for p in test])
        curves = {m: (s[positive], s[negative]) for m, s in scores.items()}
        path = out / "roc" / f"{reuse}.png"
        atomic_write(path, roc_png(f"{reuse} (test group)", curves))
        files[f"roc:{reuse}"] = path
    for group, mats in matrices.items():
        if HEATMAP_METHOD in mats:
            path = out / f"heatmap_{group}.png"
            atomic_write(path, heatmap_png(mats["labels"], mats[HEATMAP_METHOD],
                                           title=f"{HEATMAP_METHOD} similarity, {group} group"))
            files[f"heatmap:{group}"] = path
    return files
