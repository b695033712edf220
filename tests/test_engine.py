"""The engine: vmapped zoo signatures equal one-model-at-a-time ones, whatever the chunking,
sharding over simulated devices and across two local processes changes nothing."""

import dataclasses
import socket
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np
import pytest

from jaxprov import models
from jaxprov.engine import EngineConfig, signatures
from jaxprov.methods.base import Method
from jaxprov.probes import seeds

ROOT = Path(__file__).resolve().parents[1]


@dataclasses.dataclass(frozen=True)
class LogSoftmax(Method):
    """A minimal method: the model's log-probabilities on every probe, flattened and normalised."""

    name = "log_softmax"

    def rows(self, fns, params, probes):
        return jax.nn.log_softmax(fns.apply(params, probes["x"]))


def _zoo():
    lenets = [models.init("lenet", jax.random.PRNGKey(i), name=f"lenet{i}") for i in range(5)]
    mlps = [models.init("mlp", jax.random.PRNGKey(10 + i), name=f"mlp{i}") for i in range(3)]
    return [lenets[0], mlps[0], *lenets[1:], *mlps[1:]]  # archs interleaved: order must survive grouping


@pytest.fixture(scope="module")
def zoo_and_probes():
    zoo = _zoo()
    method = LogSoftmax()
    probes = method.make_probes(seeds("mnist", zoo[0].input_spec, 37, jax.random.PRNGKey(0)), jax.random.PRNGKey(1))
    one_by_one = np.stack([signatures(method, [m], probes, EngineConfig(strategy="sequential", shard=False)).matrix[0]
                           for m in zoo])
    return zoo, method, probes, one_by_one


@pytest.mark.parametrize("config", [
    EngineConfig(strategy="vmap", model_chunk=4, probe_chunk=10, shard=False),
    EngineConfig(strategy="vmap", model_chunk=3, probe_chunk=37, shard=False),
    EngineConfig(strategy="vmap", model_chunk=4, probe_chunk=16, shard=True),  # 4 simulated devices
    EngineConfig(strategy="sequential", probe_chunk=8),
    EngineConfig(),  # auto: chunks from XLA's memory analysis
])
def test_zoo_signatures_equal_one_model_at_a_time(zoo_and_probes, config):
    zoo, method, probes, expected = zoo_and_probes
    got = signatures(method, zoo, probes, config)
    assert got.names == tuple(m.name for m in zoo)
    np.testing.assert_allclose(got.matrix, expected, atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(got.matrix, axis=1), 1.0, atol=1e-5)


def _placements(zoo, probes, config) -> list:
    """The sharding of the stacked params as the compiled program sees them, per arch group."""
    seen = []

    @dataclasses.dataclass(frozen=True)
    class Inspected(LogSoftmax):
        name = "inspected"

        def rows(self, fns, params, probes):
            leaf = jax.tree_util.tree_leaves(params)[0]  # under vmap: one model's slice of the stack
            jax.debug.inspect_array_sharding(leaf, callback=lambda s: seen.append((leaf.shape, s)))
            return super().rows(fns, params, probes)

    signatures(Inspected(), zoo, probes, config)
    return seen


def test_sharded_run_splits_the_model_axis_over_four_devices(zoo_and_probes):
    zoo, _, probes, _ = zoo_and_probes
    sharded = _placements(zoo, probes, EngineConfig(strategy="vmap", model_chunk=4, probe_chunk=16, shard=True))
    assert len(sharded) == 2  # one compile per arch (lenet, mlp)
    for shape, sharding in sharded:
        assert len(sharding.device_set) == 4
        assert sharding.shard_shape((4, *shape)) == (1, *shape)  # each device holds one of the 4 models
    single = _placements(zoo, probes, EngineConfig(strategy="vmap", model_chunk=4, probe_chunk=16, shard=False))
    assert [len(s.device_set) for _, s in single] == [1, 1]


def test_bfloat16_stays_close_to_float32(zoo_and_probes):
    zoo, method, probes, expected = zoo_and_probes
    got = signatures(method, zoo, probes, EngineConfig(dtype="bfloat16", shard=False))
    cos = np.sum(got.matrix * expected, axis=1)
    assert cos.min() > 0.99, cos


def test_dead_model_is_flagged_not_nan(zoo_and_probes):
    zoo, method, probes, _ = zoo_and_probes

    @dataclasses.dataclass(frozen=True)
    class Centered(Method):
        name = "centered"

        def rows(self, fns, params, probes):
            out = fns.apply(params, probes["x"])
            return out - out.mean(axis=0, keepdims=True)

    dead = zoo[0].replace(name="dead", params=jax.tree_util.tree_map(np.zeros_like, zoo[0].params))
    got = signatures(Centered(), [zoo[0], dead], probes, EngineConfig(shard=False))
    assert got.dead.tolist() == [False, True]
    assert np.all(np.isfinite(got.matrix)) and np.all(got.matrix[1] == 0)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def test_two_process_jax_distributed_run_equals_single_process(zoo_and_probes, tmp_path):
    zoo, method, probes, expected = zoo_and_probes
    probes.save(tmp_path / "probes.npz")
    port = _free_port()
    env_cmd = [sys.executable, str(ROOT / "tests" / "distributed_worker.py"), str(port), str(tmp_path)]
    procs = [subprocess.Popen(env_cmd + [str(pid)], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              text=True, env={**__import__("os").environ, "XLA_FLAGS": "", "JAX_PLATFORMS": "cpu"})
             for pid in (0, 1)]
    logs = [p.communicate(timeout=300)[0] for p in procs]
    assert all(p.returncode == 0 for p in procs), "\n".join(logs)[-3000:]
    for pid in (0, 1):  # every host ends with the whole zoo's matrix, in zoo order
        got = np.load(tmp_path / f"signatures_{pid}.npy")
        np.testing.assert_allclose(got, expected, atol=1e-5)
    assert "loaded [0, 1, 2, 3]" in logs[0] and "loaded [4, 5, 6, 7]" in logs[1]
