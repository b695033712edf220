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
