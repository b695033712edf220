"""One host of the two-process test in test_engine.py: loads only its shard of the zoo."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script: make `tests` importable
port, out, pid = sys.argv[1], sys.argv[2], int(sys.argv[3])

from jaxprov import distributed  # noqa: E402

distributed.initialize(f"localhost:{port}", num_processes=2, process_id=pid)

import jax  # noqa: E402
import numpy as np  # noqa: E402

jax.config.update("jax_default_matmul_precision", "highest")

from jaxprov.engine import EngineConfig  # noqa: E402
from jaxprov.probes import Probes  # noqa: E402
from tests.test_engine import LogSoftmax, _zoo  # noqa: E402

names = [m.name for m in _zoo()]  # the listing is known everywhere; weights are loaded per shard
loaded = []


def load(i):
    loaded.append(i)
    return _zoo()[i]


sigs = distributed.zoo_signatures(LogSoftmax(), names, load, Probes.load(f"{out}/probes.npz"), EngineConfig())
np.save(f"{out}/signatures_{pid}.npy", sigs.matrix)
print(f"loaded {loaded}")
