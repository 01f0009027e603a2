"""The house's floors: each package imports only the ones below it, and no module imports one
that imports it back (imports inside functions count too)."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
# Lowest first: a package may import itself and what is below it, never what is above.
FLOORS = ("base", "config", "workers", "tasks", "airlock")


def modules() -> dict[str, Path]:
    found = {}
    for package in FLOORS:
        for path in (ROOT / package).rglob("*.py"):
            if "migrations" in path.parts:
                continue
            parts = path.relative_to(ROOT).with_suffix("").parts
            name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
            found[name] = path
    return found


def imports_of(path: Path, known: set[str]) -> set[str]:
    """Our modules that ``path`` imports, anywhere in it (``from x import y`` counts ``x.y``
    when that is a module, else ``x``)."""
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out |= {alias.name for alias in node.names if alias.name in known}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            for alias in node.names:
                full = f"{node.module}.{alias.name}"
                if full in known:
                    out.add(full)
                elif node.module in known:
                    out.add(node.module)
    return out


GRAPH = {name: imports_of(path, set(modules())) for name, path in modules().items()}


def floor(module: str) -> int:
    return FLOORS.index(module.split(".")[0])


@pytest.mark.parametrize("module", sorted(GRAPH))
def test_a_module_imports_nothing_above_its_floor(module: str) -> None:
    above = sorted(m for m in GRAPH[module] if floor(m) > floor(module))
    assert not above, f"{module} imports from a floor above it: {above}"


def cycles() -> Iterator[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in GRAPH[v] - {v}:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(GRAPH):
        if v not in index:
            visit(v)
    yield from found


def test_no_module_imports_one_that_imports_it_back() -> None:
    assert list(cycles()) == []


def test_the_graph_is_read() -> None:
    """The test above would pass on an empty graph: it is not empty."""
    assert GRAPH["tasks.execute"] >= {"tasks.attempt", "tasks.store"}
    assert "tasks.context" in GRAPH["tasks.attempt"]
