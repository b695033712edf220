"""MAP's three settings: which inputs the mask is learned from, and the protected model it gives.

  source-available  authorised and unauthorised data are both given;
  source-free       no authorised data: a pseudo-source is synthesised from the model
                    (`synth.pseudo_source`: BatchNorm-statistics matching, or inversion);
  data-free         no data at all: the pseudo-source, and neighbour domains synthesised from it
                    (`synth.neighbours`) standing in for the unauthorised domain.
Labels are never needed: the mask keeps the source's own outputs on authorised inputs. Where the
data carry them, the held-out choice of the mask (MapConfig.select_n) reads accuracy on them.

The protected model is a normal jaxprov model: the source's params with every masked kernel
multiplied by its binary mask (`masks.apply`), its arch, input spec and module unchanged, so it is
saved with `jaxprov.store.save_model` (orbax), loads, converts, fingerprints and compares like any
other. Its `meta["lineage"]` records the parent, derivation "map", the setting and every setting of
the run; `meta["protection"]` the mask's density and what it was learned from.
"""

from __future__ import annotations

import dataclasses

import jax
import numpy as np

from jaxprov.errors import JaxprovError
from jaxprov.identity import model_digest
from jaxprov.model import Model
from jaxprov.probes import key_repr
from jaxprov.protect import masks as masks_lib, synth
from jaxprov.protect.train import MapConfig, MaskRun, learn

SETTINGS = ("source-available", "source-free", "data-free")


@dataclasses.dataclass
class Protection:
    """A protected model and the mask run that made it."""

    model: Model
    run: MaskRun
    record: dict


def protect(source: Model, setting: str, key: jax.Array, config: MapConfig = MapConfig(),
            authorised=None, unauthorised=None, synth_config: synth.SynthConfig = synth.SynthConfig(),
            synthesis: str = "auto", checkpoint=None, progress=None, sources: dict | None = None,
            trace=None, authorised_y=None, unauthorised_y=None) -> Protection:
    """Learn a MAP mask for `source` in `setting` and return the protected model.

    Args:
      source: the trained model to protect (never modified).
      setting: one of SETTINGS.
      key: PRNG key (synthesis and batches).
      config: the mask run's settings.
      authorised: authorised inputs in the model's space (source-available only).
      unauthorised: unauthorised inputs (source-available and source-free).
      synth_config, synthesis: how the pseudo-source is made (source-free, data-free): "auto", "bn",
        "inversion" (`synth.resolve_method`).
      checkpoint: .npz path the mask run resumes from and checkpoints to.
      progress: (stage, done, total) callback.
      sources: {"authorised": ..., "unauthorised": ...} descriptions recorded in the metadata.
      trace: (history row, hard masks) callback at every recorded step of the mask run (`learn`).
      authorised_y, unauthorised_y: labels of the given data, or None: the held-out choice of the
        mask (config.select_n > 0) reads accuracy on them (`learn`); nothing else uses labels.
    """
    if setting not in SETTINGS:
        raise JaxprovError(f"unknown MAP setting {setting!r}; use one of {', '.join(SETTINGS)}")
    given = {"authorised": authorised is not None, "unauthorised": unauthorised is not None}
    needs = {"source-available": {"authorised": True, "unauthorised": True},
             "source-free": {"authorised": False, "unauthorised": True},
             "data-free": {"authorised": False, "unauthorised": False}}[setting]
    for role, needed in needs.items():
        if needed and not given[role]:
            raise JaxprovError(f"the {setting} setting needs {role} data (--{role} DATA)")
        if not needed and given[role]:
            raise JaxprovError(f"the {setting} setting takes no {role} data; drop --{role} or use "
                               f"{'source-available' if role == 'authorised' else 'source-free'}")
    for role, y, x in (("authorised", authorised_y, authorised), ("unauthorised", unauthorised_y, unauthorised)):
        if y is not None and x is None:
            raise JaxprovError(f"{role} labels given without {role} data")
    synth_key, mask_key = jax.random.split(key)
    record = {"setting": setting, "config": config.to_json(), "key": key_repr(key)}
    if setting != "source-available":
        synth.resolve_method(source, synthesis)  # a model without BatchNorm fails here, before any work
        authorised, record["synthesis"] = synth.pseudo_source(source, synth_key, synth_config, synthesis, progress,
                                                                unauthorised)
    if setting == "data-free":
        unauthorised = synth.neighbours(source, authorised, int(jax.random.randint(synth_key, (), 0, 2 ** 30)))
        record["neighbours"] = list(synth.NEIGHBOUR_SHIFTS)
    run = learn(source, authorised, unauthorised, config, mask_key, checkpoint, progress, trace,
                authorised_y=authorised_y, unauthorised_y=unauthorised_y)
    record.update({"density": run.density, "granularity": config.granularity,
                   "n_authorised": int(len(authorised)), "n_unauthorised": int(len(unauthorised)),
                   **({"selected": run.selected} if run.selected is not None else {}),
                   **({"data": dict(sources)} if sources else {})})
    return Protection(protected_model(source, run.masks, record), run, record)


def protected_model(source: Model, masks: dict, record: dict) -> Model:
    """`source` with `masks` applied: a normal model whose lineage names its source."""
    params = jax.tree_util.tree_map(np.asarray, masks_lib.apply(source.params, masks))
    meta = {"lineage": {"parent": source.name, "derivation": "map", "parent_digest": model_digest(source),
                        **{k: v for k, v in record.items() if k != "data"}},
            "protection": {"density": record["density"], "setting": record["setting"],
                           "granularity": record["granularity"], **({"data": record["data"]} if "data" in record else {})}}
    return source.replace(params=params, name=f"{source.name}-map", meta=meta)
