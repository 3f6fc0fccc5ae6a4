"""The shape of the house: which package may import what, checked on every import statement of the tree.

Imports run one way, ``study → pipelines → ocr``; ``results`` reads what studies wrote; ``storage`` (local
folders and object stores, shared by ``pipelines`` and ``study``) stands on ``record`` alone; ``record`` (the
study facts and record files every side shares) stands on the standard library alone.
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[1]
FORBIDDEN = {
    "ocr": {"ray", "mlflow", "pipelines", "study", "results", "record", "storage"},
    "pipelines": {"ray", "study", "results"},
    "results": {"ray", "torch", "torchvision", "timm", "pipelines", "study", "ocr", "storage"},
    "storage": {"ray", "torch", "mlflow", "pandas", "pipelines", "study", "results", "ocr"},
    "record": {"ray", "torch", "mlflow", "pandas", "pyarrow", "numpy", "yaml", "pipelines", "study", "results",
               "ocr", "storage"},
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
    packages = ("ocr", "pipelines", "results", "record", "storage", "study")
    users = {path.relative_to(ROOT).parts[0] for package in packages
             for path in (ROOT / package).rglob("*.py") if "ray" in imported_roots(path)}
    assert users == {"study"}


def test_the_check_sees_imports_inside_functions(tmp_path: Path) -> None:
    path = tmp_path / "m.py"
    path.write_text("def f():\n    import ray.tune\n    from torch import nn\n    __import__('mlflow')\n")
    assert imported_roots(path) == {"ray", "torch", "mlflow"}


@pytest.mark.slow
def test_loss_options_are_defined_once_and_load_without_torch() -> None:
    """Issue 11: the config validates against ocr's own tuples, and reading them does not load torch (every
    spec the CLI reads would pay for it)."""
    code = ("import sys; import pipelines.config as c, ocr.options as o; "
            "assert c.SELECTIONS is o.SELECTIONS and c.GROUPS is o.GROUPS and c.PRIORS is o.PRIOR_VARIANTS; "
            "assert c.IC_MASKINGS is o.IC_MASKINGS and c.REDUCTIONS is o.REDUCTIONS; "
            "assert 'torch' not in sys.modules, 'torch loaded'; "
            "import ocr; ocr.OCRLoss; assert 'torch' in sys.modules")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


@pytest.mark.slow
def test_a_digit_trial_loads_no_natural_image_library(tmp_path: Path) -> None:
    """Issue 23: every trial runs in a fresh Ray worker, so its imports are paid per trial. A digit-scene trial
    needs neither torchvision's augmentation (its import loads ``torch._dynamo``, ~1.7 s) nor timm or
    segmentation-models-pytorch (the natural-image networks); they load only when a disk data set or a
    ResNet network is built."""
    from tests.conftest import TINY

    code = ("import json, sys; from pathlib import Path; from pipelines.config import from_flat; "
            "from pipelines.reporter import ListReporter; from pipelines.trial import run_trial; "
            "flat = {**json.loads(sys.argv[1]), 'cache_dir': sys.argv[2]}; "
            "run_trial(from_flat(flat), ListReporter(), Path(sys.argv[2]) / 'work'); "
            "print(json.dumps(sorted({m.split('.')[0] for m in sys.modules} & "
            "{'torchvision', 'timm', 'segmentation_models_pytorch', 'torch', 'matplotlib'})))")
    done = subprocess.run([sys.executable, "-c", code, json.dumps(TINY), str(tmp_path)],
                          capture_output=True, text=True, cwd=ROOT)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout.strip().splitlines()[-1]) == ["matplotlib", "torch"]  # it ran and drew
