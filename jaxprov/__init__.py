"""jaxprov: tell whether one neural network was derived from another, in JAX.

Public API (everything a user needs is importable from here):
  load(path, arch=None) -> Model      a checkpoint file, a Hugging Face directory, or a stored model
  from_torch(module, input_spec)      any torch.nn.Module, traced by torchax (needs jaxprov[torch])
  compare(a, b, methods, null=...)    is b derived from a? per-method similarity, calibrated verdict
  Zoo(models, seeds=...)              signatures / similarity matrices / neighbours for many models
  methods.get(name, **config)         ddv, gradient_field, sac, ipguard, weights, cka, mistakes
  EngineConfig, SignatureCache        batching / precision / sharding; the content-addressed signature
                                      cache (SignatureStore: its deprecated old name)
  convert(src, out=None, arch=None)   convert once into the content-addressed store
  save_model(model, dir) / load_model(dir)
  Model, InputSpec, stack_params      the model contract
  models                              string-addressable Flax families: models.init("resnet18", key)
  errors: JaxprovError and its subclasses, one clear line each (ArgumentError: a wrong argument type)
"""

from jaxprov.version import __version__

from jaxprov import models  # noqa: E402
from jaxprov import methods  # noqa: E402
from jaxprov.api import convert, from_torch, load, load_model  # noqa: E402
from jaxprov.cache import SignatureCache, SignatureStore  # noqa: E402
from jaxprov.comparison import Comparison, Zoo, compare  # noqa: E402
from jaxprov.engine import EngineConfig  # noqa: E402
from jaxprov.errors import (  # noqa: E402
    ArchitectureError, ArgumentError, CheckpointError, ConversionError, JaxprovError, StoreError,
    UnsafeCheckpointError)
from jaxprov.model import InputSpec, Model, stack_params  # noqa: E402
from jaxprov.store import save_model  # noqa: E402

__all__ = [
    "ArchitectureError", "ArgumentError", "CheckpointError", "Comparison", "ConversionError", "EngineConfig",
    "InputSpec", "JaxprovError", "Model", "SignatureCache", "SignatureStore", "StoreError", "UnsafeCheckpointError",
    "Zoo", "compare", "convert", "from_torch", "load", "load_model", "methods", "models", "save_model", "stack_params",
    "__version__",
]
