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

import dataclasses
import math
import platform
import sys
import time
import zlib
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import jax
import numpy as np

from jaxprov import metrics
from jaxprov import verdict as verdict_lib
from jaxprov.errors import JaxprovError

GROUPS = ("val", "test")
REFERENCE_ROLES = ("base", "independent")

# reuse type -> how it is made from its parent (recipe fields besides name/parent/seed).
# "{other}" is the preset's other architecture for the parent's arch.
REUSE_TYPES: dict[str, dict[str, Any]] = {
    "finetune-last": {"op": "finetune", "data": "mnist:finetune", "last_layer_only": True, "stage": "finetune"},
    "finetune-all": {"op": "finetune", "data": "mnist:finetune", "stage": "finetune"},
    "transfer-domain": {"op": "finetune", "data": "digits:train", "stage": "finetune"},
    "transfer-task": {"op": "finetune", "data": "lfw:train", "num_classes": 2, "stage": "transfer"},
    "prune-20": {"op": "prune", "fraction": 0.2, "data": "mnist:finetune", "stage": "prune"},
    "prune-50": {"op": "prune", "fraction": 0.5, "data": "mnist:finetune", "stage": "prune"},
    "prune-80": {"op": "prune", "fraction": 0.8, "data": "mnist:finetune", "stage": "prune"},
    "quantize-int8": {"op": "quantize_int8"},
    "cast-fp16": {"op": "cast_fp16"},
    "distill-same-arch": {"op": "distill", "arch": "{same}", "data": "mnist:query", "temperature": 4.0,
                          "stage": "extract"},
    "extract-labels-same-arch": {"op": "distill", "arch": "{same}", "data": "mnist:query", "hard_labels": True,
                                 "stage": "extract"},
    "extract-probs-same-arch": {"op": "distill", "arch": "{same}", "data": "mnist:query", "temperature": 1.0,
                                "stage": "extract"},
    "extract-labels-other-arch": {"op": "distill", "arch": "{other}", "data": "mnist:query", "hard_labels": True,
                                  "stage": "extract"},
    "extract-probs-other-arch": {"op": "distill", "arch": "{other}", "data": "mnist:query", "temperature": 1.0,
                                 "stage": "extract"},
    "extract-adversarial": {"op": "distill", "arch": "{same}", "data": "mnist:query", "hard_labels": True,
                            "adversarial": "{adversarial}", "stage": "extract"},
    "average-siblings": {"op": "average"},
}
SIBLING = "finetune-all-sibling"  # the second fine-tuned copy that "average-siblings" averages with


@dataclasses.dataclass(frozen=True)
class Preset:
    """Everything that determines a benchmark run besides the code.

    bases: group -> (arch, seed) of each base model.
    independents: group -> (arch, seed, data split, children reuse types) of each independent model.
    nulls: group -> (arch, seed) of each null model (trained like a base).
    stages: stage -> {"epochs", "lr"} for train / finetune / transfer / prune / extract.
    """

    name: str
    bases: Mapping[str, Sequence[tuple[str, int]]]
    independents: Mapping[str, Sequence[tuple[str, int, str, Sequence[str]]]]
    nulls: Mapping[str, Sequence[tuple[str, int]]]
    other_arch: Mapping[str, str]
    stages: Mapping[str, Mapping[str, float]]
    adversarial: Mapping[str, float]
    method_config: Mapping[str, Mapping[str, Any]]
    methods: Sequence[str] = ("ddv", "gradient_field", "sac", "ipguard", "cka", "weights", "mistakes")
    # Probes come from MNIST's held-out split: no zoo model trained on it and no attacker queried it.
    seeds: str = "mnist:test"
    n_boot: int = 1000
    device_note: str = "CPU"


