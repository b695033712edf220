"""Load a local Hugging Face model directory (config.json + weights) as a jaxprov Model.

The architecture comes from config.json, never from shapes alone: a state dict does not record
the head count, LayerNorm eps or activation. Weights go through transformers when it and torch
are importable (it applies any renames or fusions its version does on load, and its loading
report tells us if a weight would be randomly initialised); otherwise converters.readers parses
the weight files directly, without running any pickle code.

Supported model_type: "bert". "roberta" / "xlm-roberta" / "camembert" share BERT's key names but
offset position ids by padding_idx + 1 and use one token type; "distilbert" and "electra" rename
or reshape layers: each would need its own handler here.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np

import converters
from converters import hf_bert
from jaxprov.errors import ArchitectureError, CheckpointError
from jaxprov.model import Model

# model_type -> module with hf_class(config) and arch_from_hf_config(config, shapes).
HANDLERS = {"bert": hf_bert}
_HUB_ID = re.compile(r"^[\w\-][\w.\-]*(?:/[\w\-][\w.\-]*)?$")  # "org/name", not a local path


def _read_config(directory: Path) -> dict:
    config_file = directory / "config.json"
    if not directory.is_dir() or not config_file.is_file():
        raise CheckpointError(f"{directory}: not a Hugging Face model directory (no config.json); "
                              "point at the folder holding config.json and model.safetensors / pytorch_model.bin")
    try:
        config = json.loads(config_file.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise CheckpointError(f"{config_file}: not valid JSON ({err})") from None
    model_type = config.get("model_type") if isinstance(config, dict) else None
    if model_type not in HANDLERS:
        raise CheckpointError(f"{directory}: model_type {model_type!r} is not supported; jaxprov loads "
                              f"Hugging Face directories of model_type {', '.join(map(repr, HANDLERS))}")
    return config


def _transformers_state_dict(directory: Path, class_name: str) -> dict[str, np.ndarray] | None:
    """The state dict as transformers loads it, or None when torch / transformers are missing."""
    try:
        import torch
        import transformers
    except ImportError:
        return None
    try:
        model, info = getattr(transformers, class_name).from_pretrained(
            directory, local_files_only=True, output_loading_info=True)
    except (OSError, ValueError) as err:
        raise CheckpointError(f"{directory}: transformers could not load it ({err})") from None
    if info.get("missing_keys"):
        raise CheckpointError(f"{directory}: the weight files lack {len(info['missing_keys'])} tensors "
                              f"({', '.join(sorted(info['missing_keys'])[:5])}); transformers would initialise "
                              "them randomly")
    return {k: (v.float() if v.dtype == torch.bfloat16 else v).detach().cpu().numpy()
            for k, v in model.state_dict().items()}


def load_hf_directory(path: str | Path, arch: str | None = None) -> Model:
    """A jaxprov Model from a local Hugging Face model directory.

    Args:
      path: the directory holding config.json and model.safetensors / pytorch_model.bin (sharded
        checkpoints with an index json included).
      arch: an arch key to force; by default it is built from config.json.

    Returns:
      The converted Model; `name` is the config's hub name (or the directory name) and
      `meta["hf_config"]` the config.json contents.

    Raises:
      CheckpointError: not a model directory, unsupported model_type or class, or unreadable weights.
      ConversionError: the weights do not fit the architecture.
    """
    directory = Path(path).expanduser()
    config = _read_config(directory)
    handler = HANDLERS[config["model_type"]]
    try:
        class_name = handler.hf_class(config)
    except ArchitectureError as err:
        raise CheckpointError(f"{directory}: {err}") from None
    state_dict = _transformers_state_dict(directory, class_name)
    if state_dict is None:
        from converters.readers import read_state_dict
        state_dict = read_state_dict(directory)
    arch = arch or handler.arch_from_hf_config(config, {k: np.shape(v) for k, v in state_dict.items()})
    hub_name = str(config.get("_name_or_path") or "")
    name = hub_name if _HUB_ID.match(hub_name) else directory.resolve().name
    meta = {"source": {"path": str(directory.resolve()), "format": "huggingface"},
            "hf_config": config}
    return converters.from_state_dict(state_dict, arch, name=name, source=str(directory), meta=meta)
