"""The reuse benchmark's `ci` preset, run end to end: zoo, scores, default verdict, report."""

import json

from jaxprov import cli
from jaxprov.bench.presets import PRESETS, REUSE_TYPES
from jaxprov.bench.protocol import make_recipe

STRONG_REUSE = ("finetune-last", "finetune-all", "prune-20", "prune-50", "prune-80")


def test_ci_preset_has_enough_pairs_and_disjoint_splits(ci_run):
    out, doc = ci_run
    assert doc["n_pairs"]["total"] >= 40 and doc["n_pairs"]["test"] >= 20
    groups = doc["protocol"]["groups"]
    assert len(groups["val"]["bases"]) >= 2 and len(groups["test"]["bases"]) >= 2
    assert not set(groups["val"]["bases"]) & set(groups["test"]["bases"])
    # Not just the bases: no model at all is shared, and no pair crosses the groups.
    by_group = {g: {p["reference"] for p in doc["pairs"] if p["group"] == g}
                | {p["suspect"] for p in doc["pairs"] if p["group"] == g} for g in ("val", "test")}
    assert not by_group["val"] & by_group["test"]
    # Lineage: every positive's reference is a base or an independent model of its own group.
    recipe = {e["name"]: e for e in make_recipe(PRESETS["ci"])["models"]}
    for p in doc["pairs"]:
        assert recipe[p["reference"]]["group"] == recipe[p["suspect"]]["group"] == p["group"]
        if p["label"]:
            assert recipe[p["suspect"]].get("parent") == p["reference"]


def test_finetune_and_pruning_children_are_found_by_ddv_and_gradient_fields(ci_run):
    _, doc = ci_run
    for method in ("ddv", "gradient_field"):
        for reuse_type in STRONG_REUSE:
            r = doc["results"][method][reuse_type]
            assert r["auc"] >= 0.95, (method, reuse_type, r)
            assert r["n_pos"] >= 2 and r["n_neg"] >= 20


def test_default_verdict_is_fitted_on_val_and_scored_on_held_out_test(ci_run):
    out, doc = ci_run
    v = doc["verdict"]
    assert v["provenance"]["references_val"]
    assert all(r.startswith("val-") for r in v["provenance"]["references_val"])
    default = doc["results"]["default"]
    assert set(default) >= set(STRONG_REUSE) | {"overall"}
    # Fitted on other base models, it still separates every weight-preserving reuse on test.
    for reuse_type in (*STRONG_REUSE, "quantize-int8", "cast-fp16", "average-siblings"):
        assert default[reuse_type]["auc"] >= 0.95, (reuse_type, default[reuse_type])
    assert all(w >= 0 for w in v["weights"]) and any(w > 0 for w in v["weights"])
    # Every test pair has a probability; val pairs have none (the verdict never scores them).
    for p in doc["pairs"]:
        assert (p["default"] is not None) == (p["group"] == "test")


def test_report_files_exist_and_parse(ci_run):
    out, doc = ci_run
    on_disk = json.loads((out / "reuse.json").read_text())
    assert on_disk["results"] == json.loads(json.dumps(doc["results"]))
    for method in [*doc["protocol"]["methods"], "default"]:
        for reuse_type, r in on_disk["results"][method].items():
            assert {"auc", "tpr_at_1pct_fpr", "correctness", "n_pairs"} <= set(r)
            assert r["auc_ci"][0] <= r["auc"] + 1e-9 and r["auc"] <= r["auc_ci"][1] + 1e-9
    md = (out / "reuse.md").read_text()
    assert "| reuse type | n pos | default |" in md and "extract-adversarial" in md
    rocs = sorted((out / "roc").glob("*.png"))
    assert len(rocs) >= len(REUSE_TYPES) - 1
    for png in [*rocs, out / "heatmap_test.png"]:
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    saved = json.loads((out / "verdict.json").read_text())
    assert saved["methods"] == list(doc["protocol"]["methods"])


def test_bench_cli_rejects_an_unknown_preset(capsys, tmp_path):
    assert cli.main(["bench", "reuse", "--preset", "huge", "--out", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "unknown preset 'huge'" in err[0] and "ci" in err[0]
    assert not (tmp_path / "x").exists()