_SMALL_STAGES = {
    "train": {"epochs": 6, "lr": 2e-3},
    "finetune": {"epochs": 3, "lr": 3e-4},
    "transfer": {"epochs": 6, "lr": 1e-3},
    "prune": {"epochs": 3, "lr": 1e-3},
    "extract": {"epochs": 10, "lr": 2e-3},
}
_SMALL_METHODS = {
    "ddv": {"n_seeds": 200, "eps": 0.974, "step": 0.162},
    "gradient_field": {"n_anchors": 64, "steps": 50},
    "sac": {"n_seeds": 100},
    "ipguard": {"n_seeds": 100},
    "cka": {"n_seeds": 200},
    "mistakes": {"n_seeds": 1000},
}
_SMALL_OTHER = {"mlp": "lenet", "lenet": "mlp"}
_ADV_SMALL = {"eps": 0.5, "steps": 3, "step_size": 0.25}  # normalised units (MNIST std 0.3081): 0.15 of a pixel

_CIFAR = ("cifar_resnet20", "cifar_vgg16_bn", "cifar_mobilenet")


def _full_independents(s: int) -> list:
    return ([(a, s + 11 + i, "mnist:base", ("finetune-all", "extract-probs-other-arch")) for i, a in enumerate(_CIFAR)]
            + [(a, s + 14 + i, "mnist:base", ()) for i, a in enumerate(_CIFAR)]
            + [("cifar_resnet20", s + 17, "digits:train", ("finetune-all",))])


PRESETS: dict[str, Preset] = {
    # Runs in the test suite on a 2-core CPU: MLP and LeNet, one base of each per group.
    "ci": Preset(
        name="ci",
        bases={"val": [("mlp", 101), ("lenet", 102)], "test": [("mlp", 201), ("lenet", 202)]},
        independents={"val": [("mlp", 111, "mnist:base", ("finetune-all",)),
                              ("lenet", 112, "mnist:base", ()),
                              ("mlp", 113, "digits:train", ())],
                      "test": [("mlp", 211, "mnist:base", ("finetune-all",)),
                               ("lenet", 212, "mnist:base", ()),
                               ("mlp", 213, "digits:train", ())]},
        nulls={"val": [("mlp", 121), ("mlp", 122), ("lenet", 123), ("lenet", 124)],
               "test": [("mlp", 221), ("mlp", 222), ("lenet", 223), ("lenet", 224)]},
        other_arch=_SMALL_OTHER, stages=_SMALL_STAGES, adversarial=_ADV_SMALL, method_config=_SMALL_METHODS,
        n_boot=300),
    # The same protocol at a size a CPU runs in tens of minutes: three bases per group.
    "cpu": Preset(
        name="cpu",
        bases={"val": [("mlp", 101), ("lenet", 102), ("mlp", 103)],
               "test": [("mlp", 201), ("lenet", 202), ("lenet", 203)]},
        independents={g: [("mlp", s + 11, "mnist:base", ("finetune-all", "extract-probs-same-arch")),
                          ("lenet", s + 12, "mnist:base", ("finetune-all", "extract-probs-other-arch")),
                          ("mlp", s + 13, "mnist:base", ()),
                          ("lenet", s + 14, "mnist:base", ()),
                          ("mlp", s + 15, "digits:train", ("finetune-all",)),
                          ("lenet", s + 16, "digits:train", ())]
                      for g, s in (("val", 100), ("test", 200))},
        nulls={g: [("mlp", s + 21), ("mlp", s + 22), ("mlp", s + 23),
                   ("lenet", s + 24), ("lenet", s + 25), ("lenet", s + 26),
                   ("mlp", s + 27), ("mlp", s + 28), ("lenet", s + 29), ("lenet", s + 30)]
               for g, s in (("val", 100), ("test", 200))},
        other_arch=_SMALL_OTHER, stages={**_SMALL_STAGES, "train": {"epochs": 8, "lr": 2e-3}},
        adversarial=_ADV_SMALL, method_config={**_SMALL_METHODS, "gradient_field": {"n_anchors": 128, "steps": 50},
                                               "ddv": {**_SMALL_METHODS["ddv"], "n_seeds": 300}},
        n_boot=1000),
    # The GPU preset: CIFAR-size ResNet-20, VGG-16-BN and MobileNet on MNIST at 32x32x3.
    "full": Preset(
        name="full",
        bases={"val": [("cifar_resnet20", 101), ("cifar_vgg16_bn", 102), ("cifar_mobilenet", 103)],
               "test": [("cifar_resnet20", 201), ("cifar_vgg16_bn", 202), ("cifar_mobilenet", 203)]},
        independents={g: _full_independents(s) for g, s in (("val", 100), ("test", 200))},
        nulls={g: [(a, s + 20 + i) for i, a in enumerate(_CIFAR * 2)] for g, s in (("val", 100), ("test", 200))},
        other_arch={"cifar_resnet20": "cifar_mobilenet", "cifar_vgg16_bn": "cifar_resnet20",
                    "cifar_mobilenet": "cifar_vgg16_bn"},
        stages={"train": {"epochs": 15, "lr": 1e-3}, "finetune": {"epochs": 5, "lr": 1e-4},
                "transfer": {"epochs": 10, "lr": 5e-4}, "prune": {"epochs": 5, "lr": 5e-4},
                "extract": {"epochs": 20, "lr": 1e-3}},
        adversarial={"eps": 0.03, "steps": 5, "step_size": 0.01},
        method_config={"ddv": {"n_seeds": 300, "eps": 1.2, "step": 0.2},
                       "gradient_field": {"n_anchors": 256, "steps": 50},
                       "sac": {"n_seeds": 100}, "ipguard": {"n_seeds": 100}, "cka": {"n_seeds": 300},
                       "mistakes": {"n_seeds": 1000, "min_probes": 5}},
        device_note="GPU"),
}


