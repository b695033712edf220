"""`jaxprov scan`: fingerprint a folder of models and write similarity matrices and reports.

Mixed folders are fine: checkpoint files and Hugging Face directories are converted, stored models
are loaded, unreadable entries are listed and skipped, and models are grouped by input kind (one
report per group, since a group shares one set of probes). Signatures go through the
content-addressed signature cache under OUT/store, so a repeated or interrupted scan recomputes nothing that
is already stored.
"""

from __future__ import annotations

import dataclasses
import time
import warnings
from pathlib import Path
from typing import Sequence

import jax
import numpy as np

from jaxprov import comparison as compare_lib
from jaxprov import methods as methods_lib
from jaxprov.engine import EngineConfig
from jaxprov.errors import JaxprovError
from jaxprov.model import Model


# Reference-dependent methods cost N probe sets and N^2 signatures in a full matrix: above this many
# models per group scan leaves them out (see scan_models).
MAX_REFERENCE_MODELS = 200


@dataclasses.dataclass
class ScanResult:
    groups: dict[str, dict]  # group tag -> {"models": [...], "similarity": {method: Similarity}, "files": {...}}
    failures: list[str]


def _group_tag(model: Model) -> str:
    spec = model.input_spec
    return spec.modality if spec.modality == "text" else f"{spec.modality}-{'x'.join(map(str, spec.shape))}"


def _progress(desc: str, total: int, enabled: bool):
    if not enabled:
        return None, lambda: None
    from tqdm import tqdm

    bar = tqdm(total=total, desc=desc, unit="model", leave=False)

    def update(done: int) -> None:
        bar.update(done - bar.n)

    return update, bar.close


