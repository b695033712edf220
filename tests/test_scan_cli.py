"""`jaxprov scan` and `jaxprov compare` from the command line, on a mixed folder with a broken file."""

import json
import shutil

import numpy as np
import pytest

import jaxprov
from jaxprov.cli import main

FAST = ["--method", "ddv", "--method", "cka"]


@pytest.fixture
def folder(tmp_path, mnist_zoo, torch, reference):
    d = tmp_path / "models"
    d.mkdir()
    for name in ("base", "finetuned", "distilled"):
        jaxprov.save_model(mnist_zoo[name], d / name)
    jaxprov.save_model(mnist_zoo["independent"][0], d / "independent0")
    torch.manual_seed(0)
    torch.save(reference.LeNet().state_dict(), d / "untrained.pt")  # a checkpoint: converted on the fly
    (d / "broken.pt").write_bytes(b"PK\x03\x04 not really a zip")  # unreadable: skipped, listed
    (d / "notes.txt").write_text("not a model")  # not a checkpoint suffix: ignored
    return d


def test_scan_writes_reports_skips_broken_files_and_resumes(folder, tmp_path, capsys, monkeypatch):
    out = tmp_path / "scan"
    assert main(["scan", str(folder), "--out", str(out), *FAST]) == 1  # non-zero: one file was skipped
    captured = capsys.readouterr()
    assert "broken.pt" in captured.err and "truncated or corrupt" in captured.err
    report = json.loads((out / "report.json").read_text())
    assert sorted(report["labels"]) == ["base", "distilled", "finetuned", "independent0", "untrained"]
    assert set(report["methods"]) == {"ddv", "cka"}
    for name in ("similarity-ddv.csv", "heatmap-cka.png", "report.html"):
        assert (out / name).stat().st_size > 0
    base, ft = report["labels"].index("base"), report["labels"].index("finetuned")
    ind = report["labels"].index("independent0")
    ddv = report["methods"]["ddv"]["matrix"]
    assert ddv[base][ft] > ddv[base][ind]

    # A rerun finds every signature in the store and computes nothing.
    from jaxprov import engine

    def refuse(*args, **kwargs):
        raise AssertionError("the engine ran although every signature was stored")

    monkeypatch.setattr(engine, "signatures", refuse)
    assert main(["scan", str(folder), "--out", str(out), *FAST]) == 1
    assert json.loads((out / "report.json").read_text())["methods"]["ddv"]["matrix"] == ddv


def test_scan_of_an_empty_folder_and_an_unknown_method(tmp_path, folder, capsys):
    (tmp_path / "empty").mkdir()
    assert main(["scan", str(tmp_path / "empty"), "--out", str(tmp_path / "o")]) == 2
    assert "empty folder" in capsys.readouterr().err
    assert main(["scan", str(folder), "--out", str(tmp_path / "o"), "--method", "telepathy"]) == 2
    err = capsys.readouterr().err
    assert "unknown method 'telepathy'" in err and err.count("\n") == 1