def _seed(name: str) -> int:
    """A stable per-entry seed: adding or removing entries never changes another entry's randomness."""
    return zlib.crc32(name.encode()) & 0x7FFFFFFF


def _derivation(name: str, parent: str, parent_arch: str, reuse: str, preset: Preset, group: str,
                role: str) -> dict:
    spec = dict(REUSE_TYPES[reuse])
    stage = spec.pop("stage", None)
    entry: dict[str, Any] = {"name": name, "parent": parent, "role": role, "reuse": reuse, "group": group}
    if spec["op"] not in ("quantize_int8", "cast_fp16"):
        entry["seed"] = _seed(name)
    for k, v in spec.items():
        if v == "{same}":
            v = parent_arch
        elif v == "{other}":
            v = preset.other_arch[parent_arch]
        elif v == "{adversarial}":
            v = dict(preset.adversarial)
        entry[k] = v
    if stage is not None:
        s = preset.stages[stage]
        entry["lr"] = s["lr"]
        entry["finetune_epochs" if entry["op"] == "prune" else "epochs"] = int(s["epochs"])
    return entry


def make_recipe(preset: Preset) -> dict:
    """The preset as a declarative zoo recipe (see jaxprov.zoo.recipe): every model, its parent and seed."""
    train = preset.stages["train"]
    entries: list[dict] = []

    def trained(name, arch, seed, data, role, group, reuse):
        entries.append({"name": name, "op": "train", "arch": arch, "data": data, "seed": seed,
                        "epochs": int(train["epochs"]), "lr": train["lr"], "role": role, "group": group,
                        "reuse": reuse})

    for group in GROUPS:
        for i, (arch, seed) in enumerate(preset.bases[group]):
            base = f"{group}-b{i}-{arch}"
            trained(base, arch, seed, "mnist:base", "base", group, "base")
            for reuse in REUSE_TYPES:
                if reuse == "average-siblings":
                    continue
                entries.append(_derivation(f"{base}--{reuse}", base, arch, reuse, preset, group, "positive"))
            sibling = _derivation(f"{base}--{SIBLING}", base, arch, "finetune-all", preset, group, "positive")
            entries.append(sibling)
            entries.append({"name": f"{base}--average-siblings", "op": "average", "parent": base,
                            "parents": [f"{base}--finetune-all", sibling["name"]], "role": "positive",
                            "reuse": "average-siblings", "group": group})
        for i, (arch, seed, data, children) in enumerate(preset.independents[group]):
            kind = "other-data" if not data.startswith("mnist") else "independent"
            name = f"{group}-i{i}-{arch}" + ("-digits" if kind == "other-data" else "")
            trained(name, arch, seed, data, "independent", group, kind)
            for reuse in children:
                entries.append(_derivation(f"{name}--{reuse}", name, arch, reuse, preset, group, "independent-child"))
        for i, (arch, seed) in enumerate(preset.nulls[group]):
            trained(f"{group}-null{i}-{arch}", arch, seed, "mnist:base", "null", group, "null")
    return {"name": f"reuse-{preset.name}", "models": entries}


