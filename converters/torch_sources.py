"""Where generic (torchax) models come from, and how a stored one is rebuilt.

Four sources, each recorded in `meta["generic"]["recipe"]` so that `jaxprov.load` of a stored copy
can build the same torch module again (structure only; the weights are the stored params):
  - "module": a user's own class, `package.module:Class` plus JSON kwargs. The class is imported
    from the user's environment (it is their code, not the checkpoint's); the weights are still
    read by converters.readers, never `torch.load`.
  - "timm": a timm architecture by name (`timm:resnet18d`), `num_classes` read from the checkpoint,
    input size and normalisation from timm's pretrained config.
  - "huggingface": a Hugging Face folder whose model_type has no hand-written family, built by
    transformers from config.json (never `trust_remote_code`) with tensors read by jaxprov.
  - "export": a `torch.export` archive (.pt2), read by converters.export_archive, which refuses
    anything torch's own loader would unpickle or evaluate.
Rebuilding imports a class named in the stored jaxprov.json (docs/security.md): only subclasses of
`torch.nn.Module` are ever called, with JSON kwargs.
"""

from __future__ import annotations

import importlib
import inspect
import json
import re
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from converters import readers, torch_generic as tg
from jaxprov.errors import ArchitectureError, CheckpointError, ConversionError, JaxprovError
from jaxprov.model import InputSpec, Model

_CLASS_PATH = re.compile(r"^[A-Za-z_][\w]*(?:\.[A-Za-z_]\w*)*:[A-Za-z_]\w*(?:\.[A-Za-z_]\w*)*$")
_TIMM_NAME = re.compile(r"^[A-Za-z0-9_.\-]{1,120}$")


# -- a user's own class --------------------------------------------------------------------------

def import_class(path: str):
    """`package.module:Class` -> the class, if it is a torch.nn.Module subclass; else one line."""
    torch, _, _ = tg.torchax_modules()
    if not isinstance(path, str) or not _CLASS_PATH.match(path):
        raise ArchitectureError(f"module {str(path)[:80]!r} is not of the form package.module:Class")
    module_name, _, qualname = path.partition(":")
    try:
        obj = importlib.import_module(module_name)
    except Exception as err:  # noqa: BLE001 - importing the user's module runs their code
        raise ArchitectureError(f"{path}: cannot import {module_name} ({type(err).__name__}: {tg._first_line(err)}); "
                                "check the name and that the package is installed or on PYTHONPATH") from None
    for part in qualname.split("."):
        if not hasattr(obj, part):
            raise ArchitectureError(f"{path}: {module_name} has no {qualname}; check the class name")
        obj = getattr(obj, part)
    if not (isinstance(obj, type) and issubclass(obj, torch.nn.Module)):
        raise ArchitectureError(f"{path}: not a torch.nn.Module subclass ({type(obj).__name__}); name the model's class")
    return obj


def build_class(path: str, kwargs: Mapping[str, Any] | None):
    cls = import_class(path)
    kwargs = tg.full_kwargs(cls, kwargs)
    try:
        return cls(**kwargs).eval()
    except Exception as err:  # noqa: BLE001 - the user's constructor
        raise ArchitectureError(f"{path}: {cls.__qualname__}(**{json.dumps(kwargs)[:120]}) fails "
                                f"({type(err).__name__}: {tg._first_line(err)}); check --module-kwargs") from None


def parse_kwargs(text: str | None) -> dict:
    """--module-kwargs: a JSON object, or one line saying why not."""
    if text is None or text == "":
        return {}
    try:
        value = json.loads(text)
    except ValueError as err:
        raise ArchitectureError(f"--module-kwargs is not valid JSON ({err}); e.g. '{{\"width\": 16}}'") from None
    if not isinstance(value, dict):
        raise ArchitectureError("--module-kwargs must be a JSON object of keyword arguments, e.g. '{\"width\": 16}'")
    return value


