"""Report files: CSV/JSON read back to the same matrices, the PNG is a real image, the page is self-contained."""

import base64
import csv
import io
import json
import re

import numpy as np
import pytest
from PIL import Image

from jaxprov import report


def _similarity(n, seed):
    """A cosine-similarity matrix of random unit vectors (symmetric, diagonal 1), float32."""
    v = np.random.default_rng(seed).normal(size=(n, 16))
    v /= np.linalg.norm(v, axis=1, keepdims=True)
    return (v @ v.T).astype(np.float32)


@pytest.fixture
def comparison():
    labels = [f"model-{i}" for i in range(7)] + ['odd, "name"']
    weights = _similarity(8, 1)
    weights[0, 7] = weights[7, 0] = np.nan  # not comparable (different archs)
    ddv = _similarity(8, 0)
    ddv[0, 1] = ddv[1, 0] = 0.99  # a clear parent/child pair, ranked first
    return labels, {"ddv": ddv, "weights cosine": weights}


def _read_csv(path):
    rows = list(csv.reader(path.read_text().splitlines()))
    labels = rows[0][1:]
    assert [r[0] for r in rows[1:]] == labels
    return labels, np.array([[float(c) if c else np.nan for c in r[1:]] for r in rows[1:]], np.float32)


def _png_image(data):
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    image = Image.open(io.BytesIO(data))
    image.load()
    return np.asarray(image.convert("RGB"))


def test_write_report_round_trips_every_format(tmp_path, comparison):
    labels, methods = comparison
    verdicts = [{"a": "model-1", "b": "model-0", "verdict": "derived", "method": "ddv", "p_value": 1e-4}]
    info = {label: {"arch": "mlp" if i % 2 else "lenet", "dead": False} for i, label in enumerate(labels)}
    files = report.write_report(tmp_path, labels, methods, info=info, verdicts=verdicts,
                                metadata={"probes": "abc123", "seconds": 1.5}, top=5)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(p.name for p in files.values())  # no temp files
    assert sorted(files) == sorted(["ddv.csv", "ddv.png", "weights cosine.csv", "weights cosine.png", "json", "html"])

    for name, matrix in methods.items():
        csv_labels, parsed = _read_csv(files[f"{name}.csv"])
        assert csv_labels == labels
        np.testing.assert_array_equal(parsed, matrix)  # exact, NaN in place

    document = json.loads(files["json"].read_text())
    assert document["labels"] == labels and list(document["methods"]) == list(methods)
    assert document["metadata"]["probes"] == "abc123" and "created" in document["metadata"]
    assert document["verdicts"] == verdicts and document["models"]["model-3"] == {"arch": "mlp", "dead": False}
    for name, matrix in methods.items():
        parsed = np.array([[np.nan if v is None else v for v in row] for row in document["methods"][name]["matrix"]])
        np.testing.assert_array_equal(parsed.astype(np.float32), matrix)
        # Top pairs: the 5 largest off-diagonal entries of the upper triangle, NaN excluded.
        upper = [(matrix[i, j], labels[i], labels[j]) for i in range(8) for j in range(i + 1, 8)
                 if not np.isnan(matrix[i, j])]
        expected = sorted(upper, reverse=True)[:5]
        got = document["methods"][name]["top_pairs"]
        assert [(p["a"], p["b"]) for p in got] == [(a, b) for _, a, b in expected]
        np.testing.assert_allclose([p["similarity"] for p in got], [s for s, _, _ in expected], rtol=1e-6)

    for name in methods:
        pixels = _png_image(files[f"{name}.png"].read_bytes())
        assert min(pixels.shape[:2]) >= 500 and files[f"{name}.png"].stat().st_size > 20_000
        assert len(np.unique(pixels.reshape(-1, 3), axis=0)) > 50  # a real heatmap, not a blank canvas

    page = files["html"].read_text()
    assert page.count("<table") == 4  # run info, two top-pair tables, models
    embedded = re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', page)
    assert [base64.b64decode(e) for e in embedded] == [files["ddv.png"].read_bytes(),
                                                       files["weights cosine.png"].read_bytes()]
    assert "odd, &quot;name&quot;" in page and 'odd, "name"' not in page  # labels are escaped
    ddv_pairs = page.split("<h2>ddv</h2>")[1].split("<h2>")[0]
    first = document["methods"]["ddv"]["top_pairs"][0]
    assert f"<td>1</td><td>{first['a']}</td><td>{first['b']}</td>" in ddv_pairs
    assert (first["a"], first["b"]) == ("model-0", "model-1")
    assert "<td>0.9900</td><td>derived</td>" in ddv_pairs  # the verdict matched the pair in either order
    assert "derived" not in page.split("<h2>weights cosine</h2>")[1]  # a verdict of one method stays there
    assert "abc123" in page and "src=\"http" not in page


def test_top_pairs_ranks_and_skips_nan():
    matrix = np.array([[1.0, 0.2, np.nan], [0.2, 1.0, 0.9], [np.nan, 0.9, 1.0]])
    assert report.top_pairs(["a", "b", "c"], matrix, 5) == [("b", "c", 0.9), ("a", "b", 0.2)]
    assert report.top_pairs(["a"], np.ones((1, 1)), 3) == []


def test_large_zoo_heatmap_and_shape_check(tmp_path):
    labels = [f"m{i}" for i in range(80)]  # beyond MAX_TICK_LABELS: labels are dropped, the image stays legible
    pixels = _png_image(report.heatmap_png(labels, _similarity(80, 2), "many"))
    assert 500 <= min(pixels.shape[:2]) and max(pixels.shape[:2]) <= 16 * 110
    with pytest.raises(ValueError, match="expected \\(3, 3\\)"):
        report.write_report(tmp_path, ["a", "b", "c"], np.eye(4))
    with pytest.raises(ValueError, match="collide"):
        report.write_report(tmp_path, ["a"], {"x y": np.eye(1), "x_y": np.eye(1)})


def test_verdicts_follow_their_method():
    labels = ["a", "b", "c"]
    matrix = np.array([[1.0, 0.9, 0.5], [0.9, 1.0, 0.1], [0.5, 0.1, 1.0]], np.float32)
    verdicts = [  # the shape of jaxprov.comparison.Comparison.to_json(), and a plain one for every method
        {"a": "b", "b": "a", "verdict": "derived",
         "methods": {"ddv": {"verdict": "derived"}, "sac": {"verdict": "inconclusive"}}},
        {"a": "a", "b": "c", "verdict": "independent"},
    ]
    page = report.html_page("t", labels, {"ddv": matrix, "sac": matrix}, verdicts=verdicts, top=2)
    ddv, sac = page.split("<h2>ddv</h2>")[1].split("<h2>sac</h2>")
    assert "<td>a</td><td>b</td><td>0.9000</td><td>derived</td>" in ddv
    assert "<td>a</td><td>b</td><td>0.9000</td><td>inconclusive</td>" in sac
    assert "<td>a</td><td>c</td><td>0.5000</td><td>independent</td>" in ddv and "independent" in sac