# ---------------------------------------------------------------------------------------------
# Scoring


@dataclasses.dataclass
class Pair:
    group: str
    reference: str
    suspect: str
    label: int  # 1: the reference is an ancestor of the suspect
    reuse: str  # the suspect's reuse type (positives) or what kind of negative it is
    scores: dict[str, float]  # method -> raw similarity (NaN: not comparable)
    evidence: dict[str, float]  # method -> evidence against the arch-matched null
    null: dict[str, list[float]]  # method -> the reference's similarities to that null
    default: float = math.nan  # the default verdict's P(derived); set on test pairs only


def _ancestors(name: str, entries: Mapping[str, dict]) -> set[str]:
    seen: set[str] = set()
    stack = [name]
    while stack:
        entry = entries[stack.pop()]
        for p in [entry.get("parent"), *entry.get("parents", [])]:
            if p and p not in seen:
                seen.add(p)
                stack.append(p)
    return seen


def score_pairs(models: Mapping[str, Any], recipe: dict, preset: Preset, store=None,
                log: Callable[[str], None] = print) -> tuple[list[Pair], dict[str, dict]]:
    """Every (reference, suspect) pair of each group, scored by every method of the preset.

    Returns the pairs and, per group, the full similarity matrix of each reference-free method
    (for the heatmap).
    """
    from jaxprov.comparison import Zoo

    entries = {e["name"]: e for e in recipe["models"]}
    key = jax.random.PRNGKey(0)
    pairs: list[Pair] = []
    matrices: dict[str, dict] = {}
    for group in GROUPS:
        names = [n for n, e in entries.items() if e.get("group") == group]
        members = [n for n in names if entries[n]["role"] != "null"]
        nulls = [n for n in names if entries[n]["role"] == "null"]
        refs = [n for n in members if entries[n]["role"] in REFERENCE_ROLES]
        zoo_models = [models[n] for n in members + nulls]
        index = {n: i for i, n in enumerate(members + nulls)}
        rows: dict[str, dict[str, np.ndarray]] = {m: {} for m in preset.methods}
        matrices[group] = {"labels": members + nulls}
        # One zoo for the reference-free methods; one per reference for DDV / IPGuard, whose probes
        # are generated on the reference (each zoo keeps its probes and signatures per method).
        zoos = {r: Zoo(zoo_models, seeds=preset.seeds, reference=models[r], key=key, store=store,
                       method_config=dict(preset.method_config)) for r in refs}
        for method in preset.methods:
            t0 = time.perf_counter()
            if zoos[refs[0]].method(method).needs_reference:
                for r in refs:
                    rows[method][r] = zoos[r].similarity(method).values[index[r]]
            else:
                values = zoos[refs[0]].similarity(method).values
                matrices[group][method] = values
                for r in refs:
                    rows[method][r] = values[index[r]]
            log(f"      {group}: {method} scored in {time.perf_counter() - t0:.1f} s")
        null_idx = [index[n] for n in nulls]
        null_archs = [models[n].arch for n in nulls]
        for r in refs:
            for s in members:
                if s == r:
                    continue
                label = int(r in _ancestors(s, entries))
                reuse = entries[s]["reuse"] if label else _negative_kind(entries[s])
                cols = [null_idx[i] for i in verdict_lib.null_columns(models[s].arch, null_archs)]
                scores = {m: float(rows[m][r][index[s]]) for m in preset.methods}
                null = {m: [float(v) for v in rows[m][r][cols]] for m in preset.methods}
                pairs.append(Pair(group, r, s, label, reuse, scores, {}, null))
    return pairs, matrices


