"""Reports of a zoo comparison: CSV, JSON, heatmap PNGs and one self-contained HTML page.

What is reported is the similarity matrix of "The one idea" (DESIGN.md), one per method:

    S[i, j] = <s_i, s_j>   (unit signatures s, so S = Ŝ Ŝᵀ is the cosine of the signatures)

The page ranks each method's most similar pairs, the view the papers evaluate (ModelDiff, Li et al.
ISSTA 2021; ModelGiF, Song et al. ICCV 2023): a derived model should rank its parent above every
unrelated model. NaN entries mean "not comparable" (e.g. weight cosine across architectures): empty
in CSV, null in JSON, grey in the heatmap, absent from the rankings. Every file is written
atomically, so an interrupted report never leaves a truncated file under its final name.
"""

from __future__ import annotations

import base64
import csv
import datetime
import html
import io
import json
import re
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from jaxprov.atomic import atomic_write

MAX_TICK_LABELS = 60  # beyond this a label per row is unreadable: the axes show counts only
MAX_CELL_VALUES = 12  # write the value into each cell up to this many models


def _check(labels: Sequence[str], matrix) -> np.ndarray:
    matrix = np.asarray(matrix)
    matrix = matrix if matrix.dtype in (np.float32, np.float64) else matrix.astype(np.float64)
    if matrix.shape != (len(labels), len(labels)):
        raise ValueError(f"similarity matrix has shape {matrix.shape}, expected ({len(labels)}, {len(labels)}) "
                         "for the given labels")
    return matrix


def _as_methods(similarity) -> dict[str, np.ndarray]:
    return dict(similarity) if isinstance(similarity, Mapping) else {"similarity": similarity}


def _file_stem(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name)


def _py_float(value) -> float:
    """A Python float; float32 goes through its shortest text so JSON shows 0.9, not 0.8999999761581421."""
    return float(str(value)) if isinstance(value, np.float32) else float(value)


