"""The shape of the results package, read from its import statements: no import circle among its modules, no
import hidden inside a function but the heavy libraries loaded only when used, and the test fixture kept out of
the public API."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import results

PACKAGE = Path(results.__file__).parent
# Heavy libraries a function imports when it is called, so that ``import results`` stays light: MLflow
# (collect_mlflow), Optuna (parameter importance), Matplotlib (plots). Nothing else is imported in a function.
LAZY = {"mlflow", "optuna", "matplotlib"}


def module_name(path: Path, package: Path = PACKAGE) -> str:
    """``results/_tables.py`` → ``results._tables``; ``results/__init__.py`` → ``results``."""
    parts = path.relative_to(package.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _named(node: ast.Import | ast.ImportFrom, here: str, is_package: bool, modules: set[str]) -> set[str]:
    """The modules an import statement loads, a relative one resolved against module ``here``: ``from pkg
    import _tables`` names the submodule ``pkg._tables``, ``from pkg import Table`` the package ``pkg``."""
    if isinstance(node, ast.Import):
        return {alias.name for alias in node.names}
    base = node.module or ""
    if node.level:
        parent = here.split(".") if is_package else here.split(".")[:-1]
        parent = parent[: len(parent) - (node.level - 1)]
        base = ".".join([*parent, *([base] if base else [])])
    return {f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base for alias in node.names}


def _statements(tree: ast.AST) -> list[tuple[ast.Import | ast.ImportFrom, bool]]:
    """Every import statement of ``tree`` (module level, ``if TYPE_CHECKING:``, functions) and whether it
    stands inside a function."""
    found: list[tuple[ast.Import | ast.ImportFrom, bool]] = []

    def visit(node: ast.AST, in_function: bool) -> None:
        if isinstance(node, ast.Import | ast.ImportFrom):
            found.append((node, in_function))
        inside = in_function or isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda)
        for child in ast.iter_child_nodes(node):
            visit(child, inside)

    visit(tree, False)
    return found


def import_graph(package: Path = PACKAGE) -> tuple[dict[str, set[str]], list[str]]:
    """Which module of ``package`` imports which (every import statement counts, ``TYPE_CHECKING`` and
    functions included), and each import inside a function of a module outside :data:`LAZY`."""
    paths = {module_name(p, package): p for p in sorted(package.rglob("*.py"))}
    graph: dict[str, set[str]] = {}
    hidden: set[str] = set()
    for name, path in paths.items():
        graph[name] = set()
        for node, inner in _statements(ast.parse(path.read_text(encoding="utf-8"), str(path))):
            named = _named(node, name, path.name == "__init__.py", set(paths))
            graph[name] |= {target for target in named if target in paths and target != name}
            if inner:
                hidden |= {f"{name} imports {target} inside a function" for target in named
                           if target.split(".")[0] not in LAZY}
    return graph, sorted(hidden)


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The import circles of ``graph``: its strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_no_module_of_results_is_in_an_import_circle() -> None:
    graph, _ = import_graph()
    assert graph["results._tables"] and graph["results"] >= {"results._tables", "results._report"}
    assert cycles(graph) == []


def test_results_imports_nothing_inside_a_function_but_the_heavy_libraries() -> None:
    assert import_graph()[1] == []


def _write(root: Path, files: dict[str, str]) -> Path:
    package = root / "pkg"
    package.mkdir()
    for name, text in files.items():
        (package / name).write_text(text)
    return package


def test_the_checks_see_a_circle_hidden_in_a_function_or_behind_type_checking(tmp_path: Path) -> None:
    """The shape the package had before issue 22: ``_tables`` imported ``_importance`` at the top, which
    imported ``_tables`` inside a function (and under ``TYPE_CHECKING``)."""
    package = _write(tmp_path, {
        "__init__.py": "from pkg._tables import Table\n",
        "_tables.py": "from pkg._importance import importance_table\nclass Table: ...\n",
        "_importance.py": ("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from pkg._tables import Table\n"
                           "def importance_table():\n    from pkg._tables import SYMBOLS, Table\n"
                           "    import optuna\n    from . import _stats\n    import json\n"),
        "_stats.py": "",
    })
    graph, hidden = import_graph(package)
    assert graph == {"pkg": {"pkg._tables"}, "pkg._tables": {"pkg._importance"},
                     "pkg._importance": {"pkg._tables", "pkg._stats"}, "pkg._stats": set()}
    assert cycles(graph) == [["pkg._importance", "pkg._tables"]]
    assert hidden == ["pkg._importance imports json inside a function",
                      "pkg._importance imports pkg._stats inside a function",
                      "pkg._importance imports pkg._tables inside a function"]
    assert cycles({"a": {"b"}, "b": {"c"}, "c": set()}) == []


def test_the_synthetic_study_is_a_testing_module_not_the_api() -> None:
    """Like ``numpy.testing``: importable for tests and benchmarks, not re-exported, imported by no module of
    the package."""
    from results.testing import SyntheticStudy, write_synthetic_study

    assert callable(write_synthetic_study) and SyntheticStudy().name == "synthetic"
    assert not {"SyntheticStudy", "write_synthetic_study"} & {*results.__all__, *vars(results)}
    graph, _ = import_graph()
    assert [name for name, targets in graph.items() if "results.testing" in targets] == []


@pytest.mark.parametrize(("path", "name"), [("__init__.py", "results"), ("_tables.py", "results._tables"),
                                            ("testing.py", "results.testing")])
def test_module_names(path: str, name: str) -> None:
    assert module_name(PACKAGE / path) == name