def add_evidence(pairs: Sequence[Pair], methods: Sequence[str]) -> dict[str, float]:
    """Set every pair's evidence, with each method's spread floor measured on the val group's nulls
    (one per reference and suspect kind); returns the floors."""
    val_nulls: dict[str, dict[tuple, list[float]]] = {m: {} for m in methods}
    for p in pairs:
        if p.group == "val":
            for m in methods:
                val_nulls[m].setdefault((p.reference, tuple(p.null[m])), p.null[m])
    floors = verdict_lib.spread_floors({m: list(v.values()) for m, v in val_nulls.items()})
    for p in pairs:
        p.evidence = {m: verdict_lib.evidence(p.scores[m], p.null[m], floors[m]) for m in methods}
    return floors


def _negative_kind(suspect: dict) -> str:
    role = suspect["role"]
    if role == "base":
        return "negative:other-base"
    if role == "positive":
        return "negative:child-of-other"
    if role == "independent-child":
        return "negative:child-of-independent"
    return "negative:" + suspect.get("reuse", role)


# ---------------------------------------------------------------------------------------------
# Evaluation


def pair_scores(pairs: Sequence[Pair], method: str) -> np.ndarray:
    """Each pair's score under `method` ("default": the verdict's probability); a pair the method
    cannot compare scores -inf: not comparable = no evidence of derivation."""
    if method == "default":
        return np.asarray([p.default for p in pairs], np.float64)
    values = np.asarray([p.scores[method] for p in pairs], np.float64)
    return np.where(np.isnan(values), -np.inf, values)


def _correctness_flags(pairs: Sequence[Pair], scores: np.ndarray) -> dict[tuple[str, str], bool]:
    """ModelDiff's criterion per positive pair: its reference outranks every unrelated reference of
    the group for that suspect (ties are misses). `scores` is aligned with `pairs`."""
    by_suspect: dict[str, list[tuple[Pair, float]]] = {}
    for p, score in zip(pairs, scores):
        by_suspect.setdefault(p.suspect, []).append((p, float(score)))
    ranked = {}  # (reference, suspect) -> (its score, the suspect's scores from unrelated references)
    for suspect, scored in by_suspect.items():
        unrelated = [score for p, score in scored if not p.label]
        ranked.update({(p.reference, suspect): (score, unrelated) for p, score in scored if p.label})
    return dict(zip(ranked, (bool(f) for f in metrics.correctness_flags(ranked)))) if ranked else {}


def evaluate(pairs: Sequence[Pair], method: str, n_boot: int, seed: int = 0) -> dict[str, dict]:
    """Per reuse type (and "overall"): AUC, TPR at 1 % FPR and correctness, with bootstrap intervals."""
    scores = pair_scores(pairs, method)
    finite = scores[np.isfinite(scores)]
    floor = (finite.min() - 1.0) if finite.size else -1.0
    scores = np.where(np.isfinite(scores), scores, floor)  # metrics need finite numbers
    flags = _correctness_flags(pairs, scores)
    labels = np.asarray([p.label for p in pairs])
    negatives = scores[labels == 0]
    out: dict[str, dict] = {}
    types = sorted({p.reuse for p in pairs if p.label}, key=lambda t: list(REUSE_TYPES).index(t))
    for reuse in [*types, "overall"]:
        chosen = [i for i, p in enumerate(pairs) if p.label and (reuse == "overall" or p.reuse == reuse)]
        positives = scores[chosen]
        if not len(positives) or not len(negatives):
            continue
        summary = metrics.summarize(positives, negatives, seed=seed, n_boot=n_boot)
        f = np.asarray([flags[(pairs[i].reference, pairs[i].suspect)] for i in chosen], np.float64)
        n_scored = len(chosen) if method == "default" else int(
            sum(not math.isnan(pairs[i].scores[method]) for i in chosen))
        out[reuse] = {
            "auc": summary["auc"], "auc_ci": summary["auc_ci"],
            "tpr_at_1pct_fpr": summary["tpr_at_1pct_fpr"], "tpr_ci": summary["tpr_ci"],
            "correctness": float(f.mean()), "correctness_ci": list(metrics.bootstrap_ci(np.mean, f, seed=seed,
                                                                                       n_boot=n_boot)),
            "n_pairs": int(len(positives) + len(negatives)), "n_pos": int(len(positives)),
            "n_neg": int(len(negatives)), "n_pos_comparable": n_scored,
            "allowed_false_positives": summary["allowed_false_positives"]}
    return out


