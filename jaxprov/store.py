"""Converted models on disk: params through orbax-checkpoint, everything else in `jaxprov.json`.

A stored model directory holds `params/` (an orbax checkpoint of the plain params tree) and
`jaxprov.json` (arch, input spec, provenance), and nothing else. It is written into a temporary
sibling directory `.NAME.tmp-*` and renamed into place, so a crash never leaves a half-written model
under the final name. The writer holds an exclusive `flock` on that temporary directory while it
writes; the next write to the same place removes every `.NAME.tmp-*` sibling whose lock it can take
(its writer died) and that is older than `atomic.STALE_AFTER_S` (a writer takes its lock right
after mkdir), the same test `jaxprov.atomic` applies to the temporaries of file writes.
The params go through `jaxprov.params_io` (orbax, synchronously: no background threads, so a failed
write ends with one StoreError and the process exits).

A stored model is input like any other: loading checks `jaxprov.json` field by field (types, the
arch key, the input spec against the arch's) and the params against the arch's tree (paths, shapes,
declared before anything is allocated: `params_io.restore`) and against the recorded
`params_sha256`; any mismatch is one StoreError. Loading needs neither
torch nor the source checkpoint, except for generic models (converters/torch_generic.py): their
function is traced from a torch module again, which `meta["generic"]` says how to build; the
converter registers that rebuilder (`register_rebuilder`), and `jaxprov.load` imports it.
"""

from __future__ import annotations

import errno
import fcntl
import json
import math
import os
import shutil
import stat
import uuid
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from jaxprov import params_io
from jaxprov.atomic import remove_if_abandoned
from jaxprov.errors import StoreError
from jaxprov.identity import model_digest, params_digest, remember  # noqa: F401  (model_digest re-exported)
from jaxprov.model import OUTPUT_KINDS, InputSpec, Model
from jaxprov.version import __version__

META_FILE = "jaxprov.json"
PARAMS_DIR = "params"
MODEL_ENTRIES = frozenset({META_FILE, PARAMS_DIR})  # everything a stored model directory holds
FORMAT = "jaxprov-model"
FORMAT_VERSION = 1
MAX_META_BYTES = 16 << 20  # a jaxprov.json larger than this is not one jaxprov wrote


# The rebuilder of generic (torchax) models: meta -> an object with `arch`, `apply(params, x)` and
# `abstract_params()`; registered by converters.torch_sources when it is imported.
_REBUILDER: list = []


def register_rebuilder(rebuild) -> None:
    _REBUILDER[:] = [rebuild]


def is_generic(meta: dict) -> bool:
    """Whether a stored model's metadata describes a generic (torchax-traced) model."""
    return isinstance(meta.get("generic"), dict)


def default_root() -> Path:
    """Where content-addressed conversions live: $JAXPROV_HOME, else ~/.cache/jaxprov."""
    return Path(os.environ.get("JAXPROV_HOME") or Path.home() / ".cache" / "jaxprov")


def os_error_line(path: str | os.PathLike, err: OSError, what: str = "cannot read", advice: str | None = None) -> str:
    """One line for a failed file-system call: the path, what failed, the reason, what to do."""
    reason = err.strerror or type(err).__name__
    advice = advice or {errno.ENAMETOOLONG: "use a shorter name", errno.ENOTDIR: "a parent of it is a file, not a folder",
              errno.EACCES: "check its permissions", errno.EPERM: "check its permissions",
              errno.EROFS: "choose a writable location", errno.ENOSPC: "free some space",
              errno.ENOENT: "check the path"}.get(err.errno, "check the path and its permissions")
    return f"{path}: {what} ({reason}); {advice}"


def is_model_dir(path: str | os.PathLike) -> bool:
    """Whether `path` is a directory holding a `jaxprov.json` (False for paths that cannot be stat'ed)."""
    try:
        return stat.S_ISREG(os.stat(Path(path) / META_FILE).st_mode)
    except (OSError, ValueError):
        return False


def foreign_entries(directory: str | os.PathLike) -> list[str]:
    """Names in a stored model directory that are not part of a stored model (sorted)."""
    return sorted(p.name for p in Path(directory).iterdir() if p.name not in MODEL_ENTRIES)


