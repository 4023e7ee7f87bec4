"""Layering of the package, read from the source with ``ast`` (nothing is imported).

The CLI sits on top: no module under spbench/ (other than the console entry itself) and
nothing under benchmarks/ imports ``spbench.cli``. And the import graph of spbench/ has no
cycle, every import included: lazy ones inside functions and type-only ones under
``if TYPE_CHECKING:`` (a circle of annotations is still a circle of meaning).

    python tests/test_layers.py [REPO]     # rooms and arrows: modules, edges, cycles
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import networkx as nx

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "spbench"
CLI = "spbench.cli"


def module_name(path: Path, root: Path = ROOT) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imports_of(path: Path, known: set[str], root: Path = ROOT) -> set[str]:
    """spbench modules ``path`` imports, anywhere in the file (``if TYPE_CHECKING:`` included).

    ``from pkg import name`` counts as importing ``pkg.name`` when that is a module; a string
    constant that names a module counts as importing it (``importlib.import_module(NAME)``
    over a tuple of names), and a package that walks ``pkgutil.iter_modules`` imports each of
    its modules."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    own = module_name(path, root)
    package = own if path.name == "__init__.py" else own.rpartition(".")[0]
    out: set[str] = set()

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.Import):
            out.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[:len(anchor) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            for alias in node.names:
                full = f"{base}.{alias.name}"
                out.add(full if full in known else base)
        elif isinstance(node, ast.Constant) and isinstance(node.value, str):
            out.add(node.value)
        elif isinstance(node, ast.Attribute) and node.attr == "iter_modules" and path.name == "__init__.py":
            out.update(name for name in known if name.rpartition(".")[0] == own)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    return {name for name in out if name in known}


def graph(root: Path = ROOT) -> dict[str, set[str]]:
    """Module -> the spbench modules it imports, for the package under ``root``."""
    files = {module_name(p, root): p for p in (root / "spbench").rglob("*.py")}
    known = set(files)
    return {name: imports_of(path, known, root) - {name} for name, path in files.items()}


def digraph(edges: dict[str, set[str]]) -> nx.DiGraph:
    g = nx.DiGraph()
    g.add_nodes_from(edges)
    g.add_edges_from((a, b) for a, deps in edges.items() for b in deps)
    return g


def find_cycle(edges: dict[str, set[str]]) -> list[str] | None:
    """One cycle of ``edges`` as a path ``[a, b, ..., a]``, or None."""
    try:
        found = nx.find_cycle(digraph(edges))
    except nx.NetworkXNoCycle:
        return None
    return [a for a, _ in found] + [found[0][0]]


def rooms(edges: dict[str, set[str]]) -> dict[str, set[str]]:
    """The graph between rooms: ``spbench.<top-level module or subpackage>``."""
    def room(name: str) -> str:
        return ".".join(name.split(".")[:2])

    out: dict[str, set[str]] = {}
    for a, deps in edges.items():
        out.setdefault(room(a), set()).update(room(b) for b in deps if room(b) != room(a))
    return out


def summary(edges: dict[str, set[str]]) -> str:
    g = digraph(edges)
    cycles = list(nx.simple_cycles(g))
    shown = "; ".join(" -> ".join(c + c[:1]) for c in cycles[:5])
    return f"{g.number_of_nodes()} nodes, {g.number_of_edges()} edges, {len(cycles)} cycles" + (
        f" ({shown})" if shown else "")


def test_the_graph_sees_lazy_and_type_checking_imports(tmp_path: Path) -> None:
    known = {"spbench.a", "spbench.b", "spbench.c", "spbench.pkg", "spbench.pkg.d"}
    source = tmp_path / "spbench" / "x.py"
    source.parent.mkdir()
    source.write_text("from typing import TYPE_CHECKING\nimport spbench.a\n"
                      "if TYPE_CHECKING:\n    from spbench import c\n"
                      "def f():\n    from spbench.pkg import d, thing\n    from spbench import b\n")
    assert imports_of(source, known, root=tmp_path) == {"spbench.a", "spbench.b", "spbench.c", "spbench.pkg",
                                                        "spbench.pkg.d"}
    package = tmp_path / "spbench" / "pkg" / "__init__.py"
    package.parent.mkdir()
    package.write_text("import importlib, pkgutil\nfor m in pkgutil.iter_modules(__path__): pass\n"
                       "NAMES = ('spbench.c',)\n")
    assert imports_of(package, known, root=tmp_path) == {"spbench.c", "spbench.pkg.d"}
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": set()}) is None
    assert rooms({"spbench.m.x": {"spbench.m.y", "spbench.n"}, "spbench.m.y": set(), "spbench.n": {"spbench.m.x"}}) \
        == {"spbench.m": {"spbench.n"}, "spbench.n": {"spbench.m"}}


def test_nothing_imports_the_cli() -> None:
    offenders = [name for name, deps in graph().items() if CLI in deps and name != CLI]
    known = set(graph()) | {CLI}
    for path in (ROOT / "benchmarks").rglob("*.py"):
        if CLI in imports_of(path, known):
            offenders.append(str(path.relative_to(ROOT)))
    assert not offenders, f"library code imports the CLI: {offenders}"


def test_the_package_has_no_import_cycle() -> None:
    edges = graph()
    assert "spbench.measure.predict" in edges and "spbench.case" in edges["spbench.measure.predict"]
    assert "spbench.objectives" in edges["spbench.methods.base"]  # a type-only import is an edge
    cycle = find_cycle(edges)
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


if __name__ == "__main__":
    repo = Path(sys.argv[1]).resolve() if len(sys.argv) > 1 else ROOT
    modules = graph(repo)
    print(f"modules: {summary(modules)}")
    print(f"rooms:   {summary(rooms(modules))}")