def scan_models(models: Sequence[Model], out: str | Path, methods: str | Sequence[str] | None = None, *,
                seeds: str | None = None, key: jax.Array | None = None, engine: EngineConfig = EngineConfig(),
                failures: Sequence[str] = (), method_config: dict | None = None, progress: bool = True,
                title: str = "jaxprov scan", null: Sequence[Model] = (),
                max_reference_models: int = MAX_REFERENCE_MODELS) -> ScanResult:
    """Fingerprint `models` with each method and write reports under `out` (one folder per input kind).

    `methods`: None: the default verdict's methods of non-zero weight, and its P(derived) matrix as
    "default"; "all": every method, and the default matrix; names: those methods only. `seeds`:
    default the seeds the default verdict was fitted with (`verdict.default_seeds()`). A cell of the
    default matrix that no method of the verdict could compare is NaN; a dead model's row and column
    are 0 in every matrix; with none of the verdict's methods run there is no default matrix
    (metadata "default_not_written" says why).

    `null`: models known to be independent of every model scanned. They are fingerprinted beside
    them (and appear in the matrices, flagged "null") and calibrate the default verdict's matrix
    as `compare`'s null does. Without at least verdict.MIN_NULL of them in a group, the zoo itself
    is that group's null (`verdict.evidence_matrix`), which hides relatives when a large share of
    the zoo is related.

    A method whose probes are built on a reference model (DDV, IPGuard, mistakes: their probes
    record it, `Probes.reference`) is computed per reference, as the reuse benchmark that fitted
    the default verdict does: row i of its matrix is every model on probes built on model i
    (`Zoo.reference_rows`). That costs N probe sets and N^2 signatures, so above
    `max_reference_models` models per group such methods are left out of the matrices (listed under
    "methods_not_run", their evidence 0 in the default verdict)."""
    from jaxprov import arguments
    from jaxprov.cache import SignatureCache
    from jaxprov.report import write_report

    models = arguments.models(models, "scan_models: models")
    null = arguments.models(null, "scan_models: null")
    out = arguments.path(out, "scan_models: out")
    if not models:
        raise JaxprovError("nothing to scan: no readable models")
    from jaxprov import verdict as verdict_lib

    # By default: the default verdict's methods of non-zero weight with its settings (user settings
    # win), and its P(derived) matrix as the method "default" beside theirs; "all": every method,
    # and the default matrix too.
    every = methods == "all" or (isinstance(methods, (list, tuple)) and "all" in methods)
    default_verdict = verdict_lib.load_default() if methods is None or every else None
    if default_verdict is not None:
        method_config = {**{k: dict(v) for k, v in default_verdict.method_config.items()}, **(method_config or {})}
    if every:
        methods = methods_lib.names()
    elif isinstance(methods, str):
        methods = [methods]
    else:
        methods = list(default_verdict.active_methods if default_verdict else (methods or methods_lib.DEFAULT_METHODS))
    seeds = seeds if seeds is not None else verdict_lib.default_seeds()
    out = Path(out)
    cache = SignatureCache(out / "store")
    groups: dict[str, list[Model]] = {}
    null_names = {m.name for m in null}
    for m in [*models, *null]:
        groups.setdefault(_group_tag(m), []).append(m)
    result = ScanResult(groups={}, failures=list(failures))
    for tag, members in groups.items():
        target = out if len(groups) == 1 else out / tag
        zoo = compare_lib.Zoo(members, seeds=seeds, key=key, engine=engine, cache=cache,
                              method_config=method_config)
        sims, timings, not_run, probes = {}, {}, {}, {}
        for name in methods:
            # Whether the probes depend on the reference, as the first model's probes record it
            # (None: the first model cannot build them; the other references are tried below).
            per_reference = zoo.per_reference(name)
            if per_reference and len(members) > max_reference_models:
                not_run[name] = (f"{name} builds its probes on each reference model: a full matrix of "
                                 f"{len(members)} models needs {len(members)} probe sets and "
                                 f"{len(members) ** 2} signatures (the limit is max_reference_models="
                                 f"{max_reference_models}); compare the pairs you suspect with `jaxprov compare`")
                warnings.warn(f"{tag}: {name} left out: {not_run[name]}", stacklevel=2)
                continue
            if per_reference is None and len(members) > max_reference_models:
                reason = zoo.unavailable(name)
                if default_verdict is None:  # a method the caller named must run
                    raise JaxprovError(reason)
                not_run[name] = reason
                continue
            start = time.perf_counter()
            total = len(members) if per_reference is False else len(members) ** 2
            update, close = _progress(f"{name} ({tag})", total, progress)
            try:
                if per_reference is not False:
                    # Each row on its own reference's probes; the default verdict goes on without
                    # a method no reference can feed (its evidence counts as 0).
                    rows = zoo.reference_rows(name, progress=update)
                    if not rows.probes:  # no reference could build its probes
                        if default_verdict is None:  # a method the caller named must run
                            raise JaxprovError(next(iter(rows.failed.values())))
                        not_run[name] = next(iter(rows.failed.values()))
                        continue
                    sims[name], probes[name] = rows.similarity, rows.probes
                    if rows.failed:
                        not_run[name] = {"rows_missing": rows.failed}
                else:
                    zoo.signatures(name, progress=update)
                    sims[name], probes[name] = zoo.similarity(name), zoo.probes(name).digest
            finally:
                close()
            timings[name] = round(time.perf_counter() - start, 3)
        dead = tuple(any(s.dead[i] for s in sims.values()) for i in range(len(members)))
        is_null = [m.name in null_names for m in members]
        by_null = sum(is_null) >= verdict_lib.MIN_NULL
        default_missing = None
        if default_verdict is not None and not any(n in sims for n in default_verdict.active_methods):
            # No verdict from no evidence: no default matrix when none of its methods ran.
            default_missing = "none of the default verdict's methods could run: " + "; ".join(
                f"{n}: {not_run.get(n)}" for n in default_verdict.active_methods)
        elif default_verdict is not None:
            values = default_verdict.matrix({n: s.values for n, s in sims.items()}, [m.arch for m in members],
                                  is_null if by_null else None)
            gone = np.asarray(dead, bool)
            values[gone, :] = 0.0  # a dead model has no evidence to give: 0, as under every method
            values[:, gone] = 0.0
            sims["default"] = compare_lib.Similarity("default", tuple(zoo.names), values, dead)
        info = {m.name: {"arch": m.arch, "params": m.num_params,
                         "parent": (m.meta.get("lineage") or {}).get("parent"),
                         "derivation": (m.meta.get("lineage") or {}).get("derivation"),
                         "dead": dead[i], "null": is_null[i]} for i, m in enumerate(members)}
        # "probes": one digest per method, or per reference (row) for reference-dependent methods.
        metadata = {"seeds": seeds, "seconds": timings, "probes": probes,
                    "per_reference": [name for name in sims if isinstance(probes.get(name), dict)],
                    "default_verdict": None if default_verdict is None else default_verdict.to_json(),
                    "methods_not_run": not_run, "default_not_written": default_missing,
                    "default_calibrated_by": None if default_verdict is None else (
                        "null models" if by_null else "the zoo itself"),
                    "skipped": list(failures)}
        files = write_report(target, zoo.names, {n: s.values for n, s in sims.items()}, info=info,
                             metadata=metadata, title=f"{title}: {tag}")
        result.groups[tag] = {"models": members, "similarity": sims, "files": files, "zoo": zoo}
    return result


def scan_directory(directory: str | Path, out: str | Path, methods: Sequence[str] | None = None, **kwargs) -> ScanResult:
    from jaxprov.folder import load_zoo_directory

    models, failures = load_zoo_directory(directory)
    if not models:
        raise JaxprovError(f"{directory}: no readable models ({len(failures)} entries failed: "
                           + "; ".join(failures[:3]) + ")")
    return scan_models(models, out, methods, failures=failures, **kwargs)
