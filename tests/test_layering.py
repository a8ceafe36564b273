"""Imports go one way, down the order docs/architecture.md gives: a module may import its own
layer and the layers below it, never one above; no two modules import each other, directly or
through others. Read from the source (ast), so lazy imports inside functions count too."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "vidcls"


def layer_order() -> list[list[str]]:
    """The layers, lowest first, as docs/architecture.md lists them (one numbered line each)."""
    text = (ROOT / "docs" / "architecture.md").read_text()
    block = text.split("<!-- layers:start -->")[1].split("<!-- layers:end -->")[0]
    return [re.findall(r"`([\w.]+)`", line) for line in block.splitlines() if re.match(r"\s*\d+\.", line)]


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def is_module(dotted: str) -> bool:
    path = PACKAGE.parent / dotted.replace(".", "/")
    return path.with_suffix(".py").exists() or path.is_dir()


def imports(path: Path) -> set[str]:
    """vidcls modules (or packages) that `path` imports, anywhere in the file."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module and node.module.startswith("vidcls"):
            submodules = {f"{node.module}.{a.name}" for a in node.names if is_module(f"{node.module}.{a.name}")}
            found.update(submodules)
            if len(submodules) < len(node.names):  # names defined in the module itself
                found.add(node.module)
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("vidcls"))
        elif isinstance(node, ast.ImportFrom) and node.level:
            raise AssertionError(f"{path}: relative import (the layering is read from absolute ones)")
    return found


def unit(module: str, layers: list[list[str]]) -> str:
    """The layer entry (a package or a top-level module) a module belongs to."""
    names = sorted((name for layer in layers for name in layer), key=len, reverse=True)
    for name in names:
        if module == name or module.startswith(name + "."):
            return name
    raise AssertionError(f"{module} is in no layer of docs/architecture.md")


def rank_of(layers: list[list[str]]) -> dict[str, int]:
    return {name: rank for rank, layer in enumerate(layers) for name in layer}


def upward_imports(layers: list[list[str]], files: dict[str, set[str]]) -> list[str]:
    rank = rank_of(layers)
    bad = []
    for module, targets in files.items():
        here = unit(module, layers)
        for target in targets:
            there = unit(target, layers)
            if there != here and rank[there] > rank[here]:
                bad.append(f"{module} imports {target} ({there} is above {here})")
            elif there != here and rank[there] == rank[here]:
                bad.append(f"{module} imports {target} (same layer: {here} and {there} must not depend on each other)")
    return bad


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one node (Tarjan)."""
    index, low, stack, on, found, counter = {}, {}, [], set(), [], [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in list(graph):
        if v not in index:
            visit(v)
    return found


@pytest.fixture(scope="module")
def files() -> dict[str, set[str]]:
    return {module_name(p): imports(p) for p in PACKAGE.rglob("*.py") if p.name != "__main__.py"}


def test_every_module_is_in_a_layer_and_no_import_goes_up(files):
    layers = layer_order()
    assert layers, "docs/architecture.md lists no layers"
    assert upward_imports(layers, files) == []


def test_no_package_or_module_cycle(files):
    layers = layer_order()
    modules = {m: {t for t in targets if t in files and t != m} for m, targets in files.items()}
    # a package's __init__ that names its submodules is not a dependency on them
    modules = {m: {t for t in ts if not t.startswith(m + ".")} for m, ts in modules.items()}
    assert cycles(modules) == []
    units = {}
    for module, targets in files.items():
        units.setdefault(unit(module, layers), set()).update(unit(t, layers) for t in targets)
    assert cycles({u: ts - {u} for u, ts in units.items()}) == []


def test_an_upward_import_is_caught():
    """The check itself: a low module importing the command line is reported."""
    layers = [["vidcls.errors"], ["vidcls.video"], ["vidcls.cli"]]
    assert upward_imports(layers, {"vidcls.video.decode": {"vidcls.cli.app"}}) == [
        "vidcls.video.decode imports vidcls.cli.app (vidcls.cli is above vidcls.video)"]
    assert cycles({"a": {"b"}, "b": {"a"}, "c": {"a"}}) == [["a", "b"]]


def test_top_level_is_small_and_modules_short():
    """At most 8 modules beside the packages, none over 450 lines (docs/architecture.md)."""
    top = sorted(p.name for p in PACKAGE.glob("*.py"))
    assert len(top) <= 8, top
    long = {str(p.relative_to(ROOT)): n for p in PACKAGE.rglob("*.py") if (n := len(p.read_text().splitlines())) > 450}
    assert long == {}