def read_meta(directory: str | os.PathLike) -> dict[str, Any]:
    """A stored model's `jaxprov.json`, checked field by field; a StoreError names what is wrong."""
    path = Path(directory) / META_FILE
    try:
        info = os.stat(path)
        if not stat.S_ISREG(info.st_mode):
            raise StoreError(f"{path}: not a regular file; delete the directory and convert again")
        if info.st_size > MAX_META_BYTES:
            raise StoreError(f"{path}: larger than {MAX_META_BYTES >> 20} MiB, not metadata jaxprov wrote; "
                             "delete the directory and convert again")
        meta = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise StoreError(f"{directory}: not a stored jaxprov model (no {META_FILE}); "
                         "convert a checkpoint with `jaxprov convert`") from None
    except OSError as err:
        raise StoreError(os_error_line(path, err)) from None
    except (ValueError, UnicodeDecodeError, RecursionError):  # JSONDecodeError, over-long integers, deep nesting
        raise StoreError(f"{path}: corrupt metadata (not valid JSON); delete the directory and convert again") from None
    if not isinstance(meta, dict):
        raise StoreError(f"{path}: corrupt metadata (a JSON {type(meta).__name__}, not an object); "
                         "delete the directory and convert again")
    version = meta.get("format_version")
    if meta.get("format") != FORMAT or type(version) is not int or not 1 <= version <= FORMAT_VERSION:
        raise StoreError(f"{path}: written by an incompatible jaxprov (format {_short(meta.get('format'))} "
                         f"v{_short(version)}); upgrade jaxprov or convert again")
    problems = _meta_problems(meta)
    if problems:
        raise StoreError(f"{path}: corrupt metadata ({'; '.join(problems[:4])}); delete the directory and convert again")
    return meta


def _short(value: Any, limit: int = 40) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + "..."


def _meta_problems(meta: dict) -> list[str]:
    """What is wrong with the fields of a parsed `jaxprov.json` (empty when nothing is)."""
    from jaxprov import models
    from jaxprov.errors import JaxprovError

    problems = []
    for field, kind in (("name", str), ("arch", str), ("output_kind", str), ("input_spec", dict),
                        ("num_params", int), ("params_sha256", str)):
        value = meta.get(field)
        if type(value) is not kind:
            problems.append(f"{field} is {_short(value)}, not a {kind.__name__}")
    for field in ("source", "converter", "lineage"):
        if meta.get(field) is not None and not isinstance(meta[field], dict):
            problems.append(f"{field} is {_short(meta[field])}, not an object")
    for field, key, kind in (("source", "sha256", str), ("source", "path", str), ("converter", "source_family", str),
                             ("converter", "source_dtypes", list)):
        value = (meta.get(field) or {}).get(key) if isinstance(meta.get(field), dict) else None
        if value is not None and (type(value) is not kind or (kind is list and not all(isinstance(v, str) for v in value))):
            problems.append(f"{field}.{key} is {_short(value)}, not a {'list of strings' if kind is list else 'string'}")
    if problems:
        return problems
    if meta["output_kind"] not in OUTPUT_KINDS:
        problems.append(f"output_kind {_short(meta['output_kind'])} is not one of {', '.join(OUTPUT_KINDS)}")
    if meta["num_params"] < 0:
        problems.append(f"num_params {meta['num_params']} is negative")
    if is_generic(meta):
        if not meta["arch"].startswith("torch:"):
            problems.append(f"arch {_short(meta['arch'])} is not a generic model's (torch:...)")
        try:  # the rebuilt module decides the rest; its spec is this one
            return problems + _spec_problems(meta["input_spec"], InputSpec.from_json(meta["input_spec"]))
        except (TypeError, ValueError, OverflowError, KeyError):
            return problems + [f"input_spec {_short(meta['input_spec'])} does not parse"]
    try:
        _, _, arch_spec, _ = models.create(meta["arch"])
    except (JaxprovError, TypeError, ValueError, OverflowError, RecursionError):
        return problems + [f"arch {_short(meta['arch'])} is not an architecture jaxprov knows"]
    problems += _spec_problems(meta["input_spec"], arch_spec)
    return problems


