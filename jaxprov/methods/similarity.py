"""Similarity kinds: how two signatures of one method compare, declared by name (`Method.similarity`).

- "cosine": the dot product of two signatures, which are unit vectors: a zoo's similarity matrix
  is one matmul (`S @ S.T`), and its nearest neighbours a top-k over blocks of it.
- "mean_abs_difference": 1 - mean_k |a_k - b_k|, SAC's distance between two sample-correlation
  matrices turned into a similarity (the signatures are not unit vectors).

A new kind is a block function here, `(a [Na, D], b [Nb, D]) -> [Na, Nb]`, with the number of
float32 temporaries it holds per pair (so `pairwise` bounds host memory), and a line in KINDS.
"""

from __future__ import annotations

from typing import Callable, NamedTuple

import numpy as np

# `pairwise` holds at most this many float32 temporaries at once (256 MiB).
PAIRWISE_CHUNK_ELEMENTS = 2**26


class Kind(NamedTuple):
    block: Callable[[np.ndarray, np.ndarray], np.ndarray]
    temporaries_per_pair: Callable[[int], int]  # signature length D -> floats held per (a_i, b_j)


def _cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return a @ b.T


def _mean_abs_difference(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return 1.0 - np.abs(a[:, None, :] - b[None, :, :]).mean(axis=2)


KINDS: dict[str, Kind] = {
    "cosine": Kind(_cosine, lambda d: 0),
    "mean_abs_difference": Kind(_mean_abs_difference, lambda d: d),
}


def pairwise(kind: str, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Similarity of every row of `a` [Na, D] with every row of `b` [Nb, D] under `kind`, in row
    blocks of at most PAIRWISE_CHUNK_ELEMENTS temporaries: [Na, Nb] float32."""
    spec = KINDS[kind]
    a, b = np.asarray(a, np.float32), np.asarray(b, np.float32)
    per_row = b.shape[0] * spec.temporaries_per_pair(a.shape[1])
    if per_row == 0:
        return spec.block(a, b)
    step = max(1, PAIRWISE_CHUNK_ELEMENTS // per_row)
    out = np.empty((a.shape[0], b.shape[0]), np.float32)
    for start in range(0, a.shape[0], step):
        out[start:start + step] = spec.block(a[start:start + step], b)
    return out
