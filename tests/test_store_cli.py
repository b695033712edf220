"""Convert -> store -> load round trips exactly (without torch), conversions are content-addressed,
and every bad input reaches the user as one line with exit code 2 and nothing half written."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import jaxprov
from jaxprov.cli import main

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def lenet_file(tmp_path, torch, reference):
    torch.manual_seed(0)
    path = tmp_path / "lenet.pt"
    torch.save(reference.LeNet().state_dict(), path)
    return path


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
    assert meta["source"]["sha256"] == jaxprov.store.file_digest(lenet_file)
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
    assert converted and jaxprov.load(out).meta["source"]["sha256"] == jaxprov.store.file_digest(other)


def test_cli_convert_and_info(tmp_path, lenet_file, capsys):
    assert main(["convert", str(lenet_file), "--out", str(tmp_path / "m")]) == 0
    assert "arch:        lenet" in capsys.readouterr().out
    assert main(["info", str(tmp_path / "m"), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["arch"] == "lenet" and info["source"]["sha256"] == jaxprov.store.file_digest(lenet_file)
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
