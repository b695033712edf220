"""Zoo fingerprinting across hosts with JAX's own multi-controller runtime.

Every host runs the same program under `jax.distributed.initialize()`. Host p loads only its
contiguous shard of the zoo (`process_shard`), fingerprints it with the ordinary engine on its
local devices, and the signature rows of all hosts are all-gathered, so every host ends with the
full [N, D] matrix in zoo order. No scheduler of our own: on TPU pods and SLURM clusters
`initialize()` finds its peers itself; on CPU, collectives go through gloo.
"""

from __future__ import annotations

import math
from typing import Callable, Sequence

import jax
import numpy as np

from jaxprov.engine import EngineConfig, Signatures, signatures
from jaxprov.errors import JaxprovError
from jaxprov.methods.base import Method
from jaxprov.model import Model
from jaxprov.probes import Probes


def initialize(coordinator_address: str | None = None, num_processes: int | None = None,
               process_id: int | None = None) -> None:
    """Join the multi-controller runtime. Arguments default to JAX's auto-detection (TPU, SLURM, ...)."""
    # Only CPU collectives use this setting, so it is safe on GPU/TPU hosts; it must be set before
    # anything initialises a backend (so: no device queries here).
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(coordinator_address=coordinator_address, num_processes=num_processes,
                               process_id=process_id)


def process_shard(n: int, process_index: int | None = None, process_count: int | None = None) -> range:
    """The contiguous block of zoo indices this host owns (sizes differ by at most one)."""
    p = jax.process_index() if process_index is None else process_index
    count = jax.process_count() if process_count is None else process_count
    per = math.ceil(n / count)
    return range(min(n, p * per), min(n, (p + 1) * per))


def zoo_signatures(method: Method, names: Sequence[str], load: Callable[[int], Model], probes: Probes,
                   config: EngineConfig = EngineConfig()) -> Signatures:
    """Signatures of the whole zoo, each host computing and loading only its shard.

    Args:
      method, probes, config: as for `jaxprov.engine.signatures` (probes identical on every host).
      names: every model's name, in zoo order (a directory listing: cheap to have everywhere).
      load: index -> Model; called only for this host's indices.
    """
    from jax.experimental import multihost_utils

    n, count = len(names), jax.process_count()
    if n < count:
        raise JaxprovError(f"{n} models cannot be spread over {count} processes; use fewer processes")
    mine = process_shard(n)
    models = [load(i) for i in mine]
    local = signatures(method, models, probes, config)
    per = math.ceil(n / count)
    block = np.zeros((per, local.matrix.shape[1]), np.float32)
    block[: len(models)] = local.matrix
    # Arch keys travel as 56-bit hashes; a host names the archs it loaded and labels the others by hash,
    # which keeps equal archs equal (all comparable="arch" masking needs).
    archs = np.zeros((per,), np.int64)
    archs[: len(models)] = [_stable_hash(m.arch) for m in models]
    gathered = np.asarray(multihost_utils.process_allgather(block)).reshape(count * per, -1)[:n]
    arch_hashes = np.asarray(multihost_utils.process_allgather(archs)).reshape(-1)[:n]
    arch_of = {_stable_hash(m.arch): m.arch for m in models}
    all_archs = tuple(arch_of.get(int(h), f"arch#{int(h):x}") for h in arch_hashes)
    return Signatures.assemble(method, names, all_archs, list(gathered), probes.digest)


def _stable_hash(text: str) -> int:
    import hashlib

    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:7], "little")
