"""The public entry points: `load` any supported source into a Model, `convert` it into the store."""

from __future__ import annotations

import os
import stat
from pathlib import Path

from jaxprov import arguments, store
from jaxprov.errors import ArgumentError, CheckpointError, JaxprovError, StoreError
from jaxprov.model import Model


def load(path: str | os.PathLike, arch: str | None = None, *, progress: bool = False, module: str | None = None,
         module_kwargs: dict | None = None, input_spec=None) -> Model:
    """A Model from a stored jaxprov model, a checkpoint file (.pt/.pth/.bin/.safetensors), or a
    Hugging Face model directory. `arch` names the architecture where it cannot be detected.
    `module` ("package.module:Class", with `module_kwargs` and `input_spec`) and `arch="timm:NAME"`
    read a weights file through the generic torch converter, as `convert` does, without storing it.

    Raises:
      CheckpointError, UnsafeCheckpointError, ArchitectureError, ConversionError, StoreError: each
      with a one-line message naming the file and what to do; ArgumentError for arguments of the
      wrong type.
    """
    path = _source(path, "load: path")
    arch = arguments.optional_str(arch, "load: arch")
    progress = arguments.flag(progress, "load: progress")
    module = arguments.optional_str(module, "load: module")
    if store.is_model_dir(path):
        if module is not None:
            raise ArgumentError(f"{path}: already a converted jaxprov model (its module is recorded); "
                                "load it without --module")
        model = load_model(path)
        if arch is not None and arch != model.arch:
            import converters
            if not converters.names_arch(arch, model.arch):
                raise StoreError(f"{path}: holds a {model.arch} model, not {arch}")
        return model
    import converters  # conversion is the only place that knows checkpoint formats

    try:
        return converters.load_checkpoint(path, arch, progress=progress, module=module,
                                          module_kwargs=module_kwargs, input_spec=input_spec)
    except OSError as err:  # a read the file system refused (EIO, permissions): still one line
        raise CheckpointError(store.os_error_line(err.filename or path, err)) from None


def load_model(directory: str | os.PathLike) -> Model:
    """A stored model (`jaxprov.store.load_model`); a generic torch model's function is traced
    again, which needs torch and torchax (the stored metadata says how to build its module)."""
    directory = arguments.path(directory, "load_model: directory")
    if store.is_model_dir(directory) and store.is_generic(store.read_meta(directory)):
        try:
            import converters.torch_sources  # noqa: F401 - registers the rebuilder of generic models
        except JaxprovError:
            pass  # no torch / torchax: store.load_model says what to install
    return store.load_model(directory)


def from_torch(module, input_spec, **options) -> Model:
    """Any `torch.nn.Module` as a Model, traced by torchax (converters.torch_generic.from_torch)."""
    from converters import torch_generic

    return torch_generic.from_torch(module, input_spec, **options)


def convert(src: str | os.PathLike, out: str | os.PathLike | None = None, arch: str | None = None, *,
            force: bool = False, progress: bool = False, module: str | None = None,
            module_kwargs: dict | None = None, input_spec=None) -> tuple[Path, Model, bool]:
    """Convert `src` once and store it. Returns (directory, model, converted_now).

    `module` ("package.module:Class", with `module_kwargs` and `input_spec`) and `arch="timm:NAME"`
    convert through the generic torch converter (see converters.load_checkpoint).
    Content-addressed: the output is keyed by the source's sha256, the requested arch (or module
    and its kwargs) and the converter version. Without `out` it goes under `store.default_root()/models/`; if the target
    already holds this conversion, nothing is recomputed (converted_now is False). `force` replaces
    a different stored model in `out`, but only a folder that holds a stored model and nothing
    else: foreign files are named and kept.
    """
    src = _source(src, "convert: src")
    out = arguments.optional_path(out, "convert: out")
    arch = arguments.optional_str(arch, "convert: arch")
    force = arguments.flag(force, "convert: force")
    progress = arguments.flag(progress, "convert: progress")
    import converters

    if store.is_model_dir(src):
        raise CheckpointError(f"{src}: already a converted jaxprov model; use it directly")
    try:
        digest = converters.source_digest(src)
    except OSError as err:
        raise CheckpointError(store.os_error_line(err.filename or src, err)) from None
    if out is None:
        tag = (arch or "auto").replace("/", "_").replace("[", "(").replace("]", ")").replace(":", "-")
        if module is not None:
            import hashlib
            import json

            recipe = json.dumps([module, module_kwargs or {}, input_spec.to_json() if input_spec else None],
                                sort_keys=True)
            tag = f"{module.rpartition(':')[2][:40]}-{hashlib.sha256(recipe.encode()).hexdigest()[:12]}"
        out = store.default_root() / "models" / f"{digest[:24]}-{tag}-c{converters.CONVERTER_VERSION}"
    if store.is_model_dir(out) and not force:
        meta = store.read_meta(out)
        same_source = (meta.get("source") or {}).get("sha256") == digest
        same_converter = (meta.get("converter") or {}).get("version") == converters.CONVERTER_VERSION
        if module is None:
            same_arch = arch is None or converters.names_arch(arch, meta.get("arch"))
        else:
            from converters import torch_sources

            recipe = (meta.get("generic") or {}).get("recipe") or {}
            same_arch = recipe.get("class") == module and recipe.get("kwargs") == torch_sources.tg.full_kwargs(
                torch_sources.import_class(module), module_kwargs)
        if same_source and same_converter and same_arch:
            return out, load_model(out), False
        raise StoreError(f"{out}: already holds another model ({meta.get('name')}, {meta.get('arch')}); "
                         "choose another --out or pass --force to replace it")
    store.check_target(out, overwrite=True)  # before the conversion: a refusal costs nothing
    try:
        model = converters.load_checkpoint(src, arch, progress=progress, digest=digest, module=module,
                                           module_kwargs=module_kwargs, input_spec=input_spec)
    except OSError as err:
        raise CheckpointError(store.os_error_line(err.filename or src, err)) from None
    return store.save_model(model, out, overwrite=True), model, True


def _source(value, what: str) -> Path:
    """A path to read a model from: a folder, or a regular file (a FIFO or device would block or
    never end; `converters.readers.check_regular_file` refuses them without opening them)."""
    path = arguments.path(value, what)
    try:
        if stat.S_ISDIR(os.stat(path).st_mode):
            return path
    except OSError:
        pass  # check_regular_file names what is wrong
    from converters.readers import check_regular_file

    check_regular_file(path)
    return path