def top_pairs(labels: Sequence[str], matrix, k: int = 10) -> list[tuple[str, str, float]]:
    """The `k` most similar distinct pairs (i < j), best first; NaN entries are skipped."""
    matrix = _check(labels, matrix)
    n = len(labels)
    index = np.arange(n)
    upper = np.where(index.reshape(-1, 1) < index.reshape(1, -1), matrix, np.nan)
    flat = np.where(np.isnan(upper), -np.inf, upper).reshape(-1)
    valid = int(np.isfinite(flat).sum())
    k = min(k, valid)
    if k == 0:
        return []
    best = np.argpartition(-flat, k - 1)[:k]
    best = best[np.argsort(-flat[best], kind="stable")]
    return [(labels[i // n], labels[i % n], _py_float(flat[i])) for i in best]


# A spreadsheet evaluates a cell starting with one of these as a formula (OWASP "CSV injection").
FORMULA_PREFIXES = ("=", "+", "-", "@", "\t", "\r")


def csv_cell(text: str) -> str:
    """A text cell that a spreadsheet shows as text: a leading formula character gets a "'" before it.

    A CR is written as the two characters \\r: the csv module quotes only the line terminator
    ("\\n"), and a bare CR would start a new row in most readers."""
    text = "'" + text if text.startswith(FORMULA_PREFIXES) else text
    return text.replace("\r", "\\r")


def csv_text(labels: Sequence[str], matrix) -> str:
    """The labelled matrix: a header row of labels, then one row per model.

    Values are numpy's shortest text that reads back to the same number in the matrix's dtype.
    Labels (model names: file names an attacker chooses) go through `csv_cell`; the JSON report
    keeps them unchanged.
    """
    matrix = _check(labels, matrix)
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["model", *(csv_cell(label) for label in labels)])
    for label, row in zip(labels, matrix):
        writer.writerow([csv_cell(label), *("" if np.isnan(v) else str(v) for v in row)])
    return buffer.getvalue()


def heatmap_png(labels: Sequence[str], matrix, title: str = "similarity") -> bytes:
    """A labelled heatmap with a colour bar, as PNG bytes (matplotlib's Agg canvas, no pyplot state)."""
    import matplotlib
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    matrix = _check(labels, matrix)
    n = len(labels)
    finite = matrix[np.isfinite(matrix)]
    # Cosine similarities live in [-1, 1]; keep 1 as the top and 0 (or -1) as the bottom so colours
    # mean the same in every report, widening only for methods whose scores leave that range.
    low = float(finite.min()) if finite.size else 0.0
    high = float(finite.max()) if finite.size else 1.0
    vmin = 0.0 if low >= 0 else (-1.0 if low >= -1 else low)
    vmax = max(1.0, high)
    side = float(np.clip(3.0 + 0.16 * n, 5.0, 14.0))
    fig = Figure(figsize=(side + 1.2, side), dpi=110, layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    cmap = matplotlib.colormaps["viridis"].with_extremes(bad="#bbbbbb")
    image = ax.imshow(np.ma.masked_invalid(matrix), cmap=cmap, vmin=vmin, vmax=vmax, interpolation="nearest")
    fig.colorbar(image, ax=ax, shrink=0.8, label="similarity")
    # parse_math=False: names are text, not mathtext ("a$\\foo$" would end the rendering with an error).
    ax.set_title(title, parse_math=False)
    if n <= MAX_TICK_LABELS:
        size = float(np.clip(260.0 / max(n, 1), 5.0, 10.0))
        ax.set_xticks(np.arange(n), labels, rotation=90, fontsize=size, parse_math=False)
        ax.set_yticks(np.arange(n), labels, fontsize=size, parse_math=False)
    else:
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_xlabel(f"{n} models (labels omitted; see the CSV)")
        ax.set_ylabel(f"{n} models")
    if n <= MAX_CELL_VALUES:
        for (i, j), value in np.ndenumerate(matrix):
            if np.isfinite(value):
                light = (value - vmin) / (vmax - vmin) > 0.6  # viridis turns yellow: dark text there
                ax.text(j, i, f"{value:.2f}", ha="center", va="center", fontsize=8,
                        color="black" if light else "white")
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    return buffer.getvalue()


def _json_value(value):
    if isinstance(value, (np.floating, float)):
        return _py_float(value) if np.isfinite(value) else None
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.bool_):
        return bool(value)
    if isinstance(value, np.ndarray):
        return [_json_value(v) for v in value]  # elements stay numpy scalars: float32 keeps its short form
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, Mapping):
        return {str(k): _json_value(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_value(v) for v in value]
    return value


def _verdict_for(verdicts: Sequence[Mapping], method: str, a: str, b: str) -> str:
    """The verdict on pair {a, b} for `method`: a per-method one (`Comparison.to_json()["methods"]`)
    first, else one naming this method, else one naming none."""
    for v in verdicts:
        if {v.get("a"), v.get("b")} != {a, b}:
            continue
        per_method = (v.get("methods") or {}).get(method)
        if per_method and per_method.get("verdict"):
            return str(per_method["verdict"])
        if v.get("method", method) == method and v.get("verdict"):
            return str(v["verdict"])
    return ""


def _html_table(header: Sequence[str], rows: Sequence[Sequence[Any]], cls: str = "") -> str:
    head = "".join(f"<th>{html.escape(str(h))}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in row) + "</tr>" for row in rows)
    return f'<table class="{cls}"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


_STYLE = """body{font-family:system-ui,sans-serif;margin:2em;max-width:75em;color:#222}
table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:.25em .6em;text-align:left}
th{background:#f0f0f0}img{max-width:100%;height:auto}.num td:nth-child(4){text-align:right}"""


def html_page(title: str, labels: Sequence[str], methods: Mapping[str, np.ndarray], *,
              info: Mapping[str, Mapping] | None = None, verdicts: Sequence[Mapping] = (),
              metadata: Mapping | None = None, top: int = 10, images: Mapping[str, bytes] | None = None) -> str:
    """One self-contained HTML page: run info, and per method a heatmap (inline PNG) and its top pairs.

    `images` holds already rendered heatmaps by method name (write_report renders each once).
    """
    parts = [f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>",
             f"<style>{_STYLE}</style></head><body><h1>{html.escape(title)}</h1>"]
    run = {"models": len(labels), "methods": ", ".join(methods), **(metadata or {})}
    run_rows = [(k, v if isinstance(v, str) else json.dumps(_json_value(v))) for k, v in run.items()]
    parts += ["<h2>Run</h2>", _html_table(["field", "value"], run_rows, "run")]
    for name, matrix in methods.items():
        pairs = top_pairs(labels, matrix, top)
        rows = [(rank, a, b, f"{score:.4f}", _verdict_for(verdicts, name, a, b))
                for rank, (a, b, score) in enumerate(pairs, 1)]
        png = (images or {}).get(name) or heatmap_png(labels, matrix, name)
        png = base64.b64encode(png).decode("ascii")
        parts += [f"<h2>{html.escape(name)}</h2>",
                  f'<img alt="{html.escape(name)} similarity heatmap" src="data:image/png;base64,{png}">',
                  f"<h3>Top {len(pairs)} pairs</h3>",
                  _html_table(["rank", "model A", "model B", "similarity", "verdict"], rows, "pairs num")]
    if info:
        keys = list(dict.fromkeys(k for entry in info.values() for k in entry))
        parts += ["<h2>Models</h2>", _html_table(["model", *keys], [
            (label, *(_json_value(info.get(label, {}).get(k, "")) for k in keys)) for label in labels], "models")]
    parts.append("</body></html>")
    return "\n".join(parts)


def write_report(out_dir, labels: Sequence[str], similarity, *, info: Mapping[str, Mapping] | None = None,
                 verdicts: Sequence[Mapping] = (), metadata: Mapping | None = None,
                 title: str = "jaxprov similarity report", top: int = 10) -> dict[str, Path]:
    """Write every report file for one comparison.

    Args:
      out_dir: directory (created if needed).
      labels: model names, the order of the matrix rows.
      similarity: an [N, N] matrix, or {method name: [N, N] matrix}.
      info: optional per-model facts {label: {"arch": ..., "dead": ..., ...}} (JSON and an HTML table).
      verdicts: optional per-pair verdicts, dicts with "a", "b", "verdict" and optionally "method"
        (a verdict without "method" applies to every method) plus any numbers (p-value, threshold);
        `jaxprov.comparison.Comparison.to_json()` fits as is (its per-method verdicts come first).
      metadata: run facts (probes digest, seeds, versions, timings) shown on the page and kept in JSON.
      title: page title.
      top: pairs ranked per method.

    Returns:
      {"json": path, "html": path, "<method>.csv": path, "<method>.png": path, ...}.
    """
    labels = [str(label) for label in labels]
    methods = {name: _check(labels, m) for name, m in _as_methods(similarity).items()}
    if len({_file_stem(name) for name in methods}) != len(methods):
        raise ValueError(f"method names {list(methods)} collide as file names; rename one")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written: dict[str, Path] = {}
    images = {}
    for name, matrix in methods.items():
        stem = _file_stem(name)
        images[name] = heatmap_png(labels, matrix, name)
        written[f"{name}.csv"], written[f"{name}.png"] = out / f"similarity-{stem}.csv", out / f"heatmap-{stem}.png"
        atomic_write(written[f"{name}.csv"], csv_text(labels, matrix).encode())
        atomic_write(written[f"{name}.png"], images[name])
    document = {
        "title": title, "labels": labels,
        "methods": {name: {"matrix": _json_value(m), "top_pairs": [
            {"a": a, "b": b, "similarity": s} for a, b, s in top_pairs(labels, m, top)]}
            for name, m in methods.items()},
        "models": _json_value(dict(info or {})), "verdicts": _json_value(list(verdicts)),
        "metadata": {"created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
                     **_json_value(dict(metadata or {}))},
    }
    atomic_write(out / "report.json", json.dumps(document, allow_nan=False).encode())
    atomic_write(out / "report.html", html_page(title, labels, methods, info=info, verdicts=verdicts,
                                                metadata=metadata, top=top, images=images).encode())
    written["json"], written["html"] = out / "report.json", out / "report.html"
    return written