def from_class_checkpoint(path, class_path: str, kwargs: Mapping | None, input_spec: InputSpec | None,
                          *, meta: Mapping | None = None) -> Model:
    """A user's class built with `kwargs`, weights from the checkpoint `path` (read by jaxprov)."""
    if input_spec is None:
        raise ArchitectureError(f"{path}: a custom module needs its input shape: --input-shape H,W,C for images "
                                "(NHWC) or --input-shape F for vectors")
    module = build_class(class_path, kwargs)
    state_dict = readers.read_state_dict(path)
    recipe = {"kind": "module", "class": class_path, "kwargs": tg.full_kwargs(type(module), kwargs)}
    return tg.convert_module(module, input_spec, label=class_path.partition(":")[2], recipe=recipe,
                             name=Path(path).stem, state_dict=state_dict, source=str(path), meta=meta)


def input_spec_from_shape(shape: str | None, mean: str | None = None, std: str | None = None) -> InputSpec | None:
    """--input-shape 32,32,3 (an NHWC image) or 20 (a vector), with optional per-channel mean/std."""
    if shape is None:
        return None
    try:
        dims = tuple(int(v) for v in shape.split(","))
        mean_v = tuple(float(v) for v in mean.split(",")) if mean else None
        std_v = tuple(float(v) for v in std.split(",")) if std else None
    except ValueError:
        raise ArchitectureError(f"--input-shape {shape!r:.40} / --input-mean / --input-std must be comma-separated "
                                "numbers, e.g. --input-shape 32,32,3 --input-mean 0.5,0.5,0.5") from None
    if len(dims) not in (1, 3) or not all(0 < d <= 4096 for d in dims):
        raise ArchitectureError(f"--input-shape {shape!r:.40}: give H,W,C for an image or F for a vector")
    if (mean_v is None) != (std_v is None) or (mean_v and (len(mean_v) != dims[-1] or len(std_v) != dims[-1]
                                                           or min(std_v) <= 0)):
        raise ArchitectureError("--input-mean and --input-std come together, one positive std per channel")
    if len(dims) == 1:
        return InputSpec("vector", "NF", dims, raw_range=None)
    return InputSpec("image", "NHWC", dims, mean=mean_v, std=std_v)


# -- timm ----------------------------------------------------------------------------------------

def _timm():
    try:
        import timm
    except ImportError:
        raise JaxprovError(f"timm models need timm; {tg.INSTALL_HINT}") from None
    return timm


def timm_module(name: str, kwargs: Mapping | None = None):
    timm = _timm()
    if not isinstance(name, str) or not _TIMM_NAME.match(name) or not timm.is_model(name):
        raise ArchitectureError(f"timm:{str(name)[:80]} is not a timm architecture; see timm.list_models()")
    try:
        return timm.create_model(name, pretrained=False, **dict(kwargs or {})).eval()
    except Exception as err:  # noqa: BLE001
        raise ArchitectureError(f"timm:{name}: cannot build it with {dict(kwargs or {})} "
                                f"({type(err).__name__}: {tg._first_line(err)})") from None


def timm_input_spec(module, shape: InputSpec | None = None) -> InputSpec:
    cfg = getattr(module, "pretrained_cfg", {}) or {}
    channels, height, width = cfg.get("input_size", (3, 224, 224))
    if shape is not None:
        return InputSpec("image", "NHWC", shape.shape, mean=shape.mean or cfg.get("mean"),
                         std=shape.std or cfg.get("std"))
    return InputSpec("image", "NHWC", (height, width, channels), mean=cfg.get("mean"), std=cfg.get("std"))


def from_timm_checkpoint(path, name: str, input_spec: InputSpec | None = None, *, meta: Mapping | None = None) -> Model:
    """timm architecture `name` with the checkpoint's weights; num_classes read from its classifier."""
    state_dict = readers.read_state_dict(path)
    module = timm_module(name)
    head = (getattr(module, "pretrained_cfg", {}) or {}).get("classifier")
    kwargs = {}
    if isinstance(head, str) and f"{head}.weight" in state_dict:
        classes = int(np.shape(state_dict[f"{head}.weight"])[0])
        if classes != module.num_classes:
            kwargs = {"num_classes": classes}
            module = timm_module(name, kwargs)
    spec = timm_input_spec(module, input_spec)
    recipe = {"kind": "timm", "name": name, "kwargs": kwargs}
    return tg.convert_module(module, spec, label=f"timm.{name}", recipe=recipe, name=Path(path).stem,
                             state_dict=state_dict, source=str(path), meta=meta)


