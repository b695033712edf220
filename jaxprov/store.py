"""Converted models on disk: params through orbax-checkpoint, everything else in `jaxprov.json`.

A stored model directory holds `params/` (an orbax checkpoint of the plain params tree) and
`jaxprov.json` (arch, input spec, provenance). It is written into a temporary sibling directory and
renamed into place, so a crash never leaves a half-written model under the final name. Loading needs
neither torch nor the source checkpoint.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import uuid
import weakref
from pathlib import Path
from typing import Any

import numpy as np

from jaxprov.errors import StoreError
from jaxprov.model import InputSpec, Model

META_FILE = "jaxprov.json"
FORMAT = "jaxprov-model"
FORMAT_VERSION = 1


def default_root() -> Path:
    """Where content-addressed conversions live: $JAXPROV_HOME, else ~/.cache/jaxprov."""
    return Path(os.environ.get("JAXPROV_HOME") or Path.home() / ".cache" / "jaxprov")


def file_digest(path: str | os.PathLike) -> str:
    """sha256 of a file, or of a directory's files (names and contents, in sorted order)."""
    path = Path(path)
    digest = hashlib.sha256()
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    for file in files:
        if path.is_dir():
            digest.update(str(file.relative_to(path)).encode() + b"\0")
        with open(file, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 22), b""):
                digest.update(block)
    return digest.hexdigest()


def params_digest(params) -> str:
    """sha256 over a params tree's paths, dtypes, shapes and bytes: the model's content identity."""
    import jax

    digest = hashlib.sha256()
    for path, leaf in sorted(jax.tree_util.tree_leaves_with_path(params), key=lambda kv: jax.tree_util.keystr(kv[0])):
        array = np.ascontiguousarray(np.asarray(leaf))
        digest.update(f"{jax.tree_util.keystr(path)}|{array.dtype}|{array.shape}".encode())
        digest.update(array.tobytes())
    return digest.hexdigest()


# Hashing a big params tree costs ~1 s/GB; a Model is immutable, so once per object is enough.
_PARAMS_SHA256: "weakref.WeakKeyDictionary[Model, str]" = weakref.WeakKeyDictionary()


def model_digest(model: Model) -> str:
    """`jaxprov.store.params_digest(model.params)`, computed once per Model object."""
    digest = _PARAMS_SHA256.get(model)
    if digest is None:
        digest = _PARAMS_SHA256[model] = params_digest(model.params)
    return digest


def is_model_dir(path: str | os.PathLike) -> bool:
    return (Path(path) / META_FILE).is_file()


def read_meta(directory: str | os.PathLike) -> dict[str, Any]:
    path = Path(directory) / META_FILE
    try:
        meta = json.loads(path.read_text())
    except FileNotFoundError:
        raise StoreError(f"{directory}: not a stored jaxprov model (no {META_FILE}); "
                         "convert a checkpoint with `jaxprov convert`") from None
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise StoreError(f"{path}: corrupt metadata; delete the directory and convert again") from None
    if meta.get("format") != FORMAT or meta.get("format_version", 0) > FORMAT_VERSION:
        raise StoreError(f"{path}: written by an incompatible jaxprov (format {meta.get('format')!r} "
                         f"v{meta.get('format_version')}); upgrade jaxprov or convert again")
    return meta


def save_model(model: Model, directory: str | os.PathLike, *, overwrite: bool = False) -> Path:
    """Write `model` atomically to `directory`; returns the directory."""
    import flax
    import jax
    import orbax.checkpoint as ocp

    from jaxprov import __version__

    target = Path(directory).absolute()
    if target.exists() and not overwrite:
        raise StoreError(f"{target}: already exists; choose another output directory or overwrite it")
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.parent / f".{target.name}.tmp-{uuid.uuid4().hex[:8]}"
    try:
        params = jax.tree_util.tree_map(np.asarray, model.params)
        checkpointer = ocp.StandardCheckpointer()
        checkpointer.save(tmp / "params", params)
        checkpointer.wait_until_finished()
        meta = {
            "format": FORMAT, "format_version": FORMAT_VERSION,
            "name": model.name, "arch": model.arch, "output_kind": model.output_kind,
            "input_spec": model.input_spec.to_json(),
            "num_params": model.num_params, "params_sha256": params_digest(params),
            "versions": {"jaxprov": __version__, "jax": jax.__version__, "flax": flax.__version__},
            **{k: v for k, v in dict(model.meta).items() if k not in ("name", "arch")},
        }
        (tmp / META_FILE).write_text(json.dumps(meta, indent=2, default=_json_default))
        if target.exists():
            trash = target.parent / f".{target.name}.old-{uuid.uuid4().hex[:8]}"
            target.rename(trash)
            tmp.rename(target)
            shutil.rmtree(trash, ignore_errors=True)
        else:
            tmp.rename(target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def load_model(directory: str | os.PathLike) -> Model:
    """Load a stored model (no torch needed)."""
    import orbax.checkpoint as ocp

    from jaxprov import models

    directory = Path(directory).absolute()
    meta = read_meta(directory)
    try:
        params = ocp.StandardCheckpointer().restore(directory / "params")
    except Exception as err:  # orbax raises many types for a damaged checkpoint
        raise StoreError(f"{directory}: the stored params cannot be read ({type(err).__name__}); "
                         "delete the directory and convert again") from None
    params = _to_dicts(params)
    model = models.build(meta["arch"], params, name=meta.get("name"), meta=meta)
    return model.replace(input_spec=InputSpec.from_json(meta["input_spec"]),
                         output_kind=meta.get("output_kind", model.output_kind))


def _to_dicts(tree):
    if isinstance(tree, dict):
        return {k: _to_dicts(v) for k, v in tree.items()}
    return np.asarray(tree)


def _json_default(value):
    if isinstance(value, (np.integer, np.floating)):
        return value.item()
    if isinstance(value, (set, tuple)):
        return list(value)
    if isinstance(value, os.PathLike):
        return str(value)
    raise TypeError(f"not JSON-serialisable: {type(value).__name__}")
