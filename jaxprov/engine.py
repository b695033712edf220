"""Run a signature method over a zoo: group by arch, stack, vmap, chunk, compile once, shard.

The only module that knows about batching, devices and compilation. For each arch group the
params of K models are stacked on a new leading axis and `jax.vmap(method.rows)` runs over them on
a chunk of C probe items; chunks are padded to a fixed size so each (arch, K, C) compiles once.
`finalize` then turns each model's rows into its signature. With several local devices the model
axis is sharded over a 1-D mesh and XLA runs the vmapped program data-parallel.

Strategies: "vmap" (K models per call) or "sequential" (one model per call, same compiled
function for all). Vmapping conv weights turns convolutions into grouped convolutions, which XLA
runs slower than a loop of ordinary ones (measured: gradient fields 7x slower for LeNet on CPU,
1.7x for CIFAR ResNet-20 on an H100); vmapped dense layers become batched matmuls, which pay off.
So "auto" vmaps models without convolution kernels and loops over the rest; see
docs/benchmarks.md.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from jaxprov.errors import JaxprovError
from jaxprov.methods.base import DEAD_NORM, Method
from jaxprov.model import Model, stack_params
from jaxprov.probes import Probes

# "auto" vmaps only models this small and without convolution kernels (see the module docstring).
AUTO_VMAP_MAX_PARAMS = 50_000_000
# Fraction of a device's memory one compiled call may use for temporaries.
MEMORY_FRACTION = 0.25
CPU_MEMORY_BUDGET = 2 * 2**30


@dataclasses.dataclass(frozen=True)
class EngineConfig:
    """How the engine batches. None means: choose from device memory and a compiled cost estimate."""

    model_chunk: int | None = None
    probe_chunk: int | None = None
    strategy: str = "auto"  # "auto" | "vmap" | "sequential"
    dtype: str = "float32"  # "bfloat16": params and probes cast; signatures stay float32
    shard: bool = True  # shard the model axis over all local devices

    def __post_init__(self):
        if self.strategy not in ("auto", "vmap", "sequential"):
            raise ValueError(f"strategy must be auto, vmap or sequential, not {self.strategy!r}")
        if self.dtype not in ("float32", "bfloat16"):
            raise ValueError(f"dtype must be float32 or bfloat16, not {self.dtype!r}")


@dataclasses.dataclass(frozen=True, eq=False)
class Signatures:
    """One signature per model, rows in the order of `names`."""

    method: Method
    names: tuple[str, ...]
    archs: tuple[str, ...]
    matrix: np.ndarray  # [N, D] float32
    dead: np.ndarray  # [N] bool: the signature could not be normalised (constant outputs, zero gradients)
    probes_digest: str

    def __len__(self) -> int:
        return len(self.names)


def _cast(tree, dtype: str):
    if dtype == "float32":
        return tree
    return jax.tree_util.tree_map(lambda a: a.astype(jnp.bfloat16) if jnp.issubdtype(a.dtype, jnp.floating) else a,
                                  tree)


@functools.lru_cache(maxsize=128)
def _compiled(method: Method, apply: Callable, vmapped: bool, dtype: str):
    """(rows_fn, finalize_fn), jitted; cached so every chunk of an arch reuses one executable."""

    def rows(params, probes):
        out = method.rows(apply, _cast(params, dtype), _cast(probes, dtype))
        return out.astype(jnp.float32)

    if vmapped:
        return jax.jit(jax.vmap(rows, in_axes=(0, None))), jax.jit(jax.vmap(method.finalize))
    return jax.jit(rows), jax.jit(method.finalize)


@functools.lru_cache(maxsize=128)
def _compiled_from_params(method: Method, dtype: str):
    """`method.signature_from_params`, jitted; jit's own cache keeps one executable per param tree."""
    return jax.jit(lambda params: method.signature_from_params(_cast(params, dtype)).astype(jnp.float32))


