"""Security defaults, asserted on the source and on behaviour.

- No unpickling of files a user did not produce: ``torch.load`` only with ``weights_only=True``; no
  ``pickle``/``cloudpickle``/``joblib``/``dill`` loads, no ``pandas.read_pickle``, no ``allow_pickle=True``.
- YAML is read with ``safe_load``/``safe_load_all`` only.
- Servers the project starts bind 127.0.0.1; the local Ray starts without a dashboard.
- A study's name cannot make its folder escape the storage folder.
"""

from __future__ import annotations

import argparse
import ast
import os
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("ocr", "pipelines", "study", "results", "record", "benchmarks")
SOURCES = sorted(p for pkg in PACKAGES for p in (ROOT / pkg).rglob("*.py"))
UNSAFE_MODULES = {"pickle", "cPickle", "cloudpickle", "dill", "joblib", "shelve", "marshal"}
# The one module that imports pickle: a restricted Unpickler for IRN's cls_labels.npy that refuses every
# class but numpy's array reconstructors (test_label_files_cannot_run_code checks it refuses code).
RESTRICTED_UNPICKLERS = {"pipelines/data/_labels.py"}
UNSAFE_YAML = {"load", "load_all", "unsafe_load", "unsafe_load_all", "full_load", "full_load_all"}


