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

from typing import Any, Sequence

import jax.numpy as jnp

EXITS = "exits"  # the features key of the stacked exit logits [batch, K, classes]


def num_exits(module: Any) -> int:
    """K for a multi-exit module, 0 for any other network."""
    return int(getattr(module, "num_exits", 0) or 0)


def is_multi_exit(module: Any) -> bool:
    return num_exits(module) >= 2


def segment_blocks(ics: Sequence[int], n_blocks: int, k: int) -> range:
    """The 0-based blocks of segment k of an SDN whose internal classifiers read the blocks numbered
    `ics` (1-based, SDN's `add_ic` positions) of its `n_blocks` blocks."""
    ends = [*ics, n_blocks]
    return range(0 if k == 0 else ends[k - 1], ends[k])


def run_segments(module: Any, x) -> tuple[list, Any]:
    """Every segment of a multi-exit module in order: the state after each segment, and the exits'
    logits stacked [batch, K, classes] (what `features["exits"]` holds)."""
    states, logits, h = [], [], x
    for k in range(module.num_exits):
        h, out = module.segment(k, h)
        states.append(h)
        logits.append(out)
    return states, jnp.stack(logits, axis=1)
