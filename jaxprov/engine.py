"""Run a signature method over a zoo: group by arch, stack, vmap, chunk, compile once, shard.

The only module that knows about batching, devices and compilation. For each arch group the
params of K models are stacked on a new leading axis and `jax.vmap(method.rows)` runs over them on
a chunk of C probe items; chunks are padded to a fixed size so each (arch, K, C) compiles once.
`finalize` then turns each model's rows into its signature. With several local devices the model
axis is sharded over a 1-D mesh and XLA runs the vmapped program data-parallel. The same planning
batches what probe builders compute on a reference model (`map_inputs`, `probes_for`), hands each
finished chunk of signatures to a caller that stores it (`on_chunk`), and finds nearest neighbours
block by block (`top_k_neighbours`).

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
from jaxprov.identity import model_digest
from jaxprov.methods import similarity as similarity_lib
from jaxprov.methods.base import DEAD_NORM, Method
from jaxprov.model import Model, ModelFns, n_items, stack_params
from jaxprov.probes import Probes

# "auto" vmaps only models this small and without convolution kernels (see the module docstring).
AUTO_VMAP_MAX_PARAMS = 50_000_000
# Fraction of a device's memory one compiled call may use for temporaries.
MEMORY_FRACTION = 0.25
# Probe builders hold every seed beside their chunk (1,000 seeds at 224 px are 0.6 GB): they plan
# their chunks against this fraction of the budget.
PROBE_BUILDER_SHARE = 0.5
CPU_MEMORY_BUDGET = 2 * 2**30
# Memory is estimated by compiling a trial chunk of TRIAL_ITEMS items, or of all of them when they
# are at most WHOLE_TRIAL_ITEMS (`_cost_per_item`).
TRIAL_ITEMS = 4
WHOLE_TRIAL_ITEMS = 32


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

    @classmethod
    def assemble(cls, method: Method, names: Sequence[str], archs: Sequence[str], vectors: Sequence[np.ndarray],
                 probes_digest: str) -> "Signatures":
        """The one assembly of signatures (the engine's, the cache's, the multi-host gather's).

        Methods whose length depends on the model (weights: the arch; IPGuard: the output size) are
        zero-padded to the longest: padding changes no dot product between comparable (equal-length)
        signatures, and the comparison layer masks the others. A zero vector is a dead model."""
        lengths = {len(v) for v in vectors}
        if len(lengths) > 1:
            if method.comparable == "any":
                raise JaxprovError(f"method {method.name!r} gave signatures of different lengths "
                                   f"{sorted(lengths)[:4]}; it should give one length for every model on shared "
                                   "probes (or declare comparable = 'arch' / 'output_size')")
            width = max(lengths)
            vectors = [np.pad(v, (0, width - len(v))) for v in vectors]
        matrix = np.stack(vectors).astype(np.float32)
        return cls(method=method, names=tuple(names), archs=tuple(archs), matrix=matrix,
                   dead=np.linalg.norm(matrix, axis=1) <= DEAD_NORM, probes_digest=probes_digest)


def _cast(tree, dtype: str):
    if dtype == "float32":
        return tree
    return jax.tree_util.tree_map(lambda a: a.astype(jnp.bfloat16) if jnp.issubdtype(a.dtype, jnp.floating) else a,
                                  tree)


def _float32(tree):
    return jax.tree_util.tree_map(lambda a: a.astype(jnp.float32) if jnp.issubdtype(a.dtype, jnp.floating) else a,
                                  tree)


@functools.lru_cache(maxsize=128)
def _compiled(method: Method, fns: ModelFns, vmapped: bool, dtype: str):
    """(rows_fn, finalize_fn), jitted; cached so every chunk of an arch reuses one executable."""

    def rows(params, probes):
        out = method.rows(fns, _cast(params, dtype), _cast(probes, dtype))
        return out.astype(jnp.float32)

    if vmapped:
        return jax.jit(jax.vmap(rows, in_axes=(0, None))), jax.jit(jax.vmap(method.finalize))
    return jax.jit(rows), jax.jit(method.finalize)


@functools.lru_cache(maxsize=128)
def _compiled_params_only(method: Method, fns: ModelFns, dtype: str):
    """The signature of a method whose probes hold no items (weight space): `rows` reads the params
    alone, so rows and finalize run as one program per model; jit's cache keeps one per param tree."""
    return jax.jit(lambda params, probes: method.finalize(method.rows(fns, _cast(params, dtype), probes))
                   .astype(jnp.float32))


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


def _take(tree, start: int, stop: int):
    return jax.tree_util.tree_map(lambda a: a[start:stop], tree)


def _cost_per_item(fn, params, inputs, *extra, models: int = 1) -> float | None:
    """Temporary bytes per (model x input item), from XLA's memory analysis of a small trial chunk.

    At most WHOLE_TRIAL_ITEMS items are tried all at once: when they fit the budget, the call that
    follows has the trial's shape, and jit reuses the trial's compiled program (one compile, not
    two: the liveness check's 16 seeds); more are tried on TRIAL_ITEMS."""
    n = n_items(inputs)
    trial = n if n <= WHOLE_TRIAL_ITEMS else min(n, TRIAL_ITEMS)
    try:
        analysis = fn.lower(params, _take(inputs, 0, trial), *extra).compile().memory_analysis()
    except Exception:
        return None
    if analysis is None:
        return None
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
    if config.probe_chunk:
        return k, config.probe_chunk
    c = max(1, min(n_probes, items * (n_devices if vmapped else 1) // k))
    # Equal chunks: the last one is padded to the compiled size, so 500 probes in chunks of at most
    # 445 run as 2 x 250, not 445 + 445 (of which 390 padding).
    return k, math.ceil(n_probes / math.ceil(n_probes / c))


def _reference_positions(probes: Probes, members: Sequence[Model], config: EngineConfig) -> list[int]:
    """Where among `members` (one arch) the model is whose rows the probe builder handed over
    (`Probes.reference_rows`: same arch and params digest as `Probes.reference`; a renamed copy
    counts too). Only in float32: under bfloat16 the signature pass casts the reference, so it
    runs again."""
    ref = probes.reference
    if probes.reference_rows is None or ref is None or config.dtype != "float32" or members[0].arch != ref["arch"]:
        return []
    return [i for i, m in enumerate(members) if model_digest(m) == ref["params_digest"]]


def _pad_probes(chunk, size: int):
    n = n_items(chunk)
    if n == size:
        return chunk
    return jax.tree_util.tree_map(
        lambda a: jnp.concatenate([a, jnp.repeat(a[-1:], size - n, axis=0)]), chunk)


def signatures(method: Method, models: Sequence[Model], probes: Probes, config: EngineConfig = EngineConfig(),
               progress: Callable[[int], None] | None = None,
               on_chunk: Callable[[Sequence[int], np.ndarray], None] | None = None) -> Signatures:
    """One signature per model. Models of every arch are allowed; each arch compiles once.

    Args:
      method: a signature method (jaxprov.methods).
      models: the zoo, any mix of archs.
      probes: built by `method.make_probes` (shared by the zoo; `probes_for` builds them batched).
      config: batching / precision / sharding choices.
      progress: optional callable(n_done_models) called after each chunk.
      on_chunk: optional callable(indices into `models`, their signatures [k, D]) called after each
        chunk of models, before `progress`: the signature cache stores each chunk as it comes, so an
        interrupted run loses at most one chunk.
    """
    if not models:
        raise ValueError("no models to fingerprint")
    out: list[np.ndarray | None] = [None] * len(models)
    groups: dict[str, list[int]] = {}
    for i, m in enumerate(models):
        groups.setdefault(m.arch, []).append(i)
    devices = jax.local_devices() if config.shard else jax.local_devices()[:1]
    done = 0

    def finished(indices: Sequence[int], vectors: np.ndarray) -> None:
        nonlocal done
        for i, v in zip(indices, vectors):
            out[i] = v
        if on_chunk is not None:
            on_chunk(list(indices), vectors)
        done += len(indices)
        if progress is not None:
            progress(done)

    for arch, index in groups.items():
        members = [models[i] for i in index]
        if probes.n == 0:
            # No probe items: the signature reads the params alone (weight space); vmap gains nothing.
            from_params = _compiled_params_only(method, members[0].fns, config.dtype)
            finished(index, np.stack([np.asarray(from_params(m.params, probes.inputs)) for m in members]))
            continue
        strategy = config.strategy
        if strategy == "auto":
            strategy = "vmap" if _vmap_pays_off(members[0]) else "sequential"
        vmapped = strategy == "vmap"
        rows_fn, fin_fn = _compiled(method, members[0].fns, vmapped, config.dtype)
        known = _reference_positions(probes, members, config)
        if known:  # the probe builder computed the reference's rows: no second forward pass
            rows = jnp.asarray(probes.reference_rows, jnp.float32)
            sig = np.asarray(fin_fn(rows[None] if vmapped else rows))
            finished([index[i] for i in known], np.repeat(sig[:1] if vmapped else sig[None], len(known), axis=0))
            index = [i for j, i in enumerate(index) if j not in known]
            members = [m for j, m in enumerate(members) if j not in known]
            if not members:
                continue
        # Estimate memory with as many models as one call will hold: grouped-conv workspaces grow
        # faster than linearly in the model count, so a one-model trial underestimates.
        trial_k = min(len(members), config.model_chunk or 8) if vmapped else 1
        sample = stack_params(members[:trial_k]) if vmapped else members[0].params
        per_item = None if (config.model_chunk and config.probe_chunk) else _cost_per_item(
            rows_fn, sample, probes.inputs, models=trial_k)
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
            finished(index[start:start + len(chunk_models)], sig)
    return Signatures.assemble(method, [m.name for m in models], [m.arch for m in models], out, probes.digest)


# ---------------------------------------------------------------------------------------------
# Probe builders: a method's per-input computation on a reference model, batched like signatures.


@functools.lru_cache(maxsize=128)
def _compiled_map(fn: Callable, static, fns: ModelFns, dtype: str):
    def run(params, chunk, shared):
        return _float32(fn(static, fns, _cast(params, dtype), _cast(chunk, dtype), _cast(shared, dtype)))

    return jax.jit(run)


def map_inputs(fn: Callable, static, model: Model, inputs, shared=(), config: EngineConfig = EngineConfig(),
               until: Callable | None = None):
    """`fn(static, model.fns, params, chunk, shared)` over `inputs` (a pytree with a leading item
    axis) in chunks, concatenated: what probe builders run on a reference model (DDV's PGD twins,
    IPGuard's boundary search, the reference's labels for `mistakes`).

    `fn` must compute each item from its own inputs (and `shared`) alone; it is a module-level
    function and `static` a hashable config, so that one executable serves every chunk and every
    call. Chunks are planned like signatures' (`config.probe_chunk`, or from XLA's memory analysis
    against the device budget), the last one padded to the same compiled shape; `config.dtype`
    casts params, inputs and `shared`, and floating outputs come back as float32.

    `until(outputs so far)`, when given, is asked after each chunk whether the rest is needed; on
    True the outputs of the inputs done so far (a prefix) are returned.
    """
    n = n_items(inputs)
    run = _compiled_map(fn, static, model.fns, config.dtype)
    if n == 0:
        return run(model.params, inputs, shared)
    device = (jax.local_devices() if config.shard else jax.local_devices()[:1])[0]
    per_item = None if config.probe_chunk else _cost_per_item(run, model.params, inputs, shared)
    _, c = _plan_chunks(config, 1, n, per_item, int(_device_budget(device) * PROBE_BUILDER_SHARE), 1, False)
    parts = []
    for p0 in range(0, n, c):
        valid = min(c, n - p0)
        out = run(model.params, _pad_probes(_take(inputs, p0, p0 + valid), c), shared)
        parts.append(jax.tree_util.tree_map(lambda a: a[:valid], out))
        if until is not None and p0 + valid < n and until(_joined(parts)):
            break
    return _joined(parts)


def _joined(parts: list):
    return parts[0] if len(parts) == 1 else jax.tree_util.tree_map(lambda *a: jnp.concatenate(a), *parts)


def probes_for(method: Method, seeds: Probes, key: jax.Array, reference: Model | None = None,
               config: EngineConfig = EngineConfig()) -> Probes:
    """`method.make_probes`, its work on the reference batched by the engine (`map_inputs`)."""
    return method.make_probes(seeds, key, reference, batched=functools.partial(map_inputs, config=config))


# ---------------------------------------------------------------------------------------------
# Nearest neighbours


@jax.jit
def _cosine_block(block, matrix):
    return block @ matrix.T


@functools.partial(jax.jit, static_argnames=("k",))
def _masked_top_k(sims, offset, row_groups, groups, row_dead, dead, k: int):
    """Top-k of a block of similarities: a dead model is 0 to everyone, pairs of different groups
    (incomparable) and NaN are -inf, and a model is not its own neighbour."""
    sims = jnp.where(row_dead[:, None] | dead[None, :], 0.0, sims)
    sims = jnp.where((row_groups[:, None] != groups[None, :]) | jnp.isnan(sims), -jnp.inf, sims)
    rows = jnp.arange(sims.shape[0])
    sims = sims.at[rows, offset + rows].set(-jnp.inf)
    return jax.lax.top_k(sims, k)


def top_k_neighbours(matrix: np.ndarray, k: int, block: int = 8192, similarity: str = "cosine",
                     groups: np.ndarray | None = None, dead: np.ndarray | None = None
                     ) -> tuple[np.ndarray, np.ndarray]:
    """Each row's k most similar other rows, block by block: the N x N matrix never exists.

    Args:
      matrix: signatures [N, D].
      k: neighbours per row (at most N - 1).
      block: rows per block; memory O(block x N), so 100,000 models fit one device.
      similarity: the methods' similarity kind (`jaxprov.methods.similarity`): "cosine" runs as a
        matmul on the accelerator, other kinds block by block on the host.
      groups: [N] ints; rows of different groups cannot be compared (similarity -inf).
      dead: [N] bools; a dead model has similarity 0 to every model.

    Returns:
      (indices [N, k], similarities [N, k]), most similar first; -inf marks a pair that cannot be
      compared (fewer than k comparable neighbours).
    """
    n = matrix.shape[0]
    groups = jnp.asarray(np.zeros(n, np.int32) if groups is None else np.asarray(groups, np.int32))
    dead = jnp.asarray(np.zeros(n, bool) if dead is None else np.asarray(dead, bool))
    device_matrix = jnp.asarray(matrix, jnp.float32) if similarity == "cosine" else None
    idx, val = [], []
    for start in range(0, n, block):
        stop = min(start + block, n)
        if similarity == "cosine":
            part = device_matrix[start:stop]
            if stop - start < block and n > block:  # pad the last block: one compiled shape
                part = jnp.concatenate([part, jnp.zeros((block - (stop - start), part.shape[1]), part.dtype)])
            sims = _cosine_block(part, device_matrix)
        else:
            sims = jnp.asarray(similarity_lib.pairwise(similarity, matrix[start:stop], matrix))
        size = sims.shape[0]
        rows = jnp.arange(start, start + size).clip(0, n - 1)
        v, i = _masked_top_k(sims, start, groups[rows], groups, dead[rows], dead, k)
        idx.append(np.asarray(i[: stop - start]))
        val.append(np.asarray(v[: stop - start]))
    return np.concatenate(idx), np.concatenate(val)
