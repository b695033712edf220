"""The owner's side: craft a timing fingerprint for a multi-exit model, record its timing profile and,
given independent multi-exit models, its calibration, in one fingerprint file (`fingerprint.Fingerprint`).
Three roles of other models, kept apart: `copies` (the owner's own derived copies: the kept samples must
stop right on them), `decoys` (independent models the samples are selected against) and `null`
(independent models the verdict is calibrated on; never a decoy, whose match is low by construction)."""

from __future__ import annotations

from typing import Callable, Sequence

import jax

from jaxprov import probes as probe_lib
from jaxprov.errors import JaxprovError
from jaxprov.exits import craft as craft_lib
from jaxprov.exits import staged, verify
from jaxprov.exits.fingerprint import Fingerprint
from jaxprov.model import Model
from jaxprov.models.multi_exit import num_exits
from jaxprov.probes import key_repr
from jaxprov.identity import model_digest
from jaxprov.version import __version__


def make(model: Model, seeds: str = "mnist:test", threshold: float = staged.DEFAULT_THRESHOLD,
         config: craft_lib.CraftConfig = craft_lib.CraftConfig(), key: jax.Array | None = None,
         null: Sequence[Model] = (), repeats: int = verify.DEFAULT_REPEATS,
         progress: Callable[[str, int, int], None] | None = None, copies: Sequence[Model] = (),
         decoys: Sequence[Model] = ()) -> Fingerprint:
    """Craft (`craft.craft`, with the owner's `copies` and the `decoys`) from `seeds` (a seed source, see
    jaxprov.probes.seeds) drawn with `key`, profile the owner's early-exit timing on the result and
    calibrate on the `null` models (each answering at the same threshold, in this process).

    Raises:
      JaxprovError: as `craft.craft`, or a model that is both a decoy and in the null (same parameters).
    """
    key = jax.random.PRNGKey(0) if key is None else key
    threshold = staged.check_threshold(threshold)
    null_digests = {model_digest(m): m.name for m in null}
    for decoy in decoys:
        if model_digest(decoy) in null_digests:
            raise JaxprovError(f"{decoy.name} is both a decoy and in the null (as {null_digests[model_digest(decoy)]}): "
                               "the samples are selected so that decoys do not match, so calibrating on one "
                               "understates the null; give disjoint decoy and null models")
    k = num_exits(model.module)
    seed_probes = probe_lib.seeds(seeds, model.input_spec, config.seeds_needed(k), key)
    crafted = craft_lib.craft(model, seed_probes.inputs, threshold, config,
                              None if progress is None else lambda i, n: progress("craft", i, n), copies, decoys)
    early = staged.EarlyExit(model, threshold)
    profile, _, _ = staged.profile(early, crafted["samples"], repeats=5)
    meta = {"num_exits": k, "threshold": threshold, "input_shape": list(model.input_spec.shape),
            "owner": _ref(model),
            "recipe": {"craft": dict(vars(config)), "seeds": seed_probes.meta, "key": key_repr(key),
                       "tried": crafted["tried"], "kept": crafted["kept"], "robust": crafted["robust"],
                       "copies": [_ref(m) for m in copies], "decoys": [_ref(m) for m in decoys],
                       "decoy_hits": crafted["decoy_hits"]},
            "profile": profile.to_json(), "calibration": None, "versions": {"jaxprov": __version__}}
    fingerprint = Fingerprint(crafted["samples"], crafted["stops"], crafted["labels"], meta)
    if null:
        suspects = [verify.InProcessSuspect(m, threshold) for m in null]
        calibration = verify.calibrate(fingerprint, suspects, repeats, names=[m.name for m in null])
        fingerprint = fingerprint.replace(meta={**meta, "calibration": calibration})
    return fingerprint


def _ref(model: Model) -> dict:
    return {"name": model.name, "arch": model.arch, "params_sha256": model_digest(model)}
