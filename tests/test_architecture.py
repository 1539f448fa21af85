"""The package's rooms and the one-way import rule of docs/architecture.md, checked on the source.

Every `import` counts, including those inside functions (qwenocr imports heavy or
far-away modules lazily, and a lazy cycle is still a cycle).
"""

from __future__ import annotations

import ast
from pathlib import Path
from typing import Dict, List, Set

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "qwenocr"

# What each room may import (itself included). The foundation is the package's top-level
# modules: errors, interrupts, atomic io, the stdout guard, the console.
ALLOWED: Dict[str, Set[str]] = {
    "cli": {"cli", "scan", "store", "fit", "eval", "engines", "pages", "searchable", "layout", "foundation"},
    "scan": {"scan", "store", "fit", "engines", "pages", "searchable", "layout", "foundation"},
    "store": {"store", "fit", "foundation"},
    "fit": {"fit", "engines", "pages", "foundation"},
    "eval": {"eval", "foundation"},
    "engines": {"engines", "foundation"},
    "pages": {"pages", "layout", "foundation"},
    "searchable": {"searchable", "layout", "foundation"},
    "layout": {"layout", "foundation"},
    "foundation": {"foundation"},
}
# `python -m qwenocr` runs the CLI, and OCRmyPDF loads its engine plugin: both sit above everything.
ENTRY_POINTS = {"qwenocr.__main__", "qwenocr.ocrmypdf_plugin"}


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _modules() -> Dict[str, Path]:
    return {_module_name(path): path for path in sorted(PACKAGE.rglob("*.py"))}


def _room(module: str) -> str:
    parts = module.split(".")
    if len(parts) > 1 and (PACKAGE / parts[1]).is_dir():
        return parts[1]
    return "foundation"


def _imports(module: str, path: Path, known: Set[str]) -> Set[str]:
    """The qwenocr modules `module` imports, resolved to the modules that exist."""
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found: Set[str] = set()
    for node in ast.walk(tree):
        names: List[str] = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[: len(anchor) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            # `from pkg import name` imports pkg.name when that is a module, else pkg
            names = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base for alias in node.names]
        for name in names:
            while name and name not in known:
                name = name.rpartition(".")[0]
            if name.startswith("qwenocr") and name != module:
                found.add(name)
    return found


def _graph() -> Dict[str, Set[str]]:
    modules = _modules()
    known = set(modules)
    return {name: _imports(name, path, known) for name, path in modules.items()}


def test_the_package_has_its_rooms():
    rooms = {path.name for path in PACKAGE.iterdir() if path.is_dir() and (path / "__init__.py").is_file()}
    assert rooms == set(ALLOWED) - {"foundation"}


def test_every_module_has_a_docstring():
    missing = [name for name, path in _modules().items() if ast.get_docstring(ast.parse(path.read_text())) is None]
    assert missing == []


def test_imports_go_one_way():
    wrong = []
    for module, imported in _graph().items():
        if module in ENTRY_POINTS:
            continue
        for target in imported:
            if target in ENTRY_POINTS or _room(target) not in ALLOWED[_room(module)]:
                wrong.append(f"{module} ({_room(module)}) imports {target} ({_room(target)})")
    assert wrong == []


def test_no_import_cycles():
    graph = _graph()
    # Package __init__ modules are imported on the way to their submodules; only edges
    # written in code count, so a package that re-exports its modules is no cycle.
    cycles = _strongly_connected(graph)
    assert [sorted(c) for c in cycles] == []


def _strongly_connected(graph: Dict[str, Set[str]]) -> List[Set[str]]:
    """Tarjan's algorithm: the groups of modules that import each other (size > 1)."""
    index: Dict[str, int] = {}
    low: Dict[str, int] = {}
    stack: List[str] = []
    on_stack: Set[str] = set()
    groups: List[Set[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in graph.get(node, ()):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            group = set()
            while True:
                member = stack.pop()
                on_stack.discard(member)
                group.add(member)
                if member == node:
                    break
            if len(group) > 1:
                groups.append(group)

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return groups


@pytest.mark.parametrize(
    "graph, expected",
    [
        ({"a": {"b"}, "b": {"a"}}, [{"a", "b"}]),
        ({"a": {"b"}, "b": {"c"}, "c": set()}, []),
    ],
)
def test_the_cycle_finder_finds_cycles(graph, expected):
    assert _strongly_connected(graph) == expected
