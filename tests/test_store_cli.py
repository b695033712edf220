"""Convert -> store -> load round trips exactly (without torch), conversions are content-addressed,
and every bad input reaches the user as one line with exit code 2 and nothing half written."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import converters
import jaxprov
from jaxprov.cli import main

ROOT = Path(__file__).resolve().parents[1]


def test_round_trip_in_a_process_without_torch(tmp_path, lenet_file):
    out, model, converted = jaxprov.convert(lenet_file, tmp_path / "stored")
    assert converted and (out / "jaxprov.json").exists()
    x = np.asarray(model.input_spec.example(3, key=__import__("jax").random.PRNGKey(1)))
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "expected.npy", np.asarray(model(x)))
    script = f"""
import sys
sys.modules["torch"] = None  # any import of torch now fails
import jax, numpy as np, jaxprov
jax.config.update("jax_default_matmul_precision", "highest")  # as the parent (conftest)
m = jaxprov.load({str(out)!r})
np.save({str(tmp_path / 'got.npy')!r}, np.asarray(m(np.load({str(tmp_path / 'x.npy')!r}))))
print(m.arch, jaxprov.store.params_digest(m.params))
"""
    run = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    arch, digest = run.stdout.split()
    assert arch == "lenet"
    assert digest == jaxprov.store.params_digest(model.params)  # every param bit-identical
    np.testing.assert_array_equal(np.load(tmp_path / "got.npy"), np.load(tmp_path / "expected.npy"))


def test_conversion_is_content_addressed(tmp_path, lenet_file, monkeypatch):
    monkeypatch.setenv("JAXPROV_HOME", str(tmp_path / "home"))
    first, _, converted = jaxprov.convert(lenet_file)
    assert converted and first.parent == tmp_path / "home" / "models"
    stamp = (first / "jaxprov.json").stat().st_mtime_ns
    again, _, converted = jaxprov.convert(lenet_file)
    assert again == first and not converted
    assert (first / "jaxprov.json").stat().st_mtime_ns == stamp
    meta = json.loads((first / "jaxprov.json").read_text())
    assert meta["source"]["sha256"] == converters.source_digest(lenet_file)
    assert meta["arch"] == "lenet" and meta["num_params"] == 61706


def test_out_holding_another_model_is_kept_unless_forced(tmp_path, lenet_file, torch, reference):
    out = tmp_path / "stored"
    jaxprov.convert(lenet_file, out)
    torch.manual_seed(1)
    other = tmp_path / "other.pt"
    torch.save(reference.LeNet().state_dict(), other)
    with pytest.raises(jaxprov.StoreError, match="already holds another model"):
        jaxprov.convert(other, out)
    _, model, converted = jaxprov.convert(other, out, force=True)
    assert converted and jaxprov.load(out).meta["source"]["sha256"] == converters.source_digest(other)


def test_cli_convert_and_info(tmp_path, lenet_file, capsys):
    assert main(["convert", str(lenet_file), "--out", str(tmp_path / "m")]) == 0
    assert "arch:        lenet" in capsys.readouterr().out
    assert main(["info", str(tmp_path / "m"), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["arch"] == "lenet" and info["source"]["sha256"] == converters.source_digest(lenet_file)
    assert main(["info", str(lenet_file)]) == 0
    assert "parameters:  61,706" in capsys.readouterr().out


def _cli_error(argv, capsys) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("jaxprov: error: ") and err.count("\n") == 1 and "Traceback" not in err
    return err


def test_cli_bad_inputs_one_line_exit_2_nothing_written(tmp_path, capsys, torch):
    out = tmp_path / "out"
    (tmp_path / "junk.pt").write_bytes(b"PK\x03\x04 definitely not a zip")
    assert "truncated or corrupt" in _cli_error(["convert", str(tmp_path / "junk.pt"), "--out", str(out)], capsys)
    (tmp_path / "notes").mkdir()
    assert "no config.json" in _cli_error(["convert", str(tmp_path / "notes"), "--out", str(out)], capsys)
    torch.save({"encoder.weird.weight": torch.zeros(3, 3)}, tmp_path / "unknown.pt")
    assert "could not detect the architecture" in _cli_error(
        ["convert", str(tmp_path / "unknown.pt"), "--out", str(out)], capsys)
    assert "unknown architecture 'resnet9000'" in _cli_error(
        ["convert", str(tmp_path / "unknown.pt"), "--arch", "resnet9000", "--out", str(out)], capsys)
    assert not out.exists() and not list(tmp_path.glob(".out*"))


def test_non_model_directory_is_named(tmp_path, capsys):
    (tmp_path / "photos").mkdir()
    (tmp_path / "photos" / "cat.jpg").write_bytes(b"\xff\xd8")
    err = _cli_error(["info", str(tmp_path / "photos")], capsys)
    assert "photos" in err and "config.json" in err


def test_state_dict_that_does_not_fit_lists_every_problem(tmp_path, torch, reference):
    torch.manual_seed(0)
    state = reference.LeNet(num_classes=10).state_dict()
    state["head.weight"] = torch.zeros(10, 99)  # mis-shaped
    del state["fc2.bias"]  # missing
    state["extra.weight"] = torch.zeros(1)  # unexpected
    path = tmp_path / "broken.pt"
    torch.save(state, path)
    with pytest.raises(jaxprov.ConversionError) as err:
        jaxprov.load(path, arch="lenet")
    problems = err.value.problems
    assert any(p.startswith("mis-shaped: head.weight") for p in problems)
    assert "missing: params/fc2/bias" in problems
    assert "unexpected: extra.weight" in problems
    assert "broken.pt" in str(err.value) and "\n" not in str(err.value)


def test_non_finite_weights_warn_naming_the_tensors(tmp_path, torch, reference):
    torch.manual_seed(0)
    state = reference.MLP().state_dict()
    state["layers.1.bias"][3] = float("nan")
    state["head.weight"][0, 0] = float("inf")
    path = tmp_path / "nan.pt"
    torch.save(state, path)
    with pytest.warns(UserWarning, match=r"nan\.pt: 2 tensors hold NaN or Inf values: .*layers\.1\.bias") as rec:
        jaxprov.load(path)
    assert "head.weight" in str(rec[0].message)


# -- issue 9: stored models are untrusted input; writes never destroy or strand anything ---------


def test_force_replaces_only_a_folder_holding_nothing_but_a_stored_model(tmp_path, lenet_file, capsys, torch,
                                                                        reference):
    out = tmp_path / "stored"
    jaxprov.convert(lenet_file, out)
    (out / "notes.txt").write_text("mine")
    (out / "results").mkdir()
    torch.manual_seed(1)
    other = tmp_path / "other.pt"
    torch.save(reference.LeNet().state_dict(), other)
    err = _cli_error(["convert", str(other), "--out", str(out), "--force"], capsys)
    assert "notes.txt, results" in err and "refusing to replace" in err
    assert (out / "notes.txt").read_text() == "mine"
    assert jaxprov.load(out).meta["source"]["sha256"] == converters.source_digest(lenet_file)  # unchanged
    (out / "notes.txt").unlink()
    (out / "results").rmdir()
    assert main(["convert", str(other), "--out", str(out), "--force"]) == 0
    assert jaxprov.load(out).meta["source"]["sha256"] == converters.source_digest(other)


def test_stale_temporaries_are_removed_by_the_next_write_live_ones_kept(tmp_path):
    import fcntl
    import os
    import time

    model = jaxprov.models.init("lenet", __import__("jax").random.PRNGKey(0))
    old = time.time() - 2 * jaxprov.atomic.STALE_AFTER_S

    def temporary(name, age):
        path = tmp_path / name
        (path / "params").mkdir(parents=True)
        (path / "params" / "blob").write_bytes(b"\0" * 1000)
        os.utime(path, (age, age))
        return path

    stale = temporary(".m.tmp-0badc0de", old)  # its writer died: nobody holds its lock
    young = temporary(".m.tmp-12345678", time.time())  # may be a writer about to take its lock
    live = temporary(".m.tmp-abcdef01", old)  # an old write still running: it holds the lock
    other = temporary(".mm.tmp-0badc0de", old)  # a temporary of another place
    fd = os.open(live, os.O_RDONLY)
    fcntl.flock(fd, fcntl.LOCK_EX)
    try:
        with pytest.warns(UserWarning, match=r"removed .*\.m\.tmp-0badc0de, left by an interrupted write"):
            jaxprov.save_model(model, tmp_path / "m")
    finally:
        os.close(fd)
    assert not stale.exists() and young.exists() and live.exists() and other.exists()
    assert jaxprov.load(tmp_path / "m").arch == "lenet"


def test_temporaries_of_killed_file_writers_are_removed_by_the_next_write(tmp_path):
    import fcntl
    import os
    import time

    from jaxprov.atomic import STALE_AFTER_S, atomic_write

    old = time.time() - 2 * STALE_AFTER_S

    def temporary(name, age):
        path = tmp_path / name
        path.write_bytes(b"half a report")
        os.utime(path, (age, age))
        return path

    stale = temporary(".report.json.0badc0de.tmp", old)  # its writer was killed: nobody holds its lock
    young = temporary(".report.json.12345678.tmp", time.time())  # a writer about to take its lock
    live = temporary(".report.json.abcdef01.tmp", old)  # a slow write still running: it holds the lock
    others = [temporary(".report.json.old.0badc0de.tmp", old), temporary(".report.json.0badc0de.tmp.npz", old),
              temporary(".report.jsonx.0badc0de.tmp", old)]  # another file's, or not a temporary's name
    (tmp_path / ".report.json.0000beef.tmp").symlink_to(others[0])  # a link is never followed or removed
    fd = os.open(live, os.O_RDONLY)
    fcntl.flock(fd, fcntl.LOCK_EX)
    try:
        atomic_write(tmp_path / "report.json", b"{}")
    finally:
        os.close(fd)
    assert (tmp_path / "report.json").read_bytes() == b"{}"
    assert not stale.exists() and young.exists() and live.exists() and all(p.exists() for p in others)
    assert (tmp_path / ".report.json.0000beef.tmp").is_symlink()
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        [young.name, live.name, *(p.name for p in others), ".report.json.0000beef.tmp", "report.json"])


def _tamper(directory, change):
    path = directory / "jaxprov.json"
    meta = json.loads(path.read_text())
    text = change(meta)
    path.write_text(text if isinstance(text, str) else json.dumps(meta))


def _del(key):
    return lambda meta: meta.pop(key) and None


TAMPERED = {
    "not json": (lambda meta: "{not json", "not valid JSON"),
    "a list": (lambda meta: "[1, 2]", "a JSON list"),
    "deep nesting": (lambda meta: "[" * 100000 + "]" * 100000, "not valid JSON"),
    "huge number": (lambda meta: json.dumps({**meta, "num_params": 0}).replace('"num_params": 0', '"num_params": '
                                                                                + "9" * 5000), "not valid JSON"),
    "missing arch": (_del("arch"), "arch is None, not a str"),
    "arch is a number": (lambda meta: meta.update(arch=5), "arch is 5, not a str"),
    "arch does not parse": (lambda meta: meta.update(arch="lenet[num_classes=ten]"), "not an architecture"),
    "unknown arch": (lambda meta: meta.update(arch="resnet9000"), "not an architecture"),
    "format version a string": (lambda meta: meta.update(format_version="1"), "incompatible"),
    "input_spec a list": (lambda meta: meta.update(input_spec=[28, 28, 1]), "input_spec is"),
    "input_spec odd field": (lambda meta: meta["input_spec"].update(colour=True), "does not parse"),
    "input_spec shape": (lambda meta: meta["input_spec"].update(shape=[1, 1, 1]), "input_spec.shape"),
    "input_spec nan mean": (lambda meta: meta["input_spec"].update(mean=[float("nan")], std=[1.0]), "finite"),
    "source a string": (lambda meta: meta.update(source="x"), "source is"),
    "num_params negative": (lambda meta: meta.update(num_params=-1), "negative"),
    "output kind": (lambda meta: meta.update(output_kind="probabilities"), "output_kind"),
    "params of another arch": (lambda meta: meta.update(arch="lenet[num_classes=5]"), "do not fit"),
    "params sha256": (lambda meta: meta.update(params_sha256="0" * 64), "do not match their recorded sha256"),
}


@pytest.fixture
def stored_lenet(tmp_path):
    model = jaxprov.models.init("lenet", __import__("jax").random.PRNGKey(0))
    return jaxprov.save_model(model, tmp_path / "m")


@pytest.mark.parametrize("case", sorted(TAMPERED))
def test_tampered_metadata_is_one_store_error(stored_lenet, case, capsys):
    change, message = TAMPERED[case]
    _tamper(stored_lenet, change)
    with pytest.raises(jaxprov.StoreError) as err:
        jaxprov.load(stored_lenet)
    assert message in str(err.value) and "\n" not in str(err.value)
    assert "jaxprov.json" in str(err.value) or str(stored_lenet) in str(err.value)
    if case not in ("params of another arch", "params sha256"):  # info reads metadata only
        assert message in _cli_error(["info", str(stored_lenet)], capsys)


def _random_json(rng, depth=0):
    kind = rng.integers(9 if depth < 4 else 6)
    if kind == 0:
        return None
    if kind == 1:
        return bool(rng.integers(2))
    if kind == 2:
        return int(rng.choice([0, -1, 1, 2**31, -2**63, 10**30]))
    if kind == 3:
        return float(rng.choice([0.0, -1.5, 1e308, -1e-308]))
    if kind == 4:
        return str(rng.choice(["", "lenet", "resnet18[num_classes=-3]", "image", "=1", "\0", "x" * 300]))
    if kind == 5:
        return "lenet[num_classes=%d]" % rng.integers(-5, 20)
    if kind == 6:
        return [_random_json(rng, depth + 1) for _ in range(rng.integers(4))]
    return {str(rng.choice(["shape", "mean", "std", "modality", "dtype", "sha256", "path", "source_dtypes",
                            "version", "parent"])): _random_json(rng, depth + 1)
            for _ in range(rng.integers(4))}


def test_generated_metadata_mutations_give_a_model_or_a_jaxprov_error(stored_lenet, capsys):
    """Swapped, deleted and mistyped fields, bit flips and truncation of a real jaxprov.json: every
    case loads a correct model or raises a JaxprovError, never another exception, and `info`
    prints it or exits 2."""
    rng = np.random.default_rng(9)  # fixed: the same 200 cases every run
    _tamper(stored_lenet, lambda meta: meta.update(
        source={"path": "lenet.pt", "sha256": "ab" * 32},
        converter={"version": 1, "source_family": "torch", "source_dtypes": ["float32"]}))
    original = (stored_lenet / "jaxprov.json").read_bytes()
    meta = json.loads(original)
    keys = sorted(meta) + ["lineage"]
    outcomes = {"loaded": 0, "refused": 0}
    for _ in range(200):
        how = rng.integers(5)
        if how == 0:  # a top-level field gets a random value
            mutated = dict(meta, **{str(rng.choice(keys)): _random_json(rng)})
            data = json.dumps(mutated).encode()
        elif how == 1:  # a field of input_spec, source or converter gets a random value
            field = str(rng.choice(["input_spec", "source", "converter"]))
            inner = dict(meta[field], **{str(rng.choice(sorted(meta[field]))): _random_json(rng)})
            data = json.dumps(dict(meta, **{field: inner})).encode()
        elif how == 2:  # a field is deleted
            data = json.dumps({k: v for k, v in meta.items() if k != rng.choice(keys)}).encode()
        elif how == 3:  # bit flips
            raw = bytearray(original)
            for i in rng.integers(len(raw), size=rng.integers(1, 4)):
                raw[i] ^= 1 << int(rng.integers(8))
            data = bytes(raw)
        else:  # truncation
            data = original[:rng.integers(len(original))]
        (stored_lenet / "jaxprov.json").write_bytes(data)
        assert main(["info", str(stored_lenet)]) in (0, 2)
        assert "Traceback" not in capsys.readouterr().err
        try:
            model = jaxprov.load(stored_lenet)
        except jaxprov.JaxprovError as err:
            assert "\n" not in str(err)
            outcomes["refused"] += 1
        else:  # accepted: then it is the stored model, whole
            assert model.arch == "lenet" and jaxprov.store.params_digest(model.params) == meta["params_sha256"]
            outcomes["loaded"] += 1
    assert outcomes["refused"] > 100 and outcomes["loaded"] > 0, outcomes


def test_a_stored_model_with_new_params_saves_its_new_digest(stored_lenet, tmp_path):
    # A model loaded from the store carries the old params_sha256 in its meta; saving it with other
    # params (a dead copy, a fine-tuned child) must record the new digest, or it never loads again.
    import jax

    loaded = jaxprov.load_model(stored_lenet)
    dead = loaded.replace(params=jax.tree_util.tree_map(np.zeros_like, loaded.params), name="dead")
    jaxprov.save_model(dead, tmp_path / "dead")
    again = jaxprov.load_model(tmp_path / "dead")
    assert all(not np.any(leaf) for leaf in jax.tree_util.tree_leaves(again.params))
    assert again.meta["params_sha256"] != loaded.meta["params_sha256"]


def test_a_folder_named_like_an_arch_key_round_trips_and_a_glob_parent_is_one_line(tmp_path):
    # orbax globs its folder when it finishes a save: "[num_classes=10]" in the temporary's name
    # used to drop the params silently (the folder then failed to load with a ValueError).
    model = jaxprov.models.init("lenet", __import__("jax").random.PRNGKey(0))
    out = jaxprov.save_model(model, tmp_path / "lenet[num_classes=10]*?")
    loaded = jaxprov.load(out)
    for a, b in zip(__import__("jax").tree_util.tree_leaves(model.params),
                    __import__("jax").tree_util.tree_leaves(loaded.params)):
        assert np.array_equal(np.asarray(a), np.asarray(b))
    with pytest.raises(jaxprov.errors.StoreError, match=r"\[ \] \* \? in its name.*without them"):
        jaxprov.save_model(model, tmp_path / "zoo[1]" / "m")
    assert not (tmp_path / "zoo[1]").exists()


def test_a_stored_model_declaring_a_huge_array_is_refused_from_its_metadata(stored_lenet):
    # The params header says 1 GiB (one zstd chunk of zeros, a few KiB on disk): params_io.restore
    # refuses it from orbax's metadata, before anything is restored (the whole case runs in ~1 s; a
    # reader that restored first would allocate the declared array in full, as load_model once did).
    import jax

    from tests.hostile_files import orbax_declaring

    path, _ = jax.tree_util.tree_leaves_with_path(jaxprov.models.abstract_params("lenet"))[0]
    leaf = ".".join(k.key for k in path)
    orbax_declaring(stored_lenet / "params", leaf, (2 ** 26, 4))
    with pytest.raises(jaxprov.StoreError) as err:
        jaxprov.load(stored_lenet)
    assert str(err.value).startswith(f"{stored_lenet}: the stored params do not fit lenet (") and "\n" not in str(err.value)
    assert "has shape (67108864, 4)" in str(err.value) and "delete the directory and convert again" in str(err.value)
