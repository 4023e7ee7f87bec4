"""Layering of the package, read from the source with ``ast`` (nothing is imported).

The CLI sits on top: no module under spbench/ (other than the console entry itself) and
nothing under benchmarks/ imports ``spbench.cli``. And the import graph of spbench/ has no
cycle, imports inside functions (lazy ones) included; ``if TYPE_CHECKING:`` imports are left
out, since they never run.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "spbench"
CLI = "spbench.cli"


def module_name(path: Path, root: Path = ROOT) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def imports_of(path: Path, known: set[str], root: Path = ROOT) -> set[str]:
    """spbench modules ``path`` imports, anywhere in the file but under ``if TYPE_CHECKING``.

    ``from pkg import name`` counts as importing ``pkg.name`` when that is a module; a string
    constant that names a module counts as importing it (``importlib.import_module(NAME)``
    over a tuple of names), and a package that walks ``pkgutil.iter_modules`` imports each of
    its modules."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    own = module_name(path, root)
    package = own if path.name == "__init__.py" else own.rpartition(".")[0]
    out: set[str] = set()

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and _is_type_checking(node):
            for child in node.orelse:
                visit(child)
            return
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


def graph() -> dict[str, set[str]]:
    files = {module_name(p): p for p in PACKAGE.rglob("*.py")}
    known = set(files)
    return {name: imports_of(path, known) - {name} for name, path in files.items()}


def find_cycle(edges: dict[str, set[str]]) -> list[str] | None:
    """One cycle of ``edges`` as a path ``[a, b, ..., a]``, or None."""
    state: dict[str, int] = {}  # 1 on the stack, 2 done
    stack: list[str] = []

    def dfs(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(edges.get(node, ())):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state and (found := dfs(nxt)):
                return found
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(edges):
        if node not in state and (found := dfs(node)):
            return found
    return None


def test_the_graph_sees_lazy_imports_and_skips_type_checking_ones(tmp_path: Path) -> None:
    known = {"spbench.a", "spbench.b", "spbench.c", "spbench.pkg", "spbench.pkg.d"}
    source = tmp_path / "spbench" / "x.py"
    source.parent.mkdir()
    source.write_text("from typing import TYPE_CHECKING\nimport spbench.a\n"
                      "if TYPE_CHECKING:\n    from spbench import c\n"
                      "def f():\n    from spbench.pkg import d, thing\n    from spbench import b\n")
    assert imports_of(source, known, root=tmp_path) == {"spbench.a", "spbench.b", "spbench.pkg", "spbench.pkg.d"}
    package = tmp_path / "spbench" / "pkg" / "__init__.py"
    package.parent.mkdir()
    package.write_text("import importlib, pkgutil\nfor m in pkgutil.iter_modules(__path__): pass\n"
                       "NAMES = ('spbench.c',)\n")
    assert imports_of(package, known, root=tmp_path) == {"spbench.c", "spbench.pkg.d"}
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": set()}) is None


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
    cycle = find_cycle(edges)
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])