def test_compare_cli_with_a_null_folder(folder, tmp_path, capsys):
    null = tmp_path / "null"
    null.mkdir()
    shutil.copytree(folder / "independent0", null / "independent0")
    assert main(["compare", str(folder / "base"), str(folder / "finetuned"), "--null", str(null),
                 "--method", "cka", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["methods"]["cka"]["null_n"] == 1 and result["verdict"] == "inconclusive"
    assert result["methods"]["cka"]["similarity"] > result["methods"]["cka"]["null_max"]


def test_scan_reports_the_default_verdict_beside_its_methods(mnist_zoo, tmp_path):
    from jaxprov import verdict
    from jaxprov.scan import scan_models

    combo = verdict.load_default()
    assert combo is not None, "jaxprov/data/verdict.json ships with the package"
    members = [mnist_zoo[n] for n in ("base", "finetuned", "pruned", "distilled")]
    null = mnist_zoo["independent"]
    config = {m: {"n_seeds": 64} for m in ("ddv", "sac", "ipguard", "cka")}
    config["gradient_field"] = {"n_seeds": 16}
    result = scan_models(members, tmp_path / "out", seeds="mnist", progress=False, method_config=config, null=null)
    (group,) = result.groups.values()
    assert list(group["similarity"]) == [*combo.active_methods, "default"]  # only what it weighs
    p = group["similarity"]["default"]
    assert np.all((p.values >= 0) & (p.values <= 1)) and np.all(np.diag(p.values) == 1)
    # Calibrated by the null models: the fine-tuned and pruned children are called derived, and the
    # distilled copy (caught by `mistakes` only) still ranks above every independent model.
    independent = [m.name for m in null]
    assert min(p["base", "finetuned"], p["base", "pruned"]) > 0.5 > max(p["base", n] for n in independent)
    assert p["base", "distilled"] > max(p["base", n] for n in independent)
    saved = json.loads((tmp_path / "out" / "report.json").read_text())
    assert saved["metadata"]["default_verdict"]["methods"] == list(combo.methods)
    assert saved["metadata"]["default_calibrated_by"] == "null models"

    # Without null models the zoo itself is the null, and the report says so.
    alone = scan_models(members, tmp_path / "alone", seeds="mnist", progress=False, method_config=config)
    assert list(alone.groups.values())[0]["similarity"]["default"].values.shape == (4, 4)
    saved = json.loads((tmp_path / "alone" / "report.json").read_text())
    assert saved["metadata"]["default_calibrated_by"] == "the zoo itself"

def test_scan_reads_reference_dependent_methods_on_each_rows_own_probes(mnist_zoo, tmp_path):
    """Row k of a reference-dependent method's matrix is every model on probes built on model k (as
    the reuse benchmark that fitted the default verdict scores pairs), not on model 0's probes: the
    parent at k != 0 of a distilled copy (which `mistakes` alone catches) is found."""
    import jax

    from jaxprov.comparison import Zoo
    from jaxprov.scan import scan_models

    independent = mnist_zoo["independent"]
    first = next(m for m in independent if m.arch != mnist_zoo["base"].arch)  # an independent first
    null = [m for m in independent if m is not first]
    members = [first, *(mnist_zoo[n] for n in ("base", "finetuned", "pruned", "distilled"))]
    config = {m: {"n_seeds": 32} for m in ("ddv", "sac", "ipguard", "cka")}
    config["ddv"]["iters"] = 5
    config["gradient_field"] = {"n_seeds": 8, "steps": 5}
    result = scan_models(members, tmp_path / "out", seeds="mnist:test", progress=False, method_config=config,
                         null=null)
    (group,) = result.groups.values()
    sims = group["similarity"]
    base = sims["mistakes"].labels.index("base")
    on_base = Zoo(members + null, seeds="mnist:test", reference=mnist_zoo["base"], key=jax.random.PRNGKey(0))
    np.testing.assert_allclose(sims["mistakes"].values[base], on_base.similarity("mistakes").values[base])
    p = sims["default"]
    lenets = [m.name for m in null if m.arch == mnist_zoo["base"].arch]
    assert min(p["base", "finetuned"], p["base", "pruned"]) > 0.9
    assert p["base", "distilled"] > 0.5 and p["base", "distilled"] > max(p["base", n] for n in lenets)
    saved = json.loads((tmp_path / "out" / "report.json").read_text())
    assert "mistakes" in saved["metadata"]["per_reference"]
    assert len(saved["metadata"]["probes"]["mistakes"]) == len(members) + len(null)


def test_scan_leaves_reference_dependent_methods_out_of_matrices_beyond_the_limit(mnist_zoo, tmp_path):
    from jaxprov.scan import scan_models

    members = [mnist_zoo[n] for n in ("base", "finetuned", "pruned")]
    with pytest.warns(UserWarning, match="ddv left out"):
        result = scan_models(members, tmp_path / "out", ["ddv", "cka"], seeds="mnist", progress=False,
                             method_config={"cka": {"n_seeds": 32}}, max_reference_models=2)
    (group,) = result.groups.values()
    assert list(group["similarity"]) == ["cka"]
    saved = json.loads((tmp_path / "out" / "report.json").read_text())
    assert "max_reference_models=2" in saved["metadata"]["methods_not_run"]["ddv"]


def test_scan_writes_no_default_probability_without_evidence(mnist_zoo, tmp_path):
    from jaxprov.scan import scan_models

    # Synthetic seeds carry no labels (mistakes cannot run), DNA has no detector here, and weights
    # cannot compare a LeNet with an MLP: those cells of the default matrix are NaN, not a
    # probability from the bias alone.
    lenet = mnist_zoo["base"]
    mlp = next(m for m in mnist_zoo["independent"] if m.arch != lenet.arch)
    result = scan_models([lenet, mnist_zoo["finetuned"], mlp], tmp_path / "out", seeds="synthetic", progress=False,
                         method_config={"dna": {"detector": str(tmp_path / "no-detector")}})
    (group,) = result.groups.values()
    assert list(group["similarity"]) == ["weights", "default"]
    p = group["similarity"]["default"]
    assert np.isnan(p[lenet.name, mlp.name]) and np.isnan(p[mlp.name, "finetuned"])
    assert not np.isnan(p[lenet.name, "finetuned"])
    saved = json.loads((tmp_path / "out" / "report.json").read_text())
    assert "labelled seeds" in saved["metadata"]["methods_not_run"]["mistakes"]
    assert "no DNA detector folder there" in saved["metadata"]["methods_not_run"]["dna"]


def test_compare_cli_exits_non_zero_without_evidence_and_names_both_answers(tmp_path, capsys, mnist_zoo):
    import jax

    base = mnist_zoo["base"]
    jaxprov.save_model(base.replace(params=jax.tree_util.tree_map(np.zeros_like, base.params), name="dead"),
                       tmp_path / "dead")
    jaxprov.save_model(base, tmp_path / "base")
    assert main(["compare", str(tmp_path / "base"), str(tmp_path / "dead"), "--json"]) == 1
    captured = capsys.readouterr()
    result = json.loads(captured.out)
    assert result["verdict"] == "inconclusive" and result["has_evidence"] is False
    assert result["answer"] == "default verdict" and result["per_method_tests"]["verdict"] == "inconclusive"
    assert "no method could compare" in captured.err and captured.err.count("\n") == 1
    assert main(["compare", str(tmp_path / "base"), str(tmp_path / "base"), "--method", "weights"]) == 0
    out = capsys.readouterr().out
    assert "per-method tests: " in out and "verdict (per-method tests)" in out and "default verdict" not in out