def _calls(path: Path) -> list[tuple[str, ast.Call]]:
    """Every call in ``path`` as (dotted name of the callee, node)."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Call):
            found.append((ast.unparse(node.func), node))
    return found


def _keyword(call: ast.Call, name: str) -> Any:
    for keyword in call.keywords:
        if keyword.arg == name:
            return ast.literal_eval(keyword.value) if isinstance(keyword.value, ast.Constant) else keyword.value
    return None


def _where(path: Path, node: ast.AST) -> str:
    return f"{path.relative_to(ROOT)}:{getattr(node, 'lineno', '?')}"


def test_the_scan_sees_the_packages() -> None:
    names = {p.relative_to(ROOT).as_posix() for p in SOURCES}
    assert {"pipelines/cache.py", "pipelines/stage_seg.py", "study/spec/_load.py", "study/runner.py",
            "record/_trial.py"} <= names


def test_torch_load_is_always_weights_only() -> None:
    loads = [(path, call) for path in SOURCES for name, call in _calls(path) if name.endswith("torch.load")]
    assert loads, "no torch.load found: the scan is broken"
    bad = [_where(path, call) for path, call in loads if _keyword(call, "weights_only") is not True]
    assert not bad, f"torch.load without weights_only=True at {bad}"


def test_nothing_unpickles() -> None:
    bad = []
    for path in SOURCES:
        tree = ast.parse(path.read_text(), str(path))
        restricted = path.relative_to(ROOT).as_posix() in RESTRICTED_UNPICKLERS
        for node in ast.walk(tree):
            if restricted:
                continue
            if isinstance(node, ast.Import):
                bad += [_where(path, node) for a in node.names if a.name.split(".")[0] in UNSAFE_MODULES]
            elif isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] in UNSAFE_MODULES:
                bad.append(_where(path, node))
        for name, call in _calls(path):
            if name.endswith(("read_pickle", "to_pickle")) or _keyword(call, "allow_pickle") is True:
                bad.append(_where(path, call))
    assert not bad, f"pickle-based loading at {bad}"


class _RunsCode:
    def __reduce__(self) -> tuple[Any, tuple[str]]:
        import os

        return (os.getenv, ("PATH",))


def test_label_files_cannot_run_code(tmp_path: Path) -> None:
    import numpy as np

    from pipelines.data import DataError
    from pipelines.data._labels import read_labels

    table = np.empty((), dtype=object)
    table[()] = {"a": _RunsCode()}
    np.save(tmp_path / "cls_labels.npy", table, allow_pickle=True)
    with pytest.raises(DataError, match=r"refers to os\.getenv"):
        read_labels(tmp_path / "cls_labels.npy", ["a"], ["x"])


def test_yaml_is_read_with_safe_load_only() -> None:
    used, bad = set(), []
    for path in SOURCES:
        for name, call in _calls(path):
            if name.startswith("yaml."):
                used.add(name)
                if name.split(".", 1)[1] in UNSAFE_YAML or _keyword(call, "Loader") is not None:
                    bad.append(_where(path, call))
    assert "yaml.safe_load" in used
    assert not bad, f"unsafe YAML loading at {bad}"


def test_no_source_binds_every_interface() -> None:
    bad = [_where(path, node) for path in SOURCES for node in ast.walk(ast.parse(path.read_text()))
           if isinstance(node, ast.Constant) and node.value in ("0.0.0.0", "::")]
    assert not bad, f"a server bound to every interface at {bad}"


def test_local_ray_is_its_own_on_loopback_without_a_dashboard(monkeypatch: pytest.MonkeyPatch,
                                                              tmp_path: Path) -> None:
    import ray
    from ray._private import ray_constants

    from study.local_ray import LOOPBACK_ENV
    from study.runner import init_ray

    for key in ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN_PATH", LOOPBACK_ENV):  # init_ray sets them: restored after
        monkeypatch.setenv(key, os.environ.get(key, ""))
        monkeypatch.delenv(key)
    monkeypatch.setattr(ray_constants, "ENABLE_RAY_CLUSTER", True)  # as Ray imported without the setting
    monkeypatch.setenv("OCR_STUDY_RAY_TOKEN_FILE", str(tmp_path / "token"))
    seen: dict[str, Any] = {}
    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    monkeypatch.setattr(ray, "init", lambda **kwargs: seen.update(kwargs, loopback=os.environ.get(LOOPBACK_ENV)))
    init_ray(None)
    assert seen.get("address") == "local"  # a new Ray, never one recorded in Ray's temp folder or RAY_ADDRESS
    assert seen.get("include_dashboard") is False
    assert seen.get("dashboard_host", "127.0.0.1") == "127.0.0.1"
    assert os.environ["RAY_AUTH_MODE"] == "token" and os.environ["RAY_AUTH_TOKEN_PATH"] == str(tmp_path / "token")
    # node address 127.0.0.1, kept as it is: every Ray server binds loopback only. Ray's processes inherit
    # the variable as it is while Ray starts; afterwards this process's environment is as it was.
    assert seen["loopback"] == "0" and LOOPBACK_ENV not in os.environ
    assert ray_constants.ENABLE_RAY_CLUSTER is False
    from ray._private.services import resolve_ip_for_localhost

    assert resolve_ip_for_localhost("127.0.0.1") == "127.0.0.1"


def test_a_cluster_study_keeps_rays_node_address(monkeypatch: pytest.MonkeyPatch) -> None:
    import ray
    from ray._private import ray_constants

    from study import runner
    from study.local_ray import LOOPBACK_ENV

    for key in ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN", LOOPBACK_ENV):
        monkeypatch.setenv(key, os.environ.get(key, ""))
        monkeypatch.delenv(key)
    monkeypatch.setenv("RAY_AUTH_TOKEN", "0" * 64)
    monkeypatch.setattr(ray_constants, "ENABLE_RAY_CLUSTER", True)
    seen: dict[str, Any] = {}
    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    monkeypatch.setattr(ray, "init", lambda **kwargs: seen.update(kwargs))
    monkeypatch.setattr(runner, "_probe", lambda address: None)
    runner.init_ray("10.0.0.5:6379")
    assert seen.get("address") == "10.0.0.5:6379"
    assert LOOPBACK_ENV not in os.environ and ray_constants.ENABLE_RAY_CLUSTER is True


@pytest.mark.slow
def test_mlflow_ui_binds_loopback(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from study.commands import ui
    from study.spec import load_spec

    spec = load_spec({"name": "ui-check", "storage": str(tmp_path)})
    (tmp_path / "ui-check").mkdir()
    (tmp_path / "ui-check" / "spec.yaml").write_text(yaml.safe_dump(spec.to_dict(), sort_keys=False))
    started: list[list[str]] = []

    def call(cmd: list[str], *args: Any, **kwargs: Any) -> int:
        started.append(cmd)
        return 0

    from study import processes

    monkeypatch.setattr(processes, "call_in_own_group", call)
    ui.ui(argparse.Namespace(name="ui-check", storage=str(tmp_path), port=5999))
    assert len(started) == 1
    cmd = started[0]
    assert cmd[cmd.index("--host") + 1] == "127.0.0.1"


@pytest.mark.parametrize("name", ["../x", "a/b", "/etc", "..", ".", "a\\b", "", "x" * 65, "~", "a b", "ä"])
def test_study_names_that_are_not_one_folder_name_are_rejected(name: str, tmp_path: Path) -> None:
    from study.spec import SpecError, load_spec

    with pytest.raises(SpecError, match="name"):
        load_spec({"name": name, "storage": str(tmp_path)})


@pytest.mark.parametrize("name", ["quick", "a.b", "...", "-x", "paper_2026-11", "x" * 64])
def test_an_accepted_study_name_keeps_the_study_folder_inside_storage(name: str, tmp_path: Path) -> None:
    from study.spec import load_spec

    storage = tmp_path / "studies"
    spec = load_spec({"name": name, "storage": str(storage)})
    folder = Path(spec.study_dir).resolve()
    assert folder.parent == storage.resolve() and folder.name == name


def test_a_study_name_from_the_command_line_cannot_leave_storage(tmp_path: Path) -> None:
    from study.handle import load_study_spec
    from study.spec import load_spec

    outside = tmp_path / "outside"
    outside.mkdir()
    spec = load_spec({"name": "outside", "storage": str(tmp_path)})
    (outside / "spec.yaml").write_text(yaml.safe_dump(spec.to_dict(), sort_keys=False))
    (tmp_path / "studies").mkdir()
    with pytest.raises((ValueError, RuntimeError)):
        load_study_spec("../outside", str(tmp_path / "studies"))


@pytest.mark.parametrize("command", ["status", "resume", "report", "export", "ui"])
def test_every_command_taking_a_study_name_refuses_one_that_leaves_storage(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], command: str) -> None:
    from study.cli import main

    (tmp_path / "studies").mkdir()
    assert main([command, "../outside", "--storage", str(tmp_path / "studies")]) == 2
    assert "name" in capsys.readouterr().err
