"""benchmarks/map_bench.py --from-log: a rebuilt document is labelled with its log's own run line
(command, machine, versions, configs), never with main's defaults; a log without one is refused."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def map_bench():
    spec = importlib.util.spec_from_file_location("map_bench", ROOT / "benchmarks" / "map_bench.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _run_line(steps: int, load: float) -> str:
    record = {"command": f"python benchmarks/map_bench.py --steps {steps}",
              "machine": {"platform": "test", "cpus": 2, "device": "cpu:0", "load_at_start": load},
              "versions": {"jaxprov": "0", "jax": "0"}, "config": {"steps": steps, "batch": 128},
              "synth_config": {"n": 512, "steps": 100}}
    return "run " + json.dumps(record)


SETTING = ("mnistm->mnist source-available: authorised_before 0.905, authorised_after 0.843, "
           "unauthorised_before 0.940, unauthorised_after 0.447, st_d 0.718, density 0.994")


def test_the_config_comes_from_the_log(map_bench, tmp_path):
    log = tmp_path / "run.log"
    log.write_text("\n".join([_run_line(400, 3.0), "source mnistm: 59 s", SETTING]) + "\n")
    doc = map_bench.from_logs([str(log)])
    assert doc["config"] == {"steps": 400, "batch": 128}
    (row,) = doc["pairs"]
    assert row["command"] == "python benchmarks/map_bench.py --steps 400"
    assert row["config"]["steps"] == 400 and row["machine"]["load_at_start"] == 3.0
    assert row["settings"]["source-available"]["unauthorised_after"] == pytest.approx(0.447)


def test_a_log_without_a_run_line_is_refused(map_bench, tmp_path):
    log = tmp_path / "old.log"
    log.write_text(SETTING + "\n")
    with pytest.raises(SystemExit, match="does not record its run's config"):
        map_bench.from_logs([str(log)])
    log.write_text("run {not json\n" + SETTING + "\n")
    with pytest.raises(SystemExit, match="does not record its run's config"):
        map_bench.from_logs([str(log)])


def test_a_damaged_line_is_one_line_naming_it(map_bench, tmp_path):
    log = tmp_path / "bad.log"
    for bad in ("mnistm->mnist source-available: authorised_before x", "mnistm->mnist->syn attacks []",
                "mnistm->mnist attacks [{"):
        log.write_text(_run_line(300, 1.0) + "\n" + bad + "\n")
        with pytest.raises(SystemExit, match=r"bad.log:2: not a line map_bench prints"):
            map_bench.from_logs([str(log)])


def test_logs_of_different_configs_are_refused(map_bench, tmp_path):
    one, two = tmp_path / "one.log", tmp_path / "two.log"
    one.write_text(_run_line(300, 1.0) + "\n" + SETTING + "\n")
    two.write_text(_run_line(400, 1.0) + "\n")
    with pytest.raises(SystemExit, match="another config"):
        map_bench.from_logs([str(one), str(two)])


def test_the_provenance_record_sits_beside_the_rows(map_bench):
    doc = json.loads((ROOT / "docs" / "results" / "map.json").read_text())
    assert "provenance_measured" in doc and not any(k.startswith("_") for k in doc["provenance"])
    table = map_bench.markdown(doc).split("| suspect vs the source |")[1]
    assert [line.split(" | ")[0] for line in table.splitlines()[2:]] == [f"| {name}" for name in doc["provenance"]]


def _pair(settings: dict, command: str, **extra) -> dict:
    return {"authorised": "mnistm", "unauthorised": "mnist", "settings": settings, "config": {"steps": 600},
            "command": command, "tree": command[-3:], **extra}


def test_a_merged_pair_keeps_what_the_new_run_skipped_with_how_it_was_made(map_bench):
    old = {"pairs": [_pair({"source-available": {"st_d": 0.1}, "source-free": {"st_d": 0.2}}, "old",
                           baselines={"random": {"st_d": 0.0}}, attacks=[{"attack": "prune"}],
                           channel_granularity={"st_d": 0.3}),
                     {**_pair({}, "other"), "authorised": "syn"}]}
    new = {"pairs": [_pair({"source-available": {"st_d": 0.9}}, "new", baselines={"random": {"st_d": 0.5}},
                           attacks=[])]}
    out = map_bench.merged(old, new)
    row = next(r for r in out["pairs"] if r["authorised"] == "mnistm")
    assert row["settings"]["source-available"] == {"st_d": 0.9} and row["baselines"] == {"random": {"st_d": 0.5}}
    assert row["settings"]["source-free"] == {"st_d": 0.2, "measured_with": {"config": {"steps": 600},
                                                                             "command": "old", "tree": "old"}}
    assert row["channel_granularity"]["measured_with"]["command"] == "old"
    assert [r["authorised"] for r in out["pairs"]] == ["mnistm", "syn"]
    # a later run without source-available keeps the baselines and attacks of the mask they were measured on
    later = map_bench.merged(out, {"pairs": [_pair({"source-free": {"st_d": 0.7}}, "free")]})
    row = next(r for r in later["pairs"] if r["authorised"] == "mnistm")
    assert row["settings"]["source-free"] == {"st_d": 0.7}
    assert row["settings"]["source-available"]["measured_with"]["command"] == "new"
    assert row["baselines"] == {"random": {"st_d": 0.5}} and row["baselines_attacks_measured_with"]["command"] == "new"
    assert row["channel_granularity"]["measured_with"]["command"] == "old"
