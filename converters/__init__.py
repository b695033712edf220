"""Checkpoint -> jaxprov.Model. The only package that may touch PyTorch (and only to load HF models).

Each source family (torchvision, CIFAR zoo layouts, Hugging Face BERT, ...) registers a
`SourceFamily`: `detect` guesses an arch key from a state dict's key -> shape table, and `rules`
gives the rule table for an arch key. Everything else is shared: reading files safely,
unwrapping checkpoint dicts, planning, converting, and the error messages.
"""

from __future__ import annotations

import dataclasses
from typing import Callable, Mapping

import numpy as np

from jaxprov import models
from jaxprov.errors import ArchitectureError
from jaxprov.model import Model
from converters.rules import DEFAULT_IGNORE, Rule, convert, plan

CONVERTER_VERSION = "1"


@dataclasses.dataclass(frozen=True)
class SourceFamily:
    name: str
    model_families: tuple[str, ...]  # jaxprov.models Family names whose arch keys it converts
    detect: Callable[[Mapping[str, tuple[int, ...]]], str | None]
    rules: Callable[[str], list[Rule]]
    ignore: tuple[str, ...] = DEFAULT_IGNORE


_SOURCES: list[SourceFamily] = []


def register_source(source: SourceFamily) -> SourceFamily:
    _SOURCES.append(source)
    return source


def _source_for(arch: str) -> SourceFamily:
    family, _, _ = models.resolve(arch)
    for source in _SOURCES:
        if family.name in source.model_families:
            return source
    raise ArchitectureError(f"no converter knows architecture family {family.name!r} (arch {arch!r})")


def detect_arch(shapes: Mapping[str, tuple[int, ...]], source: str = "state dict") -> str:
    """The one arch key whose rule table fits these keys and shapes exactly; else a clear error."""
    guesses = {}
    for family in _SOURCES:
        arch = family.detect(shapes)
        if arch is not None:
            guesses[arch] = family
    fitting = [a for a, fam in guesses.items()
               if plan(shapes, fam.rules(a), models.abstract_params(a), fam.ignore).ok]
    if len(fitting) == 1:
        return fitting[0]
    if len(fitting) > 1:
        raise ArchitectureError(f"{source}: the weights fit several architectures ({', '.join(sorted(fitting))}); "
                                "name one with arch=... / --arch")
    hint = f" (closest guess {sorted(guesses)[0]} does not fit exactly)" if guesses else ""
    raise ArchitectureError(f"{source}: could not detect the architecture from its {len(shapes)} keys{hint}; "
                            "name it with arch=... / --arch (see `jaxprov archs`)")


def from_state_dict(state_dict: Mapping[str, np.ndarray], arch: str | None = None, *, name: str = "model",
                    source: str = "state dict", meta: Mapping | None = None, progress=None) -> Model:
    """Convert a PyTorch-layout state dict (numpy arrays) into a Model of `arch` (detected if None)."""
    shapes = {k: tuple(np.shape(v)) for k, v in state_dict.items()}
    arch = arch or detect_arch(shapes, source)
    family = _source_for(arch)
    _, canonical, _, _ = models.create(arch)
    params = convert(state_dict, family.rules(canonical), models.abstract_params(canonical),
                     source=source, arch=canonical, ignore=family.ignore, progress=progress)
    dtypes = sorted({str(np.asarray(v).dtype) for v in state_dict.values()})
    meta = {**dict(meta or {}), "converter": {"version": CONVERTER_VERSION, "source_family": family.name,
                                              "source_dtypes": dtypes}}
    return models.build(canonical, params, name=name, meta=meta)


def load_checkpoint(path, arch: str | None = None, *, progress: bool = False, digest: str | None = None) -> Model:
    """A Model from a checkpoint file (.pt/.pth/.bin/.safetensors) or a Hugging Face model directory."""
    from pathlib import Path

    from converters import readers
    from jaxprov import store
    from jaxprov.errors import CheckpointError

    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"{path}: no such file or directory")
    source = {"path": str(path), "sha256": digest or store.file_digest(path)}
    if path.is_dir():
        if not (path / "config.json").exists():
            raise CheckpointError(f"{path}: a directory, but neither a Hugging Face model (no config.json) nor a "
                                  "stored jaxprov model (no jaxprov.json)")
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
from converters import hf_bert  # noqa: E402,F401
