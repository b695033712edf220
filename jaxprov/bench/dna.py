"""Model DNA on the reuse benchmark's protocol: the training zoo (lineages of its own, split by base
model from the val and test groups), the training set the detector learns from, and training a
detector from a preset (`jaxprov dna train --preset NAME`) or from any zoo folder with recorded
lineage (`--zoo DIR`)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Callable, Mapping, Sequence

import jax
import numpy as np

from jaxprov import datasets, text_corpus
from jaxprov import dna as dna_lib
from jaxprov import engine as engine_lib
from jaxprov import params_io
from jaxprov.bench.presets import PRESETS, REFERENCE_ROLES, dna_training_preset
from jaxprov.bench.protocol import ancestors, make_recipe
from jaxprov.errors import JaxprovError
from jaxprov.model import ModelFns, as_inputs
from jaxprov.probes import seeds as make_seeds

TRAIN_SEEDS = "mnist:test"  # held-out data, as every probe of the benchmark
TRAIN_PROBES = 1000
TRAIN_KEY = 7  # the training probes' order (the benchmark's seeds are drawn with key 0)


def _logits(static, fns: ModelFns, params, x, shared):
    return fns.apply(params, x)


def lineage_roots(entries: Mapping[str, dict]) -> dict[str, str]:
    """Each model's lineage: the root (a model with no parent) it descends from, itself for a root."""
    roots = {}
    for name in entries:
        up = ancestors(name, entries)
        tops = sorted(a for a in up if not entries[a].get("parent") and not entries[a].get("parents"))
        roots[name] = tops[0] if tops else name
    return roots


def training_set(models: Mapping[str, object], entries: Mapping[str, dict], names: Sequence[str] | None = None,
                 seeds: str = TRAIN_SEEDS, n_probes: int | None = None, key: int = TRAIN_KEY,
                 config: engine_lib.EngineConfig = engine_lib.EngineConfig()) -> dna_lib.TrainingSet:
    """The models `names` (default: all) of a zoo with recorded lineage (`entries`: recipe entries by
    name, each with its "role" and "parent"/"parents"), as a `jaxprov.dna.TrainingSet`: every model's
    outputs on `n_probes` seeds (default TRAIN_PROBES, or all of a smaller data split: text:test holds
    400), drawn by PRNGKey(key) from `seeds`."""
    if n_probes is None:
        n_probes = min(TRAIN_PROBES, split_size(seeds))
    names = list(entries if names is None else names)
    if not names:
        raise JaxprovError("dna: no models to train on")
    spec = models[names[0]].input_spec
    for n in names:
        if models[n].input_spec.shape != spec.shape or models[n].input_spec.modality != spec.modality:
            raise JaxprovError(f"dna: model {n!r} takes {models[n].input_spec.shape}, not {spec.shape} like "
                               f"{names[0]!r}; a detector trains on one input space")
    probes = make_seeds(seeds, spec, n_probes, jax.random.PRNGKey(key))
    x = as_inputs(probes.inputs)
    logits = [np.asarray(engine_lib.map_inputs(_logits, None, models[n], x, config=config)) for n in names]
    inside = set(names)
    return dna_lib.TrainingSet(
        x=x, logits=logits, names=names,
        ancestors={n: frozenset(ancestors(n, entries) & inside) for n in names},
        references=[n for n in names if entries[n].get("role") in REFERENCE_ROLES],
        input_spec=spec,
        domains=sorted({str(entries[n]["data"]) for n in names if "data" in entries[n]}),
        architectures=sorted({models[n].arch for n in names}),
        probes={"source": seeds, "n": str(n_probes), "key": str(key), "digest": probes.digest})


def split_size(seeds: str) -> int:
    """How many inputs a data split ("text:test") holds; TRAIN_PROBES for any other seed source."""
    return datasets.size(seeds) if ":" in seeds else TRAIN_PROBES


def default_architecture(spec, view: str = "logits", n_classes: int | None = None) -> dna_lib.Architecture:
    """The detector architecture for models with input `spec`: the conv encoder on images, the token
    encoder on text (its vocabulary the models'), `n_classes` outputs in the view (default 10; the
    text domain's 6 classes for text)."""
    if spec.modality == "text":
        n = n_classes or len(text_corpus.CLASSES)
        return dna_lib.Architecture(view=view, n_classes=n, k=n, encoder="tokens", vocab_size=spec.vocab_size)
    return dna_lib.Architecture(view=view, **({} if n_classes is None else {"n_classes": n_classes}))


