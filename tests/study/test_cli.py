"""The command line as a user meets it: exit codes, messages without tracebacks, nothing written on error."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from study.cli import main
from tests.conftest import TINY


@pytest.fixture
def in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    return tmp_path


def _files(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")}


def test_dry_run_prints_the_plan_and_writes_nothing(in_tmp: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["run", "quick", "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "trials: 5" in out and "ocr.selection=oc" in out and "ASHA" in out and "trials: 9; epochs: 27" in out
    assert _files(in_tmp) == set()


@pytest.mark.parametrize(("doc", "message"), [
    ({"name": "x", "gird": {}}, "did you mean 'grid'"),
    ({"name": "x", "grid": {"ocr.selection": []}}, "grid.ocr.selection"),
    ({"name": "x", "grid": {"ocr.selection": ["oc"]}, "trial": {"ocr.delta": 1000}}, "ocr.delta"),
    ({"name": "x", "search": {"samples": 2, "params": {"ocr.nope": {"type": "uniform", "low": 0, "high": 1}}}},
     "ocr.nope"),
    ({"name": "../escape"}, "name"),
])
def test_bad_spec_exits_2_naming_the_key(in_tmp: Path, capsys: pytest.CaptureFixture[str],
                                         doc: dict[str, object], message: str) -> None:
    (in_tmp / "bad.yaml").write_text(yaml.safe_dump(doc))
    assert main(["run", "bad.yaml", "--dry-run"]) == 2  # the dry run validates exactly as a run does
    err = capsys.readouterr().err
    assert err.startswith("ocr-study: error:") and message in err and "Traceback" not in err
    assert _files(in_tmp) == {"bad.yaml"}


def test_missing_spec_and_unknown_study(in_tmp: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (in_tmp / "bad.yaml").write_text("name: x\nseeds: [0, -1]\n")
    assert main(["run", "bad.yaml"]) == 2  # a real run, refused before Ray starts
    assert "seeds" in capsys.readouterr().err
    (in_tmp / "bad.yaml").unlink()
    assert main(["run", "nowhere.yaml"]) == 2
    assert "not found" in capsys.readouterr().err
    assert main(["status", "ghost"]) != 0
    assert "no study 'ghost'" in capsys.readouterr().err
    assert main(["resume", "ghost"]) != 0
    assert _files(in_tmp) == set()


def test_train_rejects_an_unknown_key(in_tmp: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["train", "ocr.detla=2"]) == 2
    assert "ocr.delta" in capsys.readouterr().err  # the did-you-mean
    assert _files(in_tmp) == set()


def test_train_names_the_shipped_recipes_for_an_unknown_preset(in_tmp: Path,
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["train", "preset=kazuto"]) == 2
    err = capsys.readouterr().err
    assert "preset = 'kazuto' is not a shipped recipe" in err and "deeplabv2-kazuto1011-voc12" in err
    assert _files(in_tmp) == set()


def test_train_prints_the_final_protocol_of_the_last_report(in_tmp: Path, shared_cache: Path,
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    overrides = [f"{k}={v}" for k, v in TINY.items()] + [f"cache_dir={shared_cache}", "seg.epochs=1",
                                                          "eval.final_scales=0.75,1.25"]
    assert main(["train", *overrides, "--out", str(in_tmp / "trial")]) == 0
    out = capsys.readouterr().out
    assert "last report, final protocol (scales 0.75/1.25, flip, prob fusion): val_final_miou 0." in out


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(text=st.text(max_size=200))
def test_any_text_as_a_spec_exits_0_or_2_without_a_traceback(text: str, tmp_path: Path,
                                                                capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "spec.yaml"
    path.write_text(text, encoding="utf-8", errors="surrogatepass")
    cwd = os.getcwd()
    os.chdir(tmp_path)
    try:
        code = main(["run", str(path), "--dry-run"])
    finally:
        os.chdir(cwd)
    err = capsys.readouterr().err
    assert code in (0, 2)
    assert "Traceback" not in err
    if code == 2:
        assert err.startswith("ocr-study: error:")


def test_unreachable_cluster_fails_fast_and_leaves_no_study(in_tmp: Path, capsys: pytest.CaptureFixture[str],
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RAY_AUTH_TOKEN", "a-token-for-the-cluster")  # else the missing token is named first
    (in_tmp / "spec.yaml").write_text(yaml.safe_dump({"name": "x", "storage": str(in_tmp / "studies")}))
    assert main(["run", "spec.yaml", "--address", "127.0.0.1:1"]) == 1
    assert "no Ray cluster answers at 127.0.0.1:1" in capsys.readouterr().err
    assert not (in_tmp / "studies" / "x").exists()
    assert main(["run", "spec.yaml", "--address", "nonsense"]) == 1
    assert "is not HOST:PORT" in capsys.readouterr().err
