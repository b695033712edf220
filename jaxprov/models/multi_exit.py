"""The multi-exit contract: what a network with early exits (Shallow-Deep Networks, Kaya et al.,
ICML 2019) exposes, so training, staged inference and fingerprints need no family-specific code.

A multi-exit module
  - has `num_exits` (K >= 2): K - 1 internal classifiers (ICs) and the final classifier, in forward order;
  - has `segment(k, h) -> (h_next, logits_k)`: the computation from exit k - 1's state (the input
    for k = 0) up to exit k's state and exit k's logits, so inference can stop after any segment;
  - returns `(final logits, features)` from `__call__`, with `features["exits"]` the logits of every
    exit stacked as [batch, K, classes] (the last one is the final output).
"""

from __future__ import annotations

from typing import Any

EXITS = "exits"  # the features key of the stacked exit logits [batch, K, classes]


def num_exits(module: Any) -> int:
    """K for a multi-exit module, 0 for any other network."""
    return int(getattr(module, "num_exits", 0) or 0)


def is_multi_exit(module: Any) -> bool:
    return num_exits(module) >= 2
