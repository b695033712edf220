"""The reuse benchmark's zoo as a zoo recipe (`jaxprov.training.recipe`): every model of a preset, its
role, parent and seed, and the ground truth of a pair read back from it (who descends from whom)."""

from __future__ import annotations

import zlib
from typing import Any, Mapping

from jaxprov.bench.presets import REUSE_TYPES, SIBLING, Preset


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
        elif k == "data":
            v = preset.split(v)
        entry[k] = v
    if stage is not None:
        s = preset.stages[stage]
        entry["lr"] = s["lr"]
        entry["finetune_epochs" if entry["op"] == "prune" else "epochs"] = int(s["epochs"])
    return entry


def make_recipe(preset: Preset) -> dict:
    """The preset as a declarative zoo recipe (see jaxprov.training.recipe): every model, its parent and seed."""
    train = preset.stages["train"]
    entries: list[dict] = []

    def trained(name, arch, seed, data, role, group, reuse):
        entries.append({"name": name, "op": "train", "arch": arch, "data": data, "seed": seed,
                        "epochs": int(train["epochs"]), "lr": train["lr"], "role": role, "group": group,
                        "reuse": reuse})

    for group in preset.bases:  # GROUPS for the benchmark's presets; the DNA training zoo has its own
        for i, (arch, seed) in enumerate(preset.bases[group]):
            base = f"{group}-b{i}-{arch}"
            trained(base, arch, seed, f"{preset.domain}:base", "base", group, "base")
            for reuse in preset.reuses():
                if reuse == "average-siblings":
                    continue
                entries.append(_derivation(f"{base}--{reuse}", base, arch, reuse, preset, group, "positive"))
            if "average-siblings" not in preset.reuses():
                continue
            sibling = _derivation(f"{base}--{SIBLING}", base, arch, "finetune-all", preset, group, "positive")
            entries.append(sibling)
            entries.append({"name": f"{base}--average-siblings", "op": "average", "parent": base,
                            "parents": [f"{base}--finetune-all", sibling["name"]], "role": "positive",
                            "reuse": "average-siblings", "group": group})
        for i, (arch, seed, data, children) in enumerate(preset.independents[group]):
            kind = "other-data" if not data.startswith(preset.domain) else "independent"
            name = f"{group}-i{i}-{arch}" + ("-digits" if kind == "other-data" else "")
            trained(name, arch, seed, data, "independent", group, kind)
            for reuse in children:
                entries.append(_derivation(f"{name}--{reuse}", name, arch, reuse, preset, group, "independent-child"))
        for i, (arch, seed) in enumerate(preset.nulls[group]):
            trained(f"{group}-null{i}-{arch}", arch, seed, f"{preset.domain}:base", "null", group, "null")
    return {"name": f"reuse-{preset.name}", "models": entries}


def ancestors(name: str, entries: Mapping[str, dict]) -> set[str]:
    """Every model that `name` descends from, following "parent" and "parents" in the recipe entries."""
    seen: set[str] = set()
    stack = [name]
    while stack:
        entry = entries[stack.pop()]
        for p in [entry.get("parent"), *entry.get("parents", [])]:
            if p and p not in seen:
                seen.add(p)
                stack.append(p)
    return seen


def negative_kind(suspect: dict) -> str:
    """What kind of negative a suspect is for a reference it does not descend from."""
    role = suspect["role"]
    if role == "base":
        return "negative:other-base"
    if role == "positive":
        return "negative:child-of-other"
    if role == "independent-child":
        return "negative:child-of-independent"
    return "negative:" + suspect.get("reuse", role)
