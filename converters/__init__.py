"""Checkpoint -> jaxprov.Model. The only package that may touch PyTorch (and only to load HF models).

Each source family (torchvision, CIFAR zoo layouts, Hugging Face BERT, ...) registers a
`SourceFamily`: `detect` guesses an arch key from a state dict's key -> shape table, and `rules`
gives the rule table for an arch key. Everything else is shared: reading files safely,
unwrapping checkpoint dicts, planning, converting, and the error messages.
"""

from __future__ import annotations

from typing import Mapping

from converters.registry import SourceFamily, register_source  # noqa: F401
from converters.state_dict import (CONVERTER_VERSION, detect_arch, free_fields, from_state_dict,  # noqa: F401
                                   names_arch, resolve_arch, with_free_fields)
from jaxprov.model import Model


def source_digest(path) -> str:
    """sha256 of exactly the files that loading `path` reads (converters.readers.source_files): a
    file's contents, or for a folder each file's name inside it and its contents, in sorted order."""
    import hashlib
    from pathlib import Path

    from converters import readers

    path = Path(path)
    files = readers.source_files(path)
    digest = hashlib.sha256()
    root = path.resolve()
    for file in sorted(files):
        if path.is_dir():
            digest.update(str(file.relative_to(root)).encode() + b"\0")
        with readers.open_regular(file) as fh:
            for block in iter(lambda: fh.read(1 << 22), b""):
                digest.update(block)
    return digest.hexdigest()


def load_checkpoint(path, arch: str | None = None, *, progress: bool = False, digest: str | None = None,
                    module: str | None = None, module_kwargs: Mapping | None = None,
                    input_spec=None) -> Model:
    """A Model from a checkpoint file (.pt/.pth/.bin/.safetensors), a `torch.export` archive (.pt2)
    or a Hugging Face model directory.

    `module` ("package.module:Class", built with `module_kwargs`) or `arch="timm:NAME"` convert
    the weights through the generic torch converter (converters/torch_generic.py), as do .pt2
    archives and Hugging Face folders whose model_type has no hand-written family; `input_spec`
    gives a custom module's input (a timm model's defaults to timm's config).
    Only regular files are opened (FIFOs, devices and sockets are refused before any open), and a
    folder's files must lie inside it; `digest` (default: source_digest(path)) is recorded as the source.
    """
    import os
    from pathlib import Path

    from converters import readers
    from jaxprov.errors import CheckpointError

    path = Path(path)
    if not os.path.lexists(path):
        raise CheckpointError(f"{path}: no such file or directory")
    if not path.is_dir():
        readers.check_regular_file(path)
    if path.is_dir() and not (path / "config.json").exists():
        raise CheckpointError(f"{path}: a directory, but neither a Hugging Face model (no config.json) nor a "
                              "stored jaxprov model (no jaxprov.json)")
    source = {"path": str(path), "sha256": digest or source_digest(path)}
    generic = module is not None or (arch or "").startswith("timm:") or (
        not path.is_dir() and path.suffix == ".pt2")
    if generic:
        if path.is_dir():
            raise CheckpointError(f"{path}: --module and timm: convert a weights file, not a folder")
        from converters import torch_sources

        if module is not None:
            return torch_sources.from_class_checkpoint(path, module, module_kwargs, input_spec, meta={"source": source})
        if arch is not None and arch.startswith("timm:"):
            return torch_sources.from_timm_checkpoint(path, arch[len("timm:"):], input_spec, meta={"source": source})
        return torch_sources.from_export_archive(path, input_spec, meta={"source": source}, digest=source["sha256"])
    if path.is_dir():
        from converters import huggingface

        model = huggingface.load_hf_directory(path, arch)
        return model.replace(meta={**dict(model.meta), "source": source})
    state_dict = readers.read_state_dict(path)
    bar = None
    if progress:
        from tqdm import tqdm

        bar = lambda items: tqdm(items, desc=f"converting {path.name}", unit="tensor", leave=False)  # noqa: E731
    return from_state_dict(state_dict, arch, name=path.stem, source=str(path), meta={"source": source},
                           progress=bar)


# Source families register themselves on import.
from converters import small  # noqa: E402,F401
from converters import torchvision_vit  # noqa: E402,F401
from converters import torchvision  # noqa: E402,F401
from converters import cifar  # noqa: E402,F401
from converters import sdn  # noqa: E402,F401
from converters import hf_bert  # noqa: E402,F401
