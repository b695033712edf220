"""benchmarks/device_suite.sh --smoke: the device suite's code end to end at a tiny size on the CPU."""

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_smoke_run_writes_every_figure_as_json(tmp_path, ci_run):
    out = tmp_path / "results"
    # The smoke zoo's 44 models are models of the ci zoo (same entries, same digests): the run loads
    # them from the ci_run fixture's zoo (a resumed zoo folder) instead of training them again.
    zoo = ci_run[0] / "zoo"
    (tmp_path / "work" / "reuse").mkdir(parents=True)
    (tmp_path / "work" / "reuse" / "zoo").symlink_to(zoo, target_is_directory=True)
    stamps = {p.parent.name: p.stat().st_mtime_ns for p in zoo.glob("*/jaxprov.json")}
    # The suite's python is this test's (the script defaults to the device image's python3).
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "XLA_FLAGS": "", "PYTHON": sys.executable}
    run = subprocess.run(["bash", str(ROOT / "benchmarks" / "device_suite.sh"), "--smoke", "--out", str(out),
                          "--work", str(tmp_path / "work")], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    suite = json.loads((out / "suite.json").read_text())
    assert suite["smoke"] and suite["platform"] == "cpu" and suite["versions"]["jax"]
    assert {name: stage["exit"] for name, stage in suite["stages"].items()} == {"engine": 0, "reuse": 0, "exits": 0}
    engine = json.loads((out / "engine.json").read_text())
    assert engine["size"] == "smoke" and "command" in engine and not any(k.endswith("_error") for k in engine)
    fields = engine["zoo_gradient_field"]
    for section in (fields["float32"], fields["bfloat16"], engine["zoo_ddv"]):
        assert section["models"] == 3 and section["arch"] == "cifar_resnet20[depth=8]"  # the device's family
    assert [row["n"] for row in engine["all_pairs"]] == [300, 300, 1000, 1000]
    reuse = json.loads((out / "reuse.json").read_text())
    assert reuse["size"] == "smoke" and reuse["preset"]["name"] == "ci-smoke"
    assert reuse["reuse"]["protocol"]["groups"]["val"]["models"] == 22
    # Every smoke model was one of the ci zoo's and was loaded: nothing in that zoo was written.
    assert {p.parent.name: p.stat().st_mtime_ns for p in zoo.glob("*/jaxprov.json")} == stamps
    assert set(reuse["reuse"]["accuracy"]) <= set(stamps)
    overall = reuse["reuse"]["results"]["default"]["overall"]
    assert 0.0 <= overall["auc"] <= 1.0 and overall["n_pos"] > 0 and overall["n_neg"] > 0
    exits = json.loads((out / "exits.json").read_text())
    assert exits["size"] == "smoke" and not exits["errors"] and list(exits["archs"]) == ["cnn_exits"]
    run_ = exits["archs"]["cnn_exits"]
    rows = {(row["suspect"], row["transport"]): row for row in run_["results"]}
    assert set(rows) == {("owner", "in-process"), ("finetuned", "in-process"), ("independent1", "in-process"),
                         ("independent2", "in-process"), ("owner", "http")}
    # In process the owner really stops where its fingerprint says (the timing itself is not asserted).
    assert rows[("owner", "in-process")]["stops_as_expected"] == 1.0
    assert len(run_["leave_one_out"]["rows"]) == 3
    assert run_["fingerprint"]["n"] == sum(run_["fingerprint"]["kept_per_exit"])


def test_unknown_argument_is_one_line_and_exit_2(tmp_path):
    run = subprocess.run(["bash", str(ROOT / "benchmarks" / "device_suite.sh"), "--fast"], cwd=tmp_path,
                         capture_output=True, text=True)
    assert run.returncode == 2
    assert run.stderr.strip().count("\n") == 0 and "unknown argument '--fast'" in run.stderr
