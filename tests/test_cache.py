"""Stored signatures: reuse, resume after interruption, damage detection, manifest contents."""

import dataclasses
import json
import sqlite3

import jax
import numpy as np
import pytest

from jaxprov import cache, engine, methods, models
from jaxprov.engine import EngineConfig
from jaxprov.methods.base import Method
from jaxprov.probes import seeds

CONFIG = EngineConfig(model_chunk=4, probe_chunk=8, strategy="vmap")
PAIRS = EngineConfig(model_chunk=2, probe_chunk=8, strategy="vmap", shard=False)  # chunks of two models


@dataclasses.dataclass(frozen=True)
class LogSoftmax(Method):
    """Rows = log-probabilities on each probe; enough to exercise storage with real model outputs."""

    name = "test_log_softmax"
    temperature: float = 1.0

    def rows(self, fns, params, probes):
        return jax.nn.log_softmax(fns.apply(params, probes["x"]) / self.temperature, axis=-1)


@pytest.fixture(scope="module")
def zoo():
    keys = jax.random.split(jax.random.PRNGKey(0), 5)
    mlps = [models.init("mlp", k, name=f"mlp{i}") for i, k in enumerate(keys[:3])]
    lenets = [models.init("lenet", k, name=f"lenet{i}") for i, k in enumerate(keys[3:])]
    tagged = mlps[1].replace(meta={"source": {"path": "/ckpt/mlp1.pt", "sha256": "ab" * 32},
                                   "lineage": {"parent": "mlp0", "op": "finetune"}})
    # Interleaved archs check that results come back in input order; the copy shares mlp0's weights.
    return [mlps[0], lenets[0], tagged, lenets[1], mlps[2], mlps[0].replace(name="mlp0-copy")]


@pytest.fixture(scope="module")
def probes(zoo):
    return LogSoftmax().make_probes(seeds("synthetic", zoo[0].input_spec, 8, jax.random.PRNGKey(1)),
                                    jax.random.PRNGKey(2))


@pytest.fixture
def engine_calls(monkeypatch):
    """Model counts of every chunk the engine hands back to the cache."""
    calls = []
    original = engine.signatures

    def counting(method, models, probes, config=EngineConfig(), progress=None, on_chunk=None):
        def counted(indices, vectors):
            calls.append(len(indices))
            on_chunk(indices, vectors)

        return original(method, models, probes, config, progress, None if on_chunk is None else counted)

    monkeypatch.setattr(engine, "signatures", counting)
    return calls


def _signature_files(root):
    return sorted((root / "signatures").rglob("*.npy"))


def test_repeated_run_recomputes_nothing_and_matches_engine(tmp_path, zoo, probes, engine_calls):
    method = LogSoftmax()
    first = cache.cached_signatures(method, zoo, probes, tmp_path, CONFIG)
    assert sum(engine_calls) == 5  # six models, one pair with equal weights
    assert len(_signature_files(tmp_path)) == 5
    engine_calls.clear()
    second = cache.cached_signatures(method, zoo, probes, tmp_path, CONFIG)
    assert engine_calls == []
    direct = engine.signatures(method, zoo, probes, CONFIG)
    for result in (first, second):
        assert result.names == direct.names and result.archs == direct.archs
        assert result.probes_digest == probes.digest
        np.testing.assert_allclose(result.matrix, direct.matrix, rtol=0, atol=1e-6)
        np.testing.assert_array_equal(result.dead, direct.dead)
    np.testing.assert_array_equal(first.matrix, second.matrix)
    np.testing.assert_array_equal(first.matrix[0], first.matrix[5])
    assert not np.allclose(first.matrix[0], first.matrix[2])


def test_interrupted_run_resumes_with_only_the_rest(tmp_path, zoo, probes, engine_calls):
    method = LogSoftmax()

    def interrupt(done):
        raise KeyboardInterrupt(f"stopped after {done} models")

    with pytest.raises(KeyboardInterrupt):
        cache.cached_signatures(method, zoo, probes, tmp_path / "a", PAIRS, progress=interrupt)
    assert engine_calls == [2]  # the first chunk (two mlps) was stored before the interruption
    engine_calls.clear()
    seen = []
    resumed = cache.cached_signatures(method, zoo, probes, tmp_path / "a", PAIRS, progress=seen.append)
    assert engine_calls == [2, 1]  # both lenets, then the last mlp; nothing stored is recomputed
    assert seen == [3, 5, 6]  # mlp0, its copy and mlp1 found, then after each stored chunk
    full = cache.cached_signatures(method, zoo, probes, tmp_path / "b", PAIRS)
    assert resumed.names == full.names
    np.testing.assert_array_equal(resumed.matrix, full.matrix)
    runs = sqlite3.connect(tmp_path / "a" / cache.MANIFEST).execute(
        "SELECT finished, stats FROM runs ORDER BY id").fetchall()
    assert runs[0] == (None, None)  # the interrupted run never finished
    assert json.loads(runs[1][1]) == {"models": 6, "hits": 3, "computed": 3, "dropped": {}}


