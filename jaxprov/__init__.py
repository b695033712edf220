"""jaxprov: tell whether one neural network was derived from another, in JAX.

Public API (everything a user needs is importable from here):
  load(path, arch=None) -> Model      a checkpoint file, a Hugging Face directory, or a stored model
  convert(src, out=None, arch=None)   convert once into the content-addressed store
  save_model(model, dir) / load_model(dir)
  Model, InputSpec, stack_params      the model contract
  models                              string-addressable Flax families: models.init("resnet18", key)
  errors: JaxprovError and its subclasses, one clear line each
"""

__version__ = "0.1.0"

from jaxprov import models  # noqa: E402
from jaxprov.api import convert, load  # noqa: E402
from jaxprov.errors import (  # noqa: E402
    ArchitectureError, CheckpointError, ConversionError, JaxprovError, StoreError, UnsafeCheckpointError)
from jaxprov.model import InputSpec, Model, stack_params  # noqa: E402
from jaxprov.store import load_model, save_model  # noqa: E402

__all__ = [
    "ArchitectureError", "CheckpointError", "ConversionError", "InputSpec", "JaxprovError", "Model",
    "StoreError", "UnsafeCheckpointError", "convert", "load", "load_model", "models", "save_model",
    "stack_params", "__version__",
]
