"""Scoring the reuse benchmark: every (reference, suspect) pair of each group under every method, and
each pair's evidence against the arch-matched null."""

from __future__ import annotations

import dataclasses
import math
import time
from typing import Any, Callable, Mapping, Sequence

import jax
import numpy as np

from jaxprov import verdict as verdict_lib
from jaxprov.bench.presets import GROUPS, REFERENCE_ROLES, Preset
from jaxprov.bench.protocol import ancestors, negative_kind
from jaxprov.comparison import Zoo


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


def score_pairs(models: Mapping[str, Any], recipe: dict, preset: Preset, cache=None,
                log: Callable[[str], None] = print) -> tuple[list[Pair], dict[str, dict]]:
    """Every (reference, suspect) pair of each group, scored by every method of the preset.

    Returns the pairs and, per group, the full similarity matrix of each reference-free method
    (for the heatmap).
    """
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
        zoos = {r: Zoo(zoo_models, seeds=preset.seeds, reference=models[r], key=key, cache=cache,
                       method_config=dict(preset.method_config)) for r in refs}
        for method in preset.methods:
            t0 = time.perf_counter()
            if zoos[refs[0]].per_reference(method) is not False:  # probes built on each reference
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
                label = int(r in ancestors(s, entries))
                reuse = entries[s]["reuse"] if label else negative_kind(entries[s])
                cols = [null_idx[i] for i in verdict_lib.null_columns(models[s].arch, null_archs)]
                scores = {m: float(rows[m][r][index[s]]) for m in preset.methods}
                null = {m: [float(v) for v in rows[m][r][cols]] for m in preset.methods}
                pairs.append(Pair(group, r, s, label, reuse, scores, {}, null))
    return pairs, matrices


def add_evidence(pairs: Sequence[Pair], methods: Sequence[str],
                 calibrated: Mapping[str, Callable[[float], float]] | None = None) -> dict[str, float]:
    """Set every pair's evidence, with each method's spread floor measured on the val group's nulls
    (one per reference and suspect kind); returns the floors. A method in `calibrated` (name -> its
    P(derived) of a similarity) gets its calibrated evidence (`verdict.method_evidence` either way)."""
    calibrated = dict(calibrated or {})
    val_nulls: dict[str, dict[tuple, list[float]]] = {m: {} for m in methods}
    for p in pairs:
        if p.group == "val":
            for m in methods:
                val_nulls[m].setdefault((p.reference, tuple(p.null[m])), p.null[m])
    floors = verdict_lib.spread_floors({m: list(v.values()) for m, v in val_nulls.items()})
    for p in pairs:
        p.evidence = {m: verdict_lib.method_evidence(p.scores[m], floors[m], calibrated.get(m), null=p.null[m])
                      for m in methods}
    return floors
