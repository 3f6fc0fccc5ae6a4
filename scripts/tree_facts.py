"""Numbers about the tree that issue 22 asks for, measured the same way before and after a change.

Prints: lines per package and the largest modules; the import graph between the project's modules (edges,
cycles, imports made inside functions); and, per study fact, how many places outside ``record/`` spell it
as a literal instead of importing it. Usage: ``python scripts/tree_facts.py [ROOT]`` (default: the repo).
"""

from __future__ import annotations

import ast
import sys
from collections import defaultdict
from pathlib import Path

PACKAGES = ("ocr", "pipelines", "study", "results", "record", "storage")
# A fact and the string literals that spell it; a literal counts once per occurrence outside record/.
FACTS: dict[str, tuple[str, ...]] = {
    "phase words": ("search", "confirm"),
    "Tune's trial states": ("TERMINATED", "ERROR", "RUNNING", "PENDING", "PAUSED", "ABANDONED"),
    "stop reasons": ("completed", "early_stopped", "stopped", "failed", "abandoned"),
    "MLflow tag prefix": ("ocr_study.",),
    "file names": ("mlflow.db", "report", "trials.parquet", "curves.parquet", "prior.csv", ".ocr-study",
                   "study.json", "trial.json", "spec.yaml", "epochs.jsonl", "mlartifacts"),
    "'is it remote' by '://'": ("://",),
}


def modules(root: Path) -> dict[str, Path]:
    out = {}
    for package in PACKAGES:
        for path in sorted((root / package).rglob("*.py")) if (root / package).is_dir() else []:
            name = ".".join(path.relative_to(root).with_suffix("").parts)
            out[name.removesuffix(".__init__")] = path
    return out


def imports(tree: ast.AST, known: set[str]) -> tuple[set[str], int]:
    """The project modules a module imports, and how many of its imports sit inside a function."""
    found: set[str] = set()
    inner = 0
    for node in ast.walk(tree):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
        targets = {n for n in names if n in known}
        found |= targets
        if targets and isinstance(node, (ast.Import, ast.ImportFrom)):
            inner += getattr(node, "_in_function", False)
    return found, inner


def mark_functions(tree: ast.AST) -> None:
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            for child in ast.walk(node):
                child._in_function = True  # type: ignore[attr-defined]


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []
    counter = [0]

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
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in graph:
        if v not in index:
            visit(v)
    return out


def main() -> None:
    root = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).resolve().parents[1]
    mods = modules(root)
    known = set(mods)
    sizes = {name: len(path.read_text().splitlines()) for name, path in mods.items()}
    per_package: dict[str, list[int]] = defaultdict(list)
    for name, n in sizes.items():
        per_package[name.split(".")[0]].append(n)
    print("lines per package (modules, lines, largest module):")
    for package, ns in sorted(per_package.items()):
        top = max((m for m in sizes if m.split(".")[0] == package), key=lambda m: sizes[m])
        print(f"  {package:10s} {len(ns):3d} modules {sum(ns):6d} lines  largest {top} ({sizes[top]})")
    graph: dict[str, set[str]] = {}
    inner_total = 0
    literals: dict[str, int] = defaultdict(int)
    for name, path in mods.items():
        tree = ast.parse(path.read_text())
        mark_functions(tree)
        targets, inner = imports(tree, known)
        graph[name] = {t for t in targets if t != name and not name.startswith(t + ".")}
        inner_total += inner
        if name.startswith("record"):
            continue
        for node in ast.walk(tree):
            if isinstance(node, ast.Constant) and isinstance(node.value, str):
                for fact, words in FACTS.items():
                    value = node.value
                    if fact == "'is it remote' by '://'":
                        literals[fact] += value == "://"
                    elif fact == "file names":
                        literals[fact] += any(value == w or value.endswith("/" + w) for w in words)
                    else:
                        literals[fact] += value in words
    edges = sum(len(v) for v in graph.values())
    print(f"import graph: {len(graph)} modules, {edges} edges, {inner_total} imports inside functions")
    found = cycles(graph)
    print(f"import cycles: {len(found)}" + "".join(f"\n  {' <-> '.join(c)}" for c in found))
    print("literals spelling a study fact outside record/:")
    for fact in FACTS:
        print(f"  {fact:28s} {literals[fact]}")


if __name__ == "__main__":
    main()