def test_damaged_entries_are_detected_and_recomputed(tmp_path, zoo, probes, engine_calls):
    method = LogSoftmax()
    clean = cache.cached_signatures(method, zoo, probes, tmp_path, CONFIG)
    store = cache.SignatureCache(tmp_path)
    key_of = {m.name: cache.signature_key(cache.model_digest(m), method.config_digest(), probes.digest)
              for m in zoo}
    flipped = tmp_path / "signatures" / key_of["lenet0"][:2] / f"{key_of['lenet0']}.npy"
    data = bytearray(flipped.read_bytes())
    data[-4:] = bytes(b ^ 0xFF for b in data[-4:])  # last float of the vector: still a valid .npy
    flipped.write_bytes(bytes(data))
    (tmp_path / "signatures" / key_of["mlp2"][:2] / f"{key_of['mlp2']}.npy").unlink()
    engine_calls.clear()
    with pytest.warns(UserWarning, match="2 damaged entries"):
        repaired = cache.cached_signatures(method, zoo, probes, store, CONFIG)
    assert sorted(engine_calls) == [1, 1]  # only the two damaged signatures, one per arch
    np.testing.assert_array_equal(repaired.matrix, clean.matrix)
    stats = json.loads(store.query("SELECT stats FROM runs ORDER BY id DESC LIMIT 1")[0][0])
    assert stats["dropped"] == {key_of["lenet0"]: "sha256 mismatch", key_of["mlp2"]: "file missing"}
    found, dropped = store.get(list(key_of.values()))
    assert len(found) == 5 and dropped == {}


def test_manifest_rows_and_content_keys(tmp_path, zoo, probes):
    store = cache.SignatureCache(tmp_path)
    base = cache.cached_signatures(LogSoftmax(), zoo, probes, store, CONFIG)
    hot = cache.cached_signatures(LogSoftmax(temperature=2.0), zoo, probes, store, CONFIG)
    other_probes = LogSoftmax().make_probes(seeds("synthetic", zoo[0].input_spec, 8, jax.random.PRNGKey(7)),
                                            jax.random.PRNGKey(2))
    cache.cached_signatures(LogSoftmax(), zoo, other_probes, store, CONFIG)
    assert not np.allclose(base.matrix, hot.matrix)

    model_rows = store.query("SELECT params_sha256, name, arch, source_path, source_sha256, lineage FROM models")
    assert len(model_rows) == 5  # mlp0 and its copy are one model by content
    by_name = {row[1]: row for row in model_rows}
    assert by_name["mlp1"][3:5] == ("/ckpt/mlp1.pt", "ab" * 32)
    assert json.loads(by_name["mlp1"][5]) == {"parent": "mlp0", "op": "finetune"}
    assert by_name["lenet1"][2] == "lenet" and by_name["lenet1"][3:] == (None, None, None)

    sig_rows = store.query("SELECT key, config_digest, probes_digest, path, file_sha256, dead FROM signatures")
    assert len(sig_rows) == 15 and len({row[0] for row in sig_rows}) == 15  # 5 models x 3 (config, probes)
    assert {row[1] for row in sig_rows} == {LogSoftmax().config_digest(), LogSoftmax(2.0).config_digest()}
    assert {row[2] for row in sig_rows} == {probes.digest, other_probes.digest}
    assert not any(row[5] for row in sig_rows)
    assert len(_signature_files(tmp_path)) == 15

    runs = store.query("SELECT finished, argv, config, versions FROM runs")
    assert len(runs) == 3 and all(run[0] is not None for run in runs)
    versions = json.loads(runs[0][3])
    assert versions["jax"] == jax.__version__ and {"flax", "jaxprov", "jaxlib"} <= set(versions)
    assert json.loads(runs[1][2])["method"]["temperature"] == 2.0

    assert {row[0] for row in store.query("SELECT digest FROM probes")} == {probes.digest, other_probes.digest}
    reloaded = store.load_probes(other_probes.digest)
    assert reloaded.digest == other_probes.digest
    np.testing.assert_array_equal(np.asarray(reloaded.inputs["x"]), np.asarray(other_probes.inputs["x"]))


def test_arch_dependent_lengths_stack_like_the_engine(tmp_path, zoo, engine_calls):
    """Weight cosine: one length per arch, computed in per-arch chunks, padded like one engine call."""
    method = methods.get("weights")
    probes = method.make_probes(None, jax.random.PRNGKey(0))
    first = cache.cached_signatures(method, zoo, probes, tmp_path, CONFIG)
    again = cache.cached_signatures(method, zoo, probes, tmp_path, CONFIG)
    assert sorted(engine_calls) == [2, 3]  # two archs; nothing on the second run
    direct = engine.signatures(method, zoo, probes, CONFIG)
    assert first.matrix.shape == direct.matrix.shape == (6, sum(x.size for x in jax.tree_util.tree_leaves(
        zoo[0].params)))
    for result in (first, again):
        np.testing.assert_allclose(result.matrix, direct.matrix, rtol=0, atol=1e-7)


def test_a_corrupt_manifest_is_moved_aside_and_a_new_one_started(tmp_path, zoo, probes):
    (tmp_path / cache.MANIFEST).write_bytes(b"this is not an SQLite database" * 100)
    with pytest.warns(UserWarning, match="corrupt manifest"):
        store = cache.SignatureCache(tmp_path)
    assert len(list(tmp_path.glob(f"{cache.MANIFEST}.corrupt-*"))) == 1
    result = cache.cached_signatures(LogSoftmax(), zoo[:2], probes, store, CONFIG)
    assert result.matrix.shape[0] == 2