def fit_default(pairs: Sequence[Pair], preset: Preset, floors: Mapping[str, float] | None = None
                ) -> verdict_lib.Verdict:
    """The logistic combination, fitted on the val group's pairs only (their evidence was computed
    with `floors`, which the verdict records)."""
    val = [p for p in pairs if p.group == "val"]
    x = np.asarray([[p.evidence[m] for m in preset.methods] for p in val])
    y = np.asarray([p.label for p in val])
    provenance = {"fitted_on": f"jaxprov bench reuse --preset {preset.name}: val group",
                  "n_val_pairs": len(val), "n_val_positive": int(y.sum()),
                  "references_val": sorted({p.reference for p in val}), "seeds": preset.seeds,
                  "jaxprov": _version()}
    return verdict_lib.fit(x, y, preset.methods, preset.method_config, provenance=provenance, floors=floors)


def _version() -> str:
    from jaxprov import __version__

    return __version__


# ---------------------------------------------------------------------------------------------
# Running a preset


def run(preset_name: str, out: str | Path, log: Callable[[str], None] = print, command: str | None = None) -> dict:
    """Build the preset's zoo (resumably) under OUT/zoo, score it, fit the default verdict on val,
    evaluate everything on test, and write OUT/reuse.json, OUT/reuse.md, OUT/roc/*.png,
    OUT/heatmap_*.png and OUT/verdict.json. Returns the JSON document."""
    from jaxprov.cache import SignatureStore
    from jaxprov.zoo import recipe as recipe_lib

    if preset_name not in PRESETS:
        raise JaxprovError(f"unknown preset {preset_name!r}; choose one of: {', '.join(PRESETS)}")
    preset = PRESETS[preset_name]
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    recipe = make_recipe(preset)
    store = SignatureStore(out / "store")
    timings: dict[str, float] = {}

    t0 = time.perf_counter()
    log(f"[1/3] zoo: {len(recipe['models'])} models (resumable) -> {out / 'zoo'}")
    models = recipe_lib.build(recipe, out / "zoo", store=store)
    timings["zoo"] = round(time.perf_counter() - t0, 1)

    t0 = time.perf_counter()
    log(f"[2/3] scoring with {', '.join(preset.methods)}")
    pairs, matrices = score_pairs(models, recipe, preset, store=store, log=log)
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
        "environment": _environment(), "seconds": timings,
        "protocol": {"groups": {g: {"bases": [n for n, e in entries.items() if e["group"] == g and e["role"] == "base"],
                                    "models": sum(e["group"] == g for e in entries.values()),
                                    "nulls": [n for n, e in entries.items() if e["group"] == g and e["role"] == "null"]}
                                for g in GROUPS},
                     "reuse_types": list(REUSE_TYPES), "methods": list(preset.methods),
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
    from jaxprov.bench import report

    report.write(out, doc, pairs, matrices)
    default.save(out / "verdict.json")
    return doc


def _num(v: float):
    return None if v is None or (isinstance(v, float) and math.isnan(v)) else float(v)


def _environment() -> dict:
    import flax
    import optax

    devices = jax.devices()
    return {"python": sys.version.split()[0], "jax": jax.__version__, "flax": flax.__version__,
            "optax": optax.__version__, "jaxprov": _version(), "platform": platform.platform(),
            "backend": jax.default_backend(), "device": str(devices[0].device_kind) if devices else "none",
            "n_devices": len(devices), "cpu_count": __import__("os").cpu_count()}
