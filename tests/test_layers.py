"""The shape of the house: which package may import what, checked on every import statement of the tree.

Imports run one way, ``study → pipelines → ocr``; ``results`` reads what studies wrote; ``record`` (the
study facts and record files both sides share) stands on the standard library alone.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[1]
FORBIDDEN = {
    "ocr": {"ray", "mlflow", "pipelines", "study", "results", "record"},
    "pipelines": {"ray", "study", "results"},
    "results": {"ray", "torch", "torchvision", "timm", "pipelines", "study", "ocr"},
    "record": {"ray", "torch", "mlflow", "pandas", "pyarrow", "numpy", "yaml", "pipelines", "study", "results",
               "ocr"},
}


def imported_roots(path: Path) -> set[str]:
    """The top-level names of every module ``path`` imports, at any depth (inside functions too)."""
    roots: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            roots.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            roots.add(node.module.split(".")[0])
        elif isinstance(node, ast.Call) and getattr(node.func, "attr", getattr(node.func, "id", "")) in (
                "import_module", "__import__") and node.args and isinstance(node.args[0], ast.Constant):
            roots.add(str(node.args[0].value).split(".")[0])
    return roots


def _offences(package: str) -> list[str]:
    found = []
    for path in sorted((ROOT / package).rglob("*.py")):
        bad = imported_roots(path) & FORBIDDEN[package]
        found += [f"{path.relative_to(ROOT)} imports {name}" for name in sorted(bad)]
    return found


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_package_imports_only_what_its_layer_allows(package: str) -> None:
    assert (ROOT / package / "__init__.py").is_file()
    assert _offences(package) == []


def test_only_study_imports_ray() -> None:
    users = {path.relative_to(ROOT).parts[0] for package in ("ocr", "pipelines", "results", "record", "study")
             for path in (ROOT / package).rglob("*.py") if "ray" in imported_roots(path)}
    assert users == {"study"}


def test_the_check_sees_imports_inside_functions(tmp_path: Path) -> None:
    path = tmp_path / "m.py"
    path.write_text("def f():\n    import ray.tune\n    from torch import nn\n    __import__('mlflow')\n")
    assert imported_roots(path) == {"ray", "torch", "mlflow"}


def test_the_loss_options_of_the_config_are_the_loss_s_own() -> None:
    """The config validates against tuples equal to ocr's (it cannot import ocr: torch would load with every
    spec the CLI reads)."""
    import ocr
    from pipelines import config

    assert config.SELECTIONS == ocr.SELECTIONS and config.GROUPS == ocr.GROUPS
    assert config.IC_MASKINGS == ocr.IC_MASKINGS and config.REDUCTIONS == ocr.REDUCTIONS
    assert config.PRIORS == ocr.PRIOR_VARIANTS
