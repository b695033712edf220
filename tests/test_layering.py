"""Imports point one way: the import graph of jaxprov/ and converters/, built from the source.

The layering table is read from docs/design.md ("Layering: imports point one way"), so the page and
the check cannot drift apart. Every `import` counts, function-level ones included; importing a
submodule does not count as importing its parent package (Python runs the parent's __init__
first, but what the module depends on is the submodule).
"""

from __future__ import annotations

import ast
import dataclasses
import fnmatch
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("jaxprov", "converters")
TORCH_ALLOWED = ("converters", "converters.*", "jaxprov.cli")  # and only inside a function
# Edges that break the layering today and are someone's open work, each naming its issue point.
# test_known_exceptions_are_still_real fails once an edge is gone, so the list only shrinks.
KNOWN_EXCEPTIONS: dict[tuple[str, str], str] = {
}


@dataclasses.dataclass(frozen=True)
class Import:
    source: str  # the importing module
    target: str  # the imported module (or "torch")
    line: int
    lazy: bool  # inside a function


def modules(root: Path = ROOT, packages=PACKAGES) -> dict[str, Path]:
    """{dotted module name: file} of every .py file of `packages` under `root`."""
    found = {}
    for package in packages:
        for path in sorted((root / package).rglob("*.py")):
            parts = list(path.relative_to(root).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            found[".".join(parts)] = path
    return found


def imports(known: dict[str, Path]) -> list[Import]:
    """Every import of every module in `known` that names a module in `known` (or torch)."""
    edges = []
    for name, path in known.items():
        is_package = path.name == "__init__.py"
        for node, lazy in _walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            else:
                base = node.module or ""
                if node.level:  # relative: from the package itself (an __init__) or the module's package
                    package = name.split(".") if is_package else name.split(".")[:-1]
                    package = package[:len(package) - (node.level - 1)]
                    base = ".".join(package + ([node.module] if node.module else []))
                # `from p import m` imports the submodule p.m when there is one, else names of p.
                targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in known else base for a in node.names]
            for target in dict.fromkeys(targets):  # `from m import a, b` is one import of m
                if target == "torch" or target.startswith("torch."):
                    edges.append(Import(name, "torch", node.lineno, lazy))
                    continue
                while target not in known and "." in target:
                    target = target.rsplit(".", 1)[0]
                if target in known and target != name:
                    edges.append(Import(name, target, node.lineno, lazy))
    return edges


def _walk(tree: ast.AST, lazy: bool = False):
    """(import node, inside a function?) for every import statement of `tree`."""
    for node in ast.iter_child_nodes(tree):
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            yield node, lazy
        yield from _walk(node, lazy or isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)))


def layers(design: Path = ROOT / "docs" / "design.md") -> list[tuple[str, list[str]]]:
    """The layering table of docs/design.md, bottom layer first: [(layer name, [module patterns])]."""
    text = design.read_text()
    start = text.index("<!-- layering-table")
    rows = []
    for line in text[start:].splitlines()[1:]:
        if not line.startswith("|"):
            if rows:
                break
            continue
        cells = [c.strip() for c in line.strip("|").split("|")]
        if cells[0] in ("layer", "") or set(cells[0]) <= {"-"}:
            continue
        rows.append((cells[0], re.findall(r"`([A-Za-z0-9_.*]+)`", cells[1])))
    return rows[::-1]


def layer_of(module: str, table: list[tuple[str, list[str]]]) -> int | None:
    """The index (0 = bottom) of the layer whose patterns match `module`; None if none does."""
    for rank, (_, patterns) in enumerate(table):
        if any(fnmatch.fnmatchcase(module, p) for p in patterns):
            return rank
    return None


