"""MAP (Peng, Qu et al., "MAP: MAsk-Pruning for Source-Free Model Intellectual Property Protection",
CVPR 2024): protect a trained model against use on unauthorised domains by a binary mask over its
frozen weights, in three settings (source-available, source-free, data-free). One concept per module:
`masks` (scores, hard masks, straight-through) <- `losses` <- `synth` (pseudo-source and neighbour
domains, BatchNorm moments) <- `train` (the optax loop, checkpoints) <- `map` (the settings, the
protected model);
`metric` (ST-D), `baselines` (random / magnitude masks, NTL-style), `attacks` and `data` (DATA
arguments) beside them. docs/methods.md states every design choice."""

from jaxprov.protect.map import SETTINGS, Protection, protect, protected_model  # noqa: F401
from jaxprov.protect.metric import evaluate, st_d  # noqa: F401
from jaxprov.protect.synth import SynthConfig  # noqa: F401
from jaxprov.protect.train import MapConfig, learn  # noqa: F401
