"""The demo's tables line up for the MNIST zoo's real model names (the longest, independent0-lenet, is
18 characters), without training anything."""

from jaxprov.demo import _table
from jaxprov.training.mnist import RECIPE


def test_demo_columns_line_up_for_every_model_name():
    names = [entry["name"] for entry in RECIPE["models"]]
    rows = [["model", "truth", "jaxprov", "P(derived)", ""]]
    rows += [[name, "independent", "inconclusive", "n/a" if i % 2 else "0.975", "WRONG"]
             for i, name in enumerate(names)]
    lines = _table(rows, right_aligned=(3,)).splitlines()
    assert len(lines) == len(rows) and max(map(len, names)) == 18
    for column in (1, 2):  # left-aligned columns start at one offset on every line
        starts = {line.index(row[column], len("      ") + len(row[0])) for line, row in zip(lines, rows)}
        assert len(starts) == 1, lines
    assert len({line.index("P(derived)") + len("P(derived)") for line in lines[:1]}
               | {line.rindex(row[3]) + len(row[3]) for line, row in zip(lines[1:], rows[1:])}) == 1, lines
    assert all(line.startswith("      ") and line == line.rstrip() for line in lines)


def test_demo_prints_jaxprovs_call_beside_the_truth(mnist_zoo, tmp_path, capsys):
    """`jaxprov demo` on the suite's MNIST zoo (its folder, not a second training): per model the
    truth, jaxprov's verdict and P(derived), right/WRONG, and the summary line agreeing with them."""
    import json

    from jaxprov.demo import run

    (tmp_path / "zoo").symlink_to(mnist_zoo["root"], target_is_directory=True)
    assert run(tmp_path) == 0
    out = capsys.readouterr().out
    calls = json.loads((tmp_path / "calls.json").read_text())
    assert len(calls) == 7
    lines = out.splitlines()
    wrong = []
    for name, call in calls.items():
        (line,) = [line for line in lines if line.split()[:1] == [name] and line.rstrip().endswith(("right", "WRONG"))]
        assert call["verdict"] in ("derived", "independent", "inconclusive") and f" {call['verdict']} " in line
        assert ("n/a" if call["probability"] is None else f"{call['probability']:.3f}") in line
        right = call["verdict"] == call["truth"]
        assert line.rstrip().endswith("right" if right else "WRONG")
        wrong += [] if right else [name]
    # The fine-tuned and pruned children are called derived (docs/results.md: the demo's zoo).
    assert calls["finetuned"]["verdict"] == calls["pruned"]["verdict"] == "derived"
    summary = (f"NOT every model was called right: {', '.join(wrong)}" if wrong
               else "every model was called right (7 of 7)")
    assert summary in out