# -- Hugging Face folders without a hand-written family ------------------------------------------

def _transformers():
    try:
        import transformers
    except ImportError:
        raise JaxprovError(f"Hugging Face models need transformers; {tg.INSTALL_HINT}") from None
    return transformers


def hf_module(config: Mapping, source: str, held_bytes: int | None = None):
    """(module with random weights, class name, transformers config) from a config.json dict.

    With `held_bytes` (what the weight files hold), a config that describes a far bigger model is
    refused before anything is allocated (the size is counted on torch's meta device)."""
    transformers = _transformers()
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING

    model_type = config.get("model_type")
    if not isinstance(model_type, str) or model_type not in CONFIG_MAPPING:
        raise CheckpointError(f"{source}: model_type {model_type!r:.40} is not one transformers knows")
    if config.get("auto_map"):
        raise CheckpointError(f"{source}: config.json asks for custom code (auto_map); jaxprov never runs a "
                              "checkpoint's code (trust_remote_code)")
    try:
        hf_config = CONFIG_MAPPING[model_type].from_dict(dict(config))
    except Exception as err:  # noqa: BLE001
        raise CheckpointError(f"{source}: transformers cannot read this config.json ({type(err).__name__}: "
                              f"{tg._first_line(err)})") from None
    names = config.get("architectures") or []
    class_name = names[0] if isinstance(names, list) and names and isinstance(names[0], str) else None
    cls = getattr(transformers, class_name, None) if class_name and class_name.isidentifier() else None
    if cls is None or not (isinstance(cls, type) and issubclass(cls, transformers.PreTrainedModel)):
        if class_name is not None:
            raise CheckpointError(f"{source}: architectures names {class_name!r:.60}, not a transformers model class")
        cls = transformers.AutoModel._model_mapping[type(hf_config)]
    try:
        if held_bytes is not None:
            import torch

            with torch.device("meta"):
                needed = sum(p.numel() * p.element_size() for p in cls(hf_config).parameters())
            if needed > 2 * held_bytes + 2**26:
                raise CheckpointError(f"{source}: describes a model of {needed:,} bytes but the weight files hold "
                                      f"{held_bytes:,}; fix config.json or the weights")
        module = cls(hf_config).eval()
    except CheckpointError:
        raise
    except Exception as err:  # noqa: BLE001
        raise CheckpointError(f"{source}: transformers cannot build {cls.__name__} from config.json "
                              f"({type(err).__name__}: {tg._first_line(err)})") from None
    return module, cls.__name__, hf_config


# config.json keys that only training or naming reads: fine-tuning with labels adds problem_type
# (the loss), label names differ between tasks; none changes the forward, so none changes the arch
# key (a model and its fine-tuned copy stack and compare as one architecture).
_HF_NOT_FORWARD = ("transformers_version", "problem_type", "finetuning_task", "id2label", "label2id")


def _hf_recipe_config(config: Mapping) -> dict:
    # What builds the module; names and versions of the folder do not change the function.
    out = {k: v for k, v in config.items() if not k.startswith("_") and k not in _HF_NOT_FORWARD}
    if isinstance(config.get("id2label"), Mapping) and "num_labels" not in config:
        out["num_labels"] = len(config["id2label"])  # what the label names gave: the head's size
    return out


