"""Model zoos with known lineage: train models and derive children (fine-tune, prune, distill, quantise).

Provenance methods are judged on pairs whose relation is known by construction; every model made
here carries `meta["lineage"] = {"parent": ..., "derivation": ..., ...settings}`.
"""

from jaxprov.zoo import derive  # noqa: F401  (the module, for its source digest)
from jaxprov.zoo.derive import (
    accuracy, distill, finetune, head_name, predict, prune, quantize_int8, train)

__all__ = ["accuracy", "distill", "finetune", "head_name", "predict", "prune", "quantize_int8", "train"]
