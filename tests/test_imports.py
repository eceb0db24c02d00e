"""The package's modules import each other in one direction: no circle, data below prediction.

Read from the source with `ast` (every import, including those inside functions, which run
later but still point the same way; `if TYPE_CHECKING:` blocks excluded, they never run).
Issue 13 found `data -> robustness -> predict -> data`: training-time augmentation lived
beside `evaluate --perturb`, so reading data reached into prediction.
"""

from __future__ import annotations

import ast

from .conftest import ROOT

PACKAGE = ROOT / "src" / "lorafit"


def _module_name(path) -> str:
    """src/lorafit/search/grid.py -> lorafit.search.grid; an __init__.py names its package."""
    parts = ["lorafit", *path.relative_to(PACKAGE).with_suffix("").parts]
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _imported(tree: ast.AST, module: str, is_package: bool, modules: set[str]) -> set[str]:
    """The package's modules that `module` imports, by name."""
    package = module if is_package else module.rpartition(".")[0]
    found: set[str] = set()

    def visit(node):
        if isinstance(node, ast.If) and _is_type_checking(node):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: from . import x / from .y import z
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, *([base] if base else [])])
            for alias in node.names:  # `from pkg import module` or `from module import name`
                found.add(f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    # a module's own package's __init__ is not an edge: Python runs it first, and a package
    # that gathers its modules' functions (as lorafit/__init__.py does) is no circle
    return {name for name in found if name in modules and name != module}


def import_graph() -> dict[str, set[str]]:
    files = {_module_name(p): p for p in PACKAGE.rglob("*.py")}
    modules = set(files)
    return {
        name: _imported(ast.parse(path.read_text()), name, path.name == "__init__.py", modules)
        for name, path in files.items()
    }


def _reachable(graph: dict[str, set[str]], start: str) -> set[str]:
    seen, todo = set(), [start]
    while todo:
        for dep in graph[todo.pop()]:
            if dep not in seen:
                seen.add(dep)
                todo.append(dep)
    return seen


def _cycle_through(graph: dict[str, set[str]], start: str) -> list[str]:
    """One import path start -> ... -> start, for the failure message."""
    paths, seen = [[start]], {start}
    while paths:
        path = paths.pop(0)
        for dep in sorted(graph[path[-1]]):
            if dep == start:
                return [*path, start]
            if dep not in seen:
                seen.add(dep)
                paths.append([*path, dep])
    return []


def test_the_graph_sees_lazy_imports():
    # the circle of issue 13 went through imports inside functions: the graph must see them
    graph = import_graph()
    assert "lorafit.predict" in graph["lorafit.robustness"]  # imported inside evaluate_perturbed
    assert "lorafit.data" in graph["lorafit.augment"]  # training_splits calls load_splits
    assert "lorafit.augment" not in _reachable(graph, "lorafit.data")  # the data layer is below it


def test_no_module_imports_itself_through_others():
    graph = import_graph()
    circles = [
        " -> ".join(_cycle_through(graph, m)) for m in sorted(graph) if m in _reachable(graph, m)
    ]
    assert not circles, "import circles (move the room that points back up):\n" + "\n".join(circles)


def test_data_does_not_reach_prediction():
    below = _reachable(import_graph(), "lorafit.data")
    assert below.isdisjoint(
        {
            "lorafit.predict",
            "lorafit.robustness",
            "lorafit.ensemble",
            "lorafit.train",
            "lorafit.model",
        }
    ), sorted(below)