def _hf_io(module, hf_config, directory: Path | None, config: Mapping) -> dict:
    """The InputSpec, text keys, embedding table name and output key of a transformers module."""
    main = getattr(module, "main_input_name", "input_ids")
    params = inspect.signature(module.forward).parameters
    if main == "input_ids":
        keys = [k for k in ("input_ids", "attention_mask") if k in params]
        if "token_type_ids" in params and getattr(hf_config, "type_vocab_size", 0):
            keys.append("token_type_ids")
        length = next((getattr(hf_config, a) for a in ("max_position_embeddings", "n_positions")
                       if isinstance(getattr(hf_config, a, None), int)), 512) - _position_offset(module)
        spec = InputSpec("text", "tokens", (length,), dtype="int32", raw_range=None, vocab_size=hf_config.vocab_size)
        table = module.get_input_embeddings().weight
        embedding = next(n for n, p in module.named_parameters() if p is table)
        return {"spec": spec, "text_keys": tuple(keys), "embedding_name": embedding}
    if main == "pixel_values":
        size = getattr(hf_config, "image_size", 224)
        size = (size, size) if isinstance(size, int) else tuple(size)
        channels = getattr(hf_config, "num_channels", 3)
        mean, std = config.get("_jaxprov_image_mean"), config.get("_jaxprov_image_std")
        spec = InputSpec("image", "NHWC", (*size, channels), mean=mean, std=std)
        return {"spec": spec, "text_keys": (), "embedding_name": None}
    raise CheckpointError(f"{directory}: a {type(module).__name__} takes {main!r}; jaxprov's generic converter takes "
                          "token ids or pixel values")


def _position_offset(module) -> int:
    """How many rows of the position table no token can use. RoBERTa-style embeddings (RoBERTa,
    XLM-R, CamemBERT, ...) number positions from padding_idx + 1, so a sequence of
    max_position_embeddings tokens would index past the table (torch raises; jax's gather gives
    NaN); their position nn.Embedding carries that padding_idx."""
    import torch

    for name, sub in module.named_modules():
        if name.rpartition(".")[2] == "position_embeddings" and isinstance(sub, torch.nn.Embedding):
            return 0 if sub.padding_idx is None else sub.padding_idx + 1
    return 0


def _preprocessor_stats(directory: Path) -> dict:
    """image_mean / image_std from a folder's preprocessor_config.json, when it has one."""
    import os

    if not os.path.lexists(directory / "preprocessor_config.json"):
        return {}
    data = readers.read_json(readers.resolve_inside(directory, "preprocessor_config.json"))
    out = {}
    for key, name in (("image_mean", "_jaxprov_image_mean"), ("image_std", "_jaxprov_image_std")):
        value = data.get(key) if isinstance(data, dict) else None
        if isinstance(value, list) and value and all(isinstance(v, (int, float)) for v in value):
            out[name] = [float(v) for v in value]
    return out


def _output_key(module, spec: InputSpec, text_keys) -> str:
    import torch

    args, kwargs = tg._torch_inputs(spec, tg._example(spec), text_keys)
    with torch.no_grad():
        out = module(*args, **kwargs)
    return "logits" if getattr(out, "logits", None) is not None else "last_hidden_state"


def from_hf_directory(directory: Path, config: Mapping, *, meta: Mapping | None = None) -> Model:
    """A Hugging Face folder of any model type transformers knows, through the generic converter."""
    import torch

    source = str(directory / "config.json")
    state_dict = readers.read_state_dict(directory)
    module, class_name, hf_config = hf_module(config, source, sum(v.nbytes for v in state_dict.values()))
    tensors = {k: torch.from_numpy(np.array(v, np.float32) if v.dtype.name == "bfloat16" else np.array(v))
               for k, v in state_dict.items()}
    try:
        module, info = type(module).from_pretrained(None, config=hf_config, state_dict=tensors,
                                                    output_loading_info=True)
    except Exception as err:  # noqa: BLE001
        raise CheckpointError(f"{directory}: transformers could not load the weights into {class_name} "
                              f"({type(err).__name__}: {tg._first_line(err)})") from None
    for problem in ("missing_keys", "mismatched_keys"):
        keys = sorted(str(k[0] if isinstance(k, tuple) else k) for k in info.get(problem) or ())
        if keys:
            raise CheckpointError(f"{directory}: the weight files lack or mis-shape {len(keys)} tensors of {class_name} "
                                  f"({', '.join(keys[:5])}); transformers would initialise them randomly")
    module = module.eval()
    stats = _preprocessor_stats(directory)
    io = _hf_io(module, hf_config, directory, {**dict(config), **stats})
    output_key = _output_key(module, io["spec"], io["text_keys"])
    recipe = {"kind": "huggingface", "class": class_name, "config": {**_hf_recipe_config(config), **stats}}
    hub_name = config.get("_name_or_path") if isinstance(config.get("_name_or_path"), str) else ""
    name = hub_name if re.match(r"^[\w\-][\w.\-]*(?:/[\w\-][\w.\-]*)?$", hub_name) else directory.resolve().name
    meta = {**dict(meta or {}), "hf_config": dict(config)}
    return tg.convert_module(module, io["spec"], label=f"hf.{class_name}", recipe=recipe, name=name,
                             source=str(directory), output_key=output_key, output_kind=output_key,
                             text_keys=io["text_keys"], embedding_name=io["embedding_name"], meta=meta)


