"""Reading time levels from raw response times: which samples took one exit's time, which the next's.

Ours (Dong et al. 2021 publish no statistic). A suspect's times carry three kinds of noise besides
the cost of the exit a sample took, each measured on this project's 2-core machine
(docs/results.md, "Reading the times"):
- drift: a machine's speed wanders over seconds (HTTP round medians from 3.4 to 5.1 ms within a
  minute), and consecutive queries share it (residual correlation 0.5-0.7 at lag 1, 0.3-0.5 at
  lag 10);
- slow draws: interference only ever adds time, and under contention more than half of a sample's
  draws can be slowed;
- fast draws: on a quiet machine over HTTP some draws are faster than the sample's own cost (the
  transport's fast path), so the low end is not the sample's cost either.
The reading, in order:
1. Detrend at a quantile q (`detrend`): each query's time minus the running q-quantile, over the
   `WINDOW` queries sent around it, of the residuals (time minus its sample's q-quantile); twice,
   the second pass from the first's detrended times. The samples around a query are a random mix
   of every level (each round goes in a fresh random order), so the running quantile follows the
   machine, not the sample.
2. A sample's time is the q-quantile of its detrended repeats, for the q (of `QUANTILES`) whose
   per-sample times agree best between the even and the odd rounds (Pearson correlation over
   samples): the median where most draws are clean; a low quantile where most draws are slowed
   and the median would read the interference (the running quantile then follows the machine's
   floor). The choice sees only the suspect's own times, never the expected stops, so
   independents are read by the same rule. One repeat has no halves: its time is the sample's.
3. The n sample times are cut into K groups by exact one-dimensional k-means (dynamic programming
   over the sorted times; `kmeans_1d`), and the group of the j-th smallest centre is read as stop
   exit j (a later stop ran more segments, so it cannot be faster).
Every step commutes with an increasing affine change of the times, so a suspect that is uniformly
slower, or has a constant network delay, yields the same levels.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from jaxprov.errors import JaxprovError

WINDOW = 21  # queries in the running quantile that detrends (about half a 48-sample round)
QUANTILES = (0.5, 0.25, 0.1)  # candidate per-sample quantiles; on a tie the first (the median) is kept


@dataclasses.dataclass(frozen=True)
class Levels:
    """A suspect's time levels: the level of each sample (0..k-1 by increasing time), the level
    centres in seconds (of the detrended times), the per-sample quantile the reading chose and how well
    its per-sample times agree between the even and the odd rounds (Pearson correlation; None for
    both with one time per sample, nothing to choose)."""

    levels: np.ndarray
    centres_s: np.ndarray
    quantile: float | None
    agreement: float | None


def round_robin_order(n: int, repeats: int) -> np.ndarray:
    """The order of queries when each round sends samples 0..n-1 in turn: order[i, r] = r * n + i."""
    return np.arange(n * repeats).reshape(repeats, n).T


def detrend(times: np.ndarray, order: np.ndarray, quantile: float = 0.5, window: int = WINDOW) -> np.ndarray:
    """`times` [n, repeats] minus the machine's drift, as seen at `quantile` (step 1 above); `order`
    [n, repeats] gives each query's place in the sequence sent."""
    seq = np.argsort(order, axis=None, kind="stable")  # place in time -> flat index into times
    flat = times.ravel()
    base = np.zeros(flat.size)
    for _ in range(2):
        centre = np.quantile((flat - base).reshape(times.shape), quantile, axis=1)
        residual = (flat - np.repeat(centre, times.shape[1]))[seq]
        base = np.empty(flat.size)
        base[seq] = _running_quantile(residual, window, quantile)
    return (flat - base).reshape(times.shape)


def _running_quantile(v: np.ndarray, window: int, quantile: float) -> np.ndarray:
    """`quantile` of the `window` values centred on each (the ends padded with the end values)."""
    half = min(window // 2, max(v.size - 1, 0))
    padded = np.concatenate([np.full(half, v[0]), v, np.full(half, v[-1])])
    return np.quantile(np.lib.stride_tricks.sliding_window_view(padded, 2 * half + 1), quantile, axis=1)


def sample_times(times: np.ndarray, order: np.ndarray | None = None
                 ) -> tuple[np.ndarray, float | None, float | None]:
    """One time per sample from `times` [n, repeats] (steps 1-2 above) -> (times [n], the quantile chosen,
    its split-half agreement). A 1-D `times`, or one repeat, is one time per sample already (None,
    None). `order` defaults to round-robin."""
    t = np.asarray(times, np.float64)
    if t.ndim == 1:
        return t, None, None
    if t.ndim != 2 or t.shape[1] < 1:
        raise JaxprovError(f"times must be [samples, repeats], got shape {list(t.shape)}")
    order = round_robin_order(*t.shape) if order is None else np.asarray(order)
    if order.shape != t.shape:
        raise JaxprovError(f"query order has shape {list(order.shape)}, times {list(t.shape)}")
    if t.shape[1] < 2:
        return t[:, 0], None, None
    best = None
    for q in QUANTILES:
        d = detrend(t, order, q)
        agreement = _correlation(np.quantile(d[:, 0::2], q, axis=1), np.quantile(d[:, 1::2], q, axis=1))
        if best is None or agreement > best[0]:
            best = (agreement, q, np.quantile(d, q, axis=1))
    return best[2], best[1], best[0]


def _correlation(a: np.ndarray, b: np.ndarray) -> float:
    sa, sb = np.std(a), np.std(b)
    if sa == 0 or sb == 0:
        return -1.0
    return float(np.mean((a - a.mean()) * (b - b.mean())) / (sa * sb))


def time_levels(times: np.ndarray, k: int, order: np.ndarray | None = None) -> Levels:
    """The suspect's k time levels from its raw `times` [n, repeats] (or one time per sample, [n])."""
    t, q, agreement = sample_times(times, order)
    if t.size < k:
        raise JaxprovError(f"{t.size} timed samples cannot show {k} time levels")
    rank = np.argsort(t, kind="stable")
    bounds = kmeans_1d(t[rank], k)
    levels = np.empty(t.size, np.int64)
    centres = []
    for j, (a, b) in enumerate(zip(bounds[:-1], bounds[1:])):
        levels[rank[a:b]] = j
        centres.append(float(np.mean(t[rank[a:b]])))
    return Levels(levels, np.asarray(centres), q, agreement)


def kmeans_1d(v: np.ndarray, k: int) -> list[int]:
    """Optimal split of sorted `v` into k contiguous groups (least total squared deviation): the start
    index of each group, then len(v). O(k n^2) over prefix sums; n is a fingerprint's few hundred."""
    n = v.size
    s1 = np.concatenate([[0.0], np.cumsum(v)])
    s2 = np.concatenate([[0.0], np.cumsum(v * v)])

    def cost(i: np.ndarray, j: int) -> np.ndarray:  # groups v[i:j] for every start i
        m = j - i
        return s2[j] - s2[i] - (s1[j] - s1[i]) ** 2 / np.maximum(m, 1)

    best = np.full((k + 1, n + 1), np.inf)
    arg = np.zeros((k + 1, n + 1), np.int64)
    best[0, 0] = 0.0
    for g in range(1, k + 1):
        for j in range(g, n + 1):
            i = np.arange(g - 1, j)
            total = best[g - 1, i] + cost(i, j)
            a = int(np.argmin(total))
            best[g, j], arg[g, j] = total[a], i[a]
    bounds, j = [n], n
    for g in range(k, 0, -1):
        j = int(arg[g, j])
        bounds.append(j)
    return bounds[::-1]
