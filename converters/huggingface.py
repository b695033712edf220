"""Load a local Hugging Face model directory (config.json + weights) as a jaxprov Model.

The architecture comes from config.json, never from shapes alone: a state dict does not record
the head count, LayerNorm eps or activation. The weight files are always read by
converters.readers (one pickle policy: the whitelist unpickler, never `torch.load`), and only
files that resolve inside the folder are opened. When transformers and torch are importable, the
tensors jaxprov read are handed to transformers (`from_pretrained(None, config=..., state_dict=...)`),
which applies any renames or fusions its version does on load and reports weights it would
initialise randomly; otherwise they are converted as read.

Hand-written model_type: "bert". Every other model_type transformers knows (DistilBERT, RoBERTa,
GPT-2, ViT, ...) goes through the generic torch converter (converters/torch_sources.py), which
needs torch, transformers and torchax.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import ml_dtypes
import numpy as np

from converters import hf_bert, readers
from converters.state_dict import from_state_dict
from jaxprov.errors import ArchitectureError, CheckpointError
from jaxprov.model import Model

# model_type -> module with hf_class(config) and arch_from_hf_config(config, shapes).
HANDLERS = {"bert": hf_bert}
_HUB_ID = re.compile(r"^[\w\-][\w.\-]*(?:/[\w\-][\w.\-]*)?$")  # "org/name", not a local path


def _read_config(directory: Path) -> dict:
    if not directory.is_dir() or not os.path.lexists(directory / "config.json"):
        raise CheckpointError(f"{directory}: not a Hugging Face model directory (no config.json); "
                              "point at the folder holding config.json and model.safetensors / pytorch_model.bin")
    config_file = directory / "config.json"
    config = readers.read_json(readers.resolve_inside(directory, "config.json"), str(config_file))
    if not isinstance(config, dict):
        raise CheckpointError(f"{config_file}: not a JSON object; a Hugging Face config.json maps field names to values")
    model_type = config.get("model_type")
    if not isinstance(model_type, str):
        raise CheckpointError(f"{directory / 'config.json'}: model_type {model_type!r:.40} is not supported (not a "
                              "string); a Hugging Face config.json names its model_type")
    return config


def _through_transformers(directory: Path, config: dict, class_name: str,
                          state_dict: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The state dict as transformers would load it from these tensors (its renames and fusions
    applied), or `state_dict` unchanged when torch / transformers are missing."""
    try:
        import torch
        import transformers
    except ImportError:
        return state_dict
    try:
        hf_config = transformers.BertConfig.from_dict(config)
        tensors = {k: torch.from_numpy(np.array(v, np.float32) if v.dtype == ml_dtypes.bfloat16 else np.array(v))
                   for k, v in state_dict.items()}
        model, info = getattr(transformers, class_name).from_pretrained(
            None, config=hf_config, state_dict=tensors, output_loading_info=True)
    except (OSError, ValueError, TypeError, KeyError, AttributeError, RuntimeError) as err:
        raise CheckpointError(f"{directory}: transformers could not build the model from its config.json and "
                              f"weights ({type(err).__name__}: {str(err).splitlines()[0][:160] if str(err) else ''})") from None
    for problem, what in (("missing_keys", "lack"), ("mismatched_keys", "have other shapes than config.json gives for")):
        keys = sorted(str(k[0] if isinstance(k, tuple) else k) for k in info.get(problem) or ())
        if keys:
            raise CheckpointError(f"{directory}: the weight files {what} {len(keys)} tensors ({', '.join(keys[:5])}); "
                                  "transformers would initialise them randomly")
    return {k: (v.float() if v.dtype == torch.bfloat16 else v).detach().cpu().numpy()
            for k, v in model.state_dict().items()}


def _check_size(directory: Path, arch: str, state_dict: dict[str, np.ndarray]) -> None:
    """Refuse a config.json that describes a far bigger model than the weight files hold, before
    transformers allocates it (the weights were already bounded by the readers)."""
    import jax

    from jaxprov import models

    needed = sum(int(np.prod(leaf.shape, dtype=object)) * np.dtype(leaf.dtype).itemsize
                 for leaf in jax.tree_util.tree_leaves(models.abstract_params(arch)))
    held = sum(v.nbytes for v in state_dict.values())
    if needed > 2 * held + 2**26:
        raise CheckpointError(f"{directory}: config.json describes a model of {needed:,} bytes but the weight files "
                              f"hold {held:,}; fix config.json or the weights")


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
    if config["model_type"] not in HANDLERS:
        if arch is not None:
            raise ArchitectureError(f"{directory}: model_type {config['model_type']!r:.40} has no hand-written family; "
                                    "it is converted generically from config.json, without --arch")
        from converters import torch_sources

        return torch_sources.from_hf_directory(directory, config)
    handler = HANDLERS[config["model_type"]]
    try:
        class_name = handler.hf_class(config)
    except ArchitectureError as err:
        raise CheckpointError(f"{directory / 'config.json'}: {err}") from None
    state_dict = readers.read_state_dict(directory)
    try:
        config_arch = handler.arch_from_hf_config(config, {k: np.shape(v) for k, v in state_dict.items()})
        _check_size(directory, config_arch, state_dict)
    except ArchitectureError as err:
        raise CheckpointError(f"{directory / 'config.json'}: {err}") from None
    state_dict = _through_transformers(directory, config, class_name, state_dict)
    arch = arch or config_arch
    hub_name = config.get("_name_or_path")
    hub_name = hub_name if isinstance(hub_name, str) else ""
    name = hub_name if _HUB_ID.match(hub_name) else directory.resolve().name
    meta = {"source": {"path": str(directory.resolve()), "format": "huggingface"},
            "hf_config": config}
    return from_state_dict(state_dict, arch, name=name, source=str(directory), meta=meta)