# -- torch.export archives -----------------------------------------------------------------------

def from_export_archive(path, input_spec: InputSpec | None = None, *, meta: Mapping | None = None,
                        digest: str | None = None) -> Model:
    """A `.pt2` archive: its graph (checked by converters.export_archive) and weights in one file."""
    from converters import export_archive

    program, graph_sha256 = export_archive.load(path)
    spec = input_spec or export_archive.input_spec(program, str(path))
    # The graph's digest, not the weights', is the architecture: equal graphs stack.
    recipe = {"kind": "export", "graph_sha256": graph_sha256}
    archive = {"path": str(Path(path).resolve()), "sha256": digest or _sha256(path)}
    return tg.convert_module(program.module(), spec, label="export", recipe=recipe, program=program,
                             taps=tg.Taps(), name=Path(path).stem, source=str(path), route="export",
                             meta={**dict(meta or {}), "export_archive": archive})


def _sha256(path) -> str:
    """sha256 of one archive file (as converters.source_digest gives for a file)."""
    import hashlib

    digest = hashlib.sha256()
    with readers.open_regular(path) as fh:
        for block in iter(lambda: fh.read(1 << 22), b""):
            digest.update(block)
    return digest.hexdigest()


# -- stored models -------------------------------------------------------------------------------

def rebuild(meta: Mapping) -> tg.TorchFunction:
    """The TorchFunction of a stored generic model, from its `meta["generic"]` (the store calls this)."""
    generic = meta["generic"]
    recipe = generic.get("recipe") or {}
    kind = recipe.get("kind")
    spec = InputSpec.from_json(meta["input_spec"])
    program = None
    if kind == "module":
        module = build_class(recipe.get("class"), recipe.get("kwargs"))
    elif kind == "timm":
        module = timm_module(recipe.get("name"), recipe.get("kwargs"))
    elif kind == "huggingface":
        config = dict(recipe.get("config") or {})
        module, _, _ = hf_module(config, "the stored model's Hugging Face config")
    elif kind == "export":
        from converters import export_archive

        archive = meta.get("export_archive") or {}
        path = archive.get("path")
        if not isinstance(path, str) or not Path(path).is_file() or _sha256(path) != archive.get("sha256"):
            raise CheckpointError(f"the stored model was converted from the torch.export archive {path}, which is "
                                  "gone or changed; loading a stored archive model needs that file")
        program = export_archive.load(path)[0]
        module = program.module()
    else:
        raise CheckpointError(f"unknown generic recipe kind {str(kind)[:40]!r}")
    fn, _ = tg.function_for(module, spec, label=generic.get("label", "model"), recipe=recipe,
                            output_key=generic.get("output_key"), taps=tg.Taps.from_json(generic.get("taps") or {}),
                            route=generic.get("route", "auto"), text_keys=tuple(generic.get("text_keys") or ()),
                            embedding_name=generic.get("embedding_name"), program=program)
    return fn


def _register() -> None:
    from jaxprov import store

    store.register_rebuilder(rebuild)


_register()