def _spec_problems(data: dict, arch_spec: InputSpec) -> list[str]:
    """The stored input spec must parse and agree with its arch's on everything probes depend on."""
    try:
        spec = InputSpec.from_json(data)
    except (TypeError, ValueError, OverflowError, KeyError):
        return [f"input_spec {_short(data)} does not parse"]
    problems = [f"input_spec.{field} {_short(getattr(spec, field))} is not the arch's {_short(getattr(arch_spec, field))}"
                for field in ("modality", "layout", "shape", "dtype", "vocab_size")
                if getattr(spec, field) != getattr(arch_spec, field)]
    channels = spec.shape[-1] if spec.modality == "image" and spec.shape else None
    for field in ("mean", "std"):
        value = getattr(spec, field)
        if value is not None and (len(value) != channels or not all(math.isfinite(v) for v in value)):
            problems.append(f"input_spec.{field} needs {channels} finite values per channel")
    if spec.std is not None and any(v <= 0 for v in spec.std):
        problems.append("input_spec.std must be positive")
    if (spec.mean is None) != (spec.std is None):
        problems.append("input_spec.mean and std come together")
    if spec.raw_range is not None and (len(spec.raw_range) != 2 or not all(math.isfinite(v) for v in spec.raw_range)
                                       or spec.raw_range[0] >= spec.raw_range[1]):
        problems.append(f"input_spec.raw_range {_short(spec.raw_range)} is not a finite (low, high)")
    return problems


def check_target(directory: str | os.PathLike, *, overwrite: bool = False) -> Path:
    """The absolute path `directory`, if a model may be written there; else a StoreError naming why.

    Writable places: a path that does not exist yet (its parents are created), an empty directory,
    or, with `overwrite`, a stored model directory that holds nothing but the stored model."""
    target = Path(directory).absolute()
    try:
        for parent in reversed(target.parents):
            if parent.exists() and not parent.is_dir():
                raise StoreError(f"{target}: cannot write there, {parent} is a file, not a folder; "
                                 "choose another output directory")
        if not target.exists():
            if len(os.fsencode(f".{target.name}.tmp-00000000")) > os.pathconf(_existing(target), "PC_NAME_MAX"):
                raise StoreError(f"{target}: name too long for this file system; use a shorter name")
            return target
        if not target.is_dir():
            raise StoreError(f"{target}: exists and is a file, not a folder; choose another output directory")
        entries = sorted(p.name for p in target.iterdir())
        if not entries:
            return target
        if not is_model_dir(target):
            raise StoreError(f"{target}: exists and is not a stored jaxprov model (it holds "
                             f"{', '.join(entries[:5])}{', ...' if len(entries) > 5 else ''}); choose another output directory")
        if not overwrite:
            raise StoreError(f"{target}: already holds a stored model; choose another output directory or overwrite it")
        foreign = foreign_entries(target)
        if foreign:
            raise StoreError(f"{target}: holds files that are not part of a stored model "
                             f"({', '.join(foreign[:5])}{', ...' if len(foreign) > 5 else ''}); "
                             "refusing to replace it: move them away or choose another output directory")
    except OSError as err:
        raise StoreError(os_error_line(target, err, "cannot write there")) from None
    return target


def _existing(path: Path) -> Path:
    """The nearest ancestor of `path` that exists (pathconf needs one)."""
    for parent in path.parents:
        if parent.exists():
            return parent
    return Path("/")


def _tmp_prefix(target: Path) -> str:
    return f".{params_io.GLOB_CHARS.sub('_', target.name)}.tmp-"  # orbax would read [ ] * ? as a pattern


def remove_stale_temporaries(target: str | os.PathLike) -> list[Path]:
    """Remove the `.NAME.tmp-*` folders beside `target` that interrupted writes left; returns them.

    A folder counts as stale when its exclusive lock can be taken (the writer holding it is gone:
    the kernel drops a dead process's flocks) and it is older than `atomic.STALE_AFTER_S` (a writer
    locks its folder right after creating it): `atomic.remove_if_abandoned`, as for files. `.NAME.old-*` folders (an interrupted replace's old
    copy) are removed by the same test once `target` exists again."""
    target = Path(target)
    prefixes = [_tmp_prefix(target)] + ([f".{target.name}.old-"] if target.exists() else [])
    try:
        candidates = [p for p in target.parent.iterdir()
                      if any(p.name.startswith(prefix) for prefix in prefixes) and not p.is_symlink() and p.is_dir()]
    except OSError:
        return []
    return [candidate for candidate in candidates if remove_if_abandoned(candidate)]