def _vmap_pays_off(model: Model) -> bool:
    has_conv = any(np.ndim(leaf) == 4 for leaf in jax.tree_util.tree_leaves(model.params))
    return not has_conv and model.num_params <= AUTO_VMAP_MAX_PARAMS


def _device_budget(device) -> int:
    try:
        stats = device.memory_stats() or {}
    except Exception:  # CPU backends may not implement memory_stats
        stats = {}
    limit = stats.get("bytes_limit")
    return int(limit * MEMORY_FRACTION) if limit else CPU_MEMORY_BUDGET


def _cost_per_item(rows_fn, params, probes: Probes, vmapped: bool) -> float | None:
    """Temporary bytes per (model x probe item), from XLA's memory analysis of a small trial chunk."""
    trial = min(probes.n, 4)
    chunk = probes.take(0, trial).inputs
    try:
        analysis = rows_fn.lower(params, chunk).compile().memory_analysis()
    except Exception:
        return None
    if analysis is None:
        return None
    models = jax.tree_util.tree_leaves(params)[0].shape[0] if vmapped else 1
    total = analysis.temp_size_in_bytes + analysis.output_size_in_bytes
    return total / (models * trial)


def _plan_chunks(config: EngineConfig, n_models: int, n_probes: int, per_item: float | None,
                 budget: int, n_devices: int, vmapped: bool) -> tuple[int, int]:
    per_item = per_item or 4 * 2**20  # unknown: assume 4 MiB per model-probe (conservative)
    items = max(1, int(budget // per_item))  # model x probe items one call may hold
    if vmapped:
        k = config.model_chunk or max(1, min(n_models, 32, items // max(1, min(n_probes, 64))))
        k = math.ceil(k / n_devices) * n_devices
    else:
        k = 1
    c = config.probe_chunk or max(1, min(n_probes, items * (n_devices if vmapped else 1) // k))
    return k, c


def _pad_probes(chunk, size: int):
    n = jax.tree_util.tree_leaves(chunk)[0].shape[0]
    if n == size:
        return chunk
    return jax.tree_util.tree_map(
        lambda a: jnp.concatenate([a, jnp.repeat(a[-1:], size - n, axis=0)]), chunk)


def stack_signatures(method: Method, out: list[np.ndarray]) -> np.ndarray:
    """[N, D]. Methods whose length depends on the model (weights: the arch; IPGuard: the output size)
    are zero-padded to the longest: padding changes no dot product between comparable (equal-length)
    signatures, and the comparison layer masks the others."""
    lengths = {len(s) for s in out}
    if len(lengths) > 1:
        if not (method.same_arch_only or method.same_output_size_only):
            raise JaxprovError(f"method {method.name!r} gave signatures of different lengths {sorted(lengths)[:4]}; "
                               "it should give one length for every model on shared probes")
        width = max(lengths)
        out = [np.pad(s, (0, width - len(s))) for s in out]
    return np.stack(out).astype(np.float32)


def signatures(method: Method, models: Sequence[Model], probes: Probes, config: EngineConfig = EngineConfig(),
               progress: Callable | None = None) -> Signatures:
    """One signature per model. Models of every arch are allowed; each arch compiles once.

    Args:
      method: a signature method (jaxprov.methods).
      models: the zoo, any mix of archs.
      probes: built by `method.make_probes` (shared by the zoo).
      config: batching / precision / sharding choices.
      progress: optional callable(n_done_models) called after each chunk.
    """
    if not models:
        raise ValueError("no models to fingerprint")
    out: list[np.ndarray | None] = [None] * len(models)
    groups: dict[str, list[int]] = {}
    for i, m in enumerate(models):
        groups.setdefault(m.arch, []).append(i)
    devices = jax.local_devices() if config.shard else jax.local_devices()[:1]
    done = 0
    for arch, index in groups.items():
        members = [models[i] for i in index]
        if not method.uses_probes:
            # Weight-space signatures: no probes, no forward pass; flattening params gains nothing from vmap.
            from_params = _compiled_from_params(method, config.dtype)
            for i, m in zip(index, members):
                out[i] = np.asarray(from_params(m.params))
            done += len(members)
            if progress is not None:
                progress(done)
            continue
        strategy = config.strategy
        if strategy == "auto":
            strategy = "vmap" if _vmap_pays_off(members[0]) else "sequential"
        vmapped = strategy == "vmap"
        fn = members[0].features if method.uses_features else members[0].apply
        rows_fn, fin_fn = _compiled(method, fn, vmapped, config.dtype)
        # Estimate memory with as many models as one call will hold: grouped-conv workspaces grow
        # faster than linearly in the model count, so a one-model trial underestimates.
        trial_k = min(len(members), config.model_chunk or 8) if vmapped else 1
        sample = stack_params(members[:trial_k]) if vmapped else members[0].params
        per_item = None if (config.model_chunk and config.probe_chunk) else _cost_per_item(
            rows_fn, sample, probes, vmapped)
        n_dev = len(devices) if vmapped else 1
        k, c = _plan_chunks(config, len(members), probes.n, per_item, _device_budget(devices[0]), n_dev, vmapped)
        sharding = NamedSharding(Mesh(np.array(devices), ("models",)), PartitionSpec("models")) if (
            vmapped and n_dev > 1) else None
        for start in range(0, len(members), k):
            chunk_models = members[start:start + k]
            if vmapped:
                padded = chunk_models + [chunk_models[-1]] * (k - len(chunk_models))
                params = stack_params(padded)
                params = jax.device_put(params, sharding) if sharding is not None else params
            else:
                params = chunk_models[0].params
            rows = []
            for p0 in range(0, probes.n, c):
                part = probes.take(p0, min(p0 + c, probes.n)).inputs
                valid = min(c, probes.n - p0)
                r = rows_fn(params, _pad_probes(part, c))
                rows.append(r[:, :valid] if vmapped else r[:valid])
            all_rows = jnp.concatenate(rows, axis=1 if vmapped else 0)
            sig = np.asarray(fin_fn(all_rows))
            sig = sig[: len(chunk_models)] if vmapped else sig[None]
            for j, s in enumerate(sig):
                out[index[start + j]] = s
            done += len(chunk_models)
            if progress is not None:
                progress(done)
    matrix = stack_signatures(method, out)
    dead = np.linalg.norm(matrix, axis=1) <= DEAD_NORM
    return Signatures(method=method, names=tuple(m.name for m in models), archs=tuple(m.arch for m in models),
                      matrix=matrix, dead=dead, probes_digest=probes.digest)


@functools.partial(jax.jit, static_argnames=("k",))
def _block_top_k(block, matrix, offset, k: int):
    sims = block @ matrix.T
    rows = jnp.arange(block.shape[0])
    sims = sims.at[rows, offset + rows].set(-jnp.inf)  # a model is not its own neighbour
    return jax.lax.top_k(sims, k)


def top_k_neighbours(matrix: np.ndarray, k: int, block: int = 8192) -> tuple[np.ndarray, np.ndarray]:
    """For unit-vector signatures: each row's k most similar other rows, on the accelerator.

    Memory is O(block x N): the N x N matrix never exists, so 100,000 models fit one device.
    Returns (indices [N, k], similarities [N, k]), most similar first.
    """
    device_matrix = jnp.asarray(matrix, jnp.float32)
    n = device_matrix.shape[0]
    idx, val = [], []
    for start in range(0, n, block):
        stop = min(start + block, n)
        part = device_matrix[start:stop]
        if stop - start < block and n > block:  # pad the last block: one compiled shape
            part = jnp.concatenate([part, jnp.zeros((block - (stop - start), part.shape[1]), part.dtype)])
        v, i = _block_top_k(part, device_matrix, start, k)
        idx.append(np.asarray(i[: stop - start]))
        val.append(np.asarray(v[: stop - start]))
    return np.concatenate(idx), np.concatenate(val)