def cycles(edges: list[Import]) -> list[list[str]]:
    """One cycle (a -> ... -> a) per strongly connected component of more than one module."""
    graph: dict[str, set[str]] = {}
    for e in edges:
        if e.target != "torch":
            graph.setdefault(e.source, set()).add(e.target)
            graph.setdefault(e.target, set())
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    components = []

    def connect(v):  # Tarjan's algorithm; the graph is a few hundred nodes, recursion is fine
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in sorted(graph[v]):
            if w not in index:
                connect(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                components.append(set(component))

    for v in sorted(graph):
        if v not in index:
            connect(v)
    found = []
    for component in components:
        start = min(component)
        path, seen = [start], {start}
        while True:  # walk inside the component until a module repeats
            step = min(w for w in graph[path[-1]] if w in component)
            if step in seen:
                found.append(path[path.index(step):] + [step])
                break
            path.append(step)
            seen.add(step)
    return found


def upward(edges: list[Import], table) -> list[Import]:
    """Imports whose target sits in a higher layer than their source (torch edges excluded)."""
    return [e for e in edges if e.target != "torch"
            and layer_of(e.target, table) is not None and layer_of(e.source, table) is not None
            and layer_of(e.target, table) > layer_of(e.source, table)]


def torch_violations(edges: list[Import]) -> list[Import]:
    """torch imported outside converters / the CLI, or there at module level."""
    return [e for e in edges if e.target == "torch"
            and (not e.lazy or not any(fnmatch.fnmatchcase(e.source, p) for p in TORCH_ALLOWED))]


def _describe(e: Import) -> str:
    return f"{e.source} (line {e.line}{', in a function' if e.lazy else ''}) imports {e.target}"


@pytest.fixture(scope="module")
def graph():
    known = modules()
    return known, imports(known), layers()


# -- the checks on jaxprov/ and converters/ ---------------------------------------------------


def test_every_module_has_exactly_one_layer(graph):
    known, _, table = graph
    assert len(table) >= 10, "docs/design.md's layering table was not found or is cut short"
    missing = [m for m in known if layer_of(m, table) is None]
    assert not missing, f"add these modules to the layering table in docs/design.md: {missing}"
    for module in known:
        matches = [name for name, patterns in table if any(fnmatch.fnmatchcase(module, p) for p in patterns)]
        assert len(matches) == 1, f"{module} is in several layers: {matches}"


def test_no_import_cycle(graph):
    _, edges, _ = graph
    found = cycles([e for e in edges if (e.source, e.target) not in KNOWN_EXCEPTIONS])
    assert not found, "import cycles: " + "; ".join(" -> ".join(c) for c in found)


def test_no_upward_import(graph):
    _, edges, table = graph
    bad = [e for e in upward(edges, table) if (e.source, e.target) not in KNOWN_EXCEPTIONS]
    assert not bad, "upward imports (see docs/design.md's layering):\n" + "\n".join(map(_describe, bad))


def test_torch_only_lazily_in_converters_and_the_cli(graph):
    _, edges, _ = graph
    bad = torch_violations(edges)
    assert not bad, "torch outside converters/cli or at module level:\n" + "\n".join(map(_describe, bad))


def test_known_exceptions_are_still_real(graph):
    _, edges, _ = graph
    present = {(e.source, e.target) for e in edges}
    stale = [edge for edge in KNOWN_EXCEPTIONS if edge not in present]
    assert not stale, f"these imports are gone: remove them from KNOWN_EXCEPTIONS: {stale}"


# -- the checker itself, on a package written for it -------------------------------------------


def test_the_checker_finds_cycles_upward_and_torch_imports(tmp_path):
    pkg = tmp_path / "pkg"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("from pkg import low\n")
    (pkg / "low.py").write_text("import os\n\ndef f():\n    from pkg.sub import high  # lazy, still an edge\n")
    (pkg / "sub" / "__init__.py").write_text("")
    (pkg / "sub" / "high.py").write_text("from .. import low\nimport torch.nn\n")
    (pkg / "sub" / "lazy.py").write_text("def g():\n    import torch\n    from pkg.sub.high import x\n")
    (pkg / "sub" / "names.py").write_text("from pkg.sub import high, missing_name\n")
    design = tmp_path / "design.md"
    design.write_text("<!-- layering-table -->\n| layer | modules |\n|---|---|\n"
                      "| top | `pkg`, `pkg.sub`, `pkg.sub.*` |\n| bottom | `pkg.low` |\n\nafter\n")
    known = modules(tmp_path, ("pkg",))
    assert set(known) == {"pkg", "pkg.low", "pkg.sub", "pkg.sub.high", "pkg.sub.lazy", "pkg.sub.names"}
    edges = imports(known)
    pairs = {(e.source, e.target, e.lazy) for e in edges}
    assert ("pkg.low", "pkg.sub.high", True) in pairs and ("pkg.sub.high", "pkg.low", False) in pairs
    # `from pkg.sub import high, missing_name`: the submodule, and the package for the plain name
    assert {("pkg.sub.names", "pkg.sub.high", False), ("pkg.sub.names", "pkg.sub", False)} <= pairs
    table = layers(design)
    assert [name for name, _ in table] == ["bottom", "top"]
    assert cycles(edges) == [["pkg.low", "pkg.sub.high", "pkg.low"]]
    assert [(e.source, e.target) for e in upward(edges, table)] == [("pkg.low", "pkg.sub.high")]
    assert {(e.source, e.lazy) for e in torch_violations(edges)} == {("pkg.sub.high", False), ("pkg.sub.lazy", True)}