def save_model(model: Model, directory: str | os.PathLike, *, overwrite: bool = False) -> Path:
    """Write `model` atomically to `directory`; returns the directory.

    `directory` must not exist, be empty, or (with `overwrite`) hold a stored model and nothing
    else (`check_target`). Stale temporaries of earlier interrupted writes there are removed first.
    Raises StoreError with one line for anything the file system refuses (read-only, not a
    folder, name too long, no space), with no writer left running."""
    import flax
    import jax

    target = check_target(directory, overwrite=overwrite)
    params_io.check_path(target.parent, target, StoreError)  # the temporary's own name spells them "_"
    tmp = target.parent / f"{_tmp_prefix(target)}{uuid.uuid4().hex[:8]}"
    lock = None
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        for stale in remove_stale_temporaries(target):
            warnings.warn(f"removed {stale}, left by an interrupted write", stacklevel=2)
        try:
            tmp.mkdir()
        except OSError as err:
            raise StoreError(os_error_line(target.parent, err, "cannot create a folder in it",
                                               "choose a writable output directory")) from None
        lock = os.open(tmp, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
        fcntl.flock(lock, fcntl.LOCK_EX)
        params = jax.tree_util.tree_map(np.asarray, model.params)
        params_io.save(tmp / PARAMS_DIR, params, target, StoreError)
        # The model's own meta first: a model loaded from the store carries the old params_sha256,
        # num_params and versions, which must never override what is written now.
        meta = {
            **{k: v for k, v in dict(model.meta).items() if k not in ("name", "arch")},
            "format": FORMAT, "format_version": FORMAT_VERSION,
            "name": model.name, "arch": model.arch, "output_kind": model.output_kind,
            "input_spec": model.input_spec.to_json(),
            "num_params": model.num_params, "params_sha256": params_digest(params),
            "versions": {"jaxprov": __version__, "jax": jax.__version__, "flax": flax.__version__},
        }
        (tmp / META_FILE).write_text(json.dumps(meta, indent=2, default=_json_default))
        if target.exists():
            trash = target.parent / f".{target.name}.old-{uuid.uuid4().hex[:8]}"
            target.rename(trash)
            tmp.rename(target)
            shutil.rmtree(trash, ignore_errors=True)
        else:
            tmp.rename(target)
    except OSError as err:
        raise StoreError(os_error_line(target, err, "cannot write the model")) from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        if lock is not None:
            os.close(lock)
    return target


def load_model(directory: str | os.PathLike) -> Model:
    """Load a stored model (no torch needed), checking it as untrusted input: metadata fields
    (`read_meta`), the params tree against the arch's (paths and shapes), and the params' sha256
    against the recorded `params_sha256` (`params_io.restore`: checked before they are allocated)."""
    from jaxprov import models

    directory = Path(directory).absolute()
    meta = read_meta(directory)
    function = _rebuild(directory, meta) if is_generic(meta) else None
    abstract = function.abstract_params() if function is not None else models.abstract_params(meta["arch"])
    params = params_io.restore(directory / PARAMS_DIR, abstract, meta["params_sha256"], shown=directory,
                               what="the stored params", fits=meta["arch"],
                               advice="delete the directory and convert again", error=StoreError)
    digest = meta["params_sha256"]
    if function is not None:
        model = Model(name=meta["name"], arch=meta["arch"], module=function, params=params,
                      input_spec=InputSpec.from_json(meta["input_spec"]), output_kind=meta["output_kind"], meta=meta)
    else:
        model = models.build(meta["arch"], params, name=meta["name"], meta=meta)
        model = model.replace(input_spec=InputSpec.from_json(meta["input_spec"]), output_kind=meta["output_kind"])
    remember(model, digest)  # checked just now: the signature cache need not hash again
    return model


def _rebuild(directory: Path, meta: dict):
    """The traced function of a stored generic model; one StoreError if it cannot be rebuilt here."""
    from jaxprov.errors import JaxprovError

    generic = meta["generic"]
    recipe = generic.get("recipe") if isinstance(generic.get("recipe"), dict) else {}
    what = f"a generic torch model ({_short(recipe.get('kind'))} {_short(recipe.get('class') or recipe.get('name'))})"
    if not _REBUILDER:
        raise StoreError(f"{directory}: {what}; loading it needs torch and torchax: install them "
                         f"({generic.get('loading_needs') or 'pip install jaxprov[torch]'}) and load it with jaxprov.load")
    try:
        function = _REBUILDER[0](meta)
    except JaxprovError as err:
        raise StoreError(f"{directory}: {what} cannot be rebuilt here: {err}") from None
    if function.arch != meta["arch"]:
        raise StoreError(f"{directory}: {what} rebuilds as {function.arch}, not the stored {meta['arch']} (the class, "
                         "its kwargs or the installed versions changed); convert the checkpoint again")
    return function


def _json_default(value):
    if isinstance(value, (np.integer, np.floating)):
        return value.item()
    if isinstance(value, (set, tuple)):
        return list(value)
    if isinstance(value, os.PathLike):
        return str(value)
    raise TypeError(f"not JSON-serialisable: {type(value).__name__}")