def input_record(spec) -> dict:
    """What a detector records of its input space besides the InputSpec: the text domain's vocabulary."""
    if spec.modality != "text":
        return {}
    return {"vocabulary": {"source": "jaxprov.text_corpus", "size": spec.vocab_size,
                           "sha256": text_corpus.vocab_digest(), "corpus_sha256": text_corpus.digest()}}


def recipe_digest(recipe: Mapping) -> str:
    return hashlib.sha256(json.dumps(recipe, sort_keys=True).encode()).hexdigest()


def training_recipe(preset_name: str, n_bases: int = 4) -> dict:
    """The DNA training zoo of a preset: its protocol from other bases (`presets.dna_training_preset`)."""
    if preset_name not in PRESETS:
        raise JaxprovError(f"unknown preset {preset_name!r}; choose one of: {', '.join(PRESETS)}")
    return make_recipe(dna_training_preset(PRESETS[preset_name], n_bases))


def zoo_lineage(root: str | Path) -> tuple[dict, dict]:
    """(models, entries) of a zoo folder built by `jaxprov.training.recipe` (each model's meta
    records its recipe entry: role and parents); one line when a model records none."""
    from jaxprov import store

    root = Path(root)
    if not root.is_dir():
        raise JaxprovError(f"{root}: not a folder; pass a zoo folder built by `jaxprov zoo build` or the benchmark")
    models, entries = {}, {}
    for d in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        model = store.load_model(d)
        entry = (model.meta.get("recipe") or {}).get("entry")
        if not isinstance(entry, dict) or "role" not in entry:
            raise JaxprovError(f"{d}: the model records no recipe entry with a role; a DNA detector trains on "
                               "a zoo with known lineage (built from a recipe with roles, as the benchmark's)")
        models[model.name], entries[model.name] = model, entry
    if not models:
        raise JaxprovError(f"{root}: no stored models in it")
    return models, entries


def train_from_preset(preset_name: str | None, out: str | Path, arch: dna_lib.Architecture | None = None,
                      config: dna_lib.TrainConfig = dna_lib.TrainConfig(), log: Callable[[str], None] = print,
                      zoo: str | Path | None = None, command: str | None = None,
                      view: str = "logits") -> dna_lib.Detector:
    """Build (resumably) a preset's DNA training zoo under OUT/zoo, or read the zoo folder `zoo`,
    train a detector (checkpointed in OUT) and save it to OUT. Without `arch`, the architecture
    fits the zoo's input space (`default_architecture`)."""
    from jaxprov.training import recipe as zoo_recipe

    out = Path(out)
    params_io.check_path(out, error=dna_lib.DetectorError)  # now, not after the training: the save would refuse it
    if zoo is None:
        recipe = training_recipe(preset_name)
        log(f"[1/3] DNA training zoo: {len(recipe['models'])} models (resumable) -> {out / 'zoo'}")
        models = zoo_recipe.build(recipe, out / "zoo")
        entries = {e["name"]: e for e in recipe["models"]}
        digest, source = recipe_digest(recipe), {"preset": preset_name, "recipe": recipe["name"]}
    else:
        log(f"[1/3] DNA training zoo: reading {zoo}")
        models, entries = zoo_lineage(zoo)
        digest = recipe_digest({n: e for n, e in sorted(entries.items())})
        source = {"zoo": str(Path(zoo).absolute())}
    spec = next(iter(models.values())).input_spec
    seeds = PRESETS[preset_name].seeds if zoo is None else _held_out_seeds(entries)
    n_probes = min(TRAIN_PROBES, split_size(seeds))
    log(f"[2/3] outputs of {len(models)} models on {n_probes} probes ({seeds})")
    data = training_set(models, entries, seeds=seeds, n_probes=n_probes)
    log("[3/3] training (resumable)")
    arch = default_architecture(spec, view) if arch is None else arch
    det = dna_lib.train(data, arch, config, out=out, log=log, name=out.name, recipe_digest=digest)
    det = det.with_params(det.params, training=source, command=command or "", **input_record(spec))
    det.save(out)
    return det


def _held_out_seeds(entries: Mapping[str, dict]) -> str:
    """The probe source of a zoo folder: the test split of its training domain (text:test for a
    text zoo, else mnist:test, the benchmark's)."""
    domains = {str(e["data"]).partition(":")[0] for e in entries.values() if "data" in e}
    return "text:test" if domains and domains <= set(datasets.TEXT_DOMAINS) else TRAIN_SEEDS
