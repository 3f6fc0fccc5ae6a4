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


@pytest.mark.parametrize(("key", "value", "words"), [
    ("seg.lr", "-1", "seg.lr = -1.0 must be in [0.0, 10.0]"),
    ("seg.batch_size", "0", "seg.batch_size = 0 must be a finite number >= 1"),
    ("seg.weight_decay", "-5", "seg.weight_decay = -5.0 must be a finite number >= 0.0"),
])
def test_bad_training_settings_exit_2_before_anything_starts(in_tmp: Path, capsys: pytest.CaptureFixture[str],
                                                             key: str, value: str, words: str) -> None:
    assert main(["train", f"{key}={value}"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("ocr-study: error:") and words in err and "Traceback" not in err
    assert main(["run", "quick", f"trial.{key}={value}", "--dry-run"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("ocr-study: error:") and words in err and "Traceback" not in err
    assert _files(in_tmp) == set()


@pytest.mark.parametrize("argv", [
    ["run", "quick", "--dry-run", "seeds=[0,1,2]", "trial.seg.epochs=3"],
    ["run", "quick", "seeds=[0,1,2]", "--dry-run", "trial.seg.epochs=3"],
    ["run", "--dry-run", "quick", "seeds=[0,1,2]", "trial.seg.epochs=3"],
])
def test_overrides_may_come_anywhere_on_the_line(in_tmp: Path, capsys: pytest.CaptureFixture[str],
                                                 argv: list[str]) -> None:
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "seeds [0, 1, 2]" in out and "3 epochs" in out
    assert _files(in_tmp) == set()


@pytest.mark.parametrize("argv", [
    ["train", "--out", "t", "seg.lr=-1"],
    ["train", "seed=1", "--out", "t", "seg.lr=-1"],
    ["pseudo-masks", "--out", "d", "seg.lr=-1"],
])
def test_trial_commands_take_overrides_after_their_options(in_tmp: Path, capsys: pytest.CaptureFixture[str],
                                                           argv: list[str]) -> None:
    assert main(argv) == 2  # the override after --out was read (and refused), not "unrecognized arguments"
    err = capsys.readouterr().err
    assert "seg.lr = -1.0 must be in" in err and "unrecognized" not in err
    assert _files(in_tmp) == set()


def test_an_unknown_option_is_still_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["run", "quick", "seeds=[0]", "--dry-rnu"])
    assert info.value.code == 2 and "unrecognized arguments: --dry-rnu" in capsys.readouterr().err


@pytest.mark.slow  # a real (tiny) trial: some 15 s
def test_train_off_a_terminal_prints_a_line_per_stage_and_report(in_tmp: Path,
                                                                 capsys: pytest.CaptureFixture[str]) -> None:
    from tests.conftest import TINY

    overrides = [f"{k}={v}" for k, v in TINY.items()]
    assert main(["train", *overrides, "seg.epochs=3", f"cache_dir={in_tmp / 'cache'}", "--out", "trial"]) == 0
    out = capsys.readouterr().out  # captured: not a terminal, as a log file is not
    lines = out.splitlines()
    assert [line.split("] ")[1] for line in lines if "] stage " in line] == ["stage cam: 3 steps",
                                                                         "stage seg: 9 steps"]
    reports = [line for line in lines if "] seg step " in line]
    assert [r.split("  epoch ")[1].split()[0] for r in reports] == ["1", "2", "3"]
    assert "seg step 9/9" in reports[-1] and "val_miou 0." in reports[-1] and "val_oc_rate_fg" in reports[-1]


def test_bar_reporter_prints_no_lines_on_a_terminal(capsys: pytest.CaptureFixture[str]) -> None:
    from study.commands.train import BarReporter

    reporter = BarReporter(lines=False)  # as on a terminal: the bar shows progress instead
    reporter.progress("seg", 1, 4)
    reporter.report({"epoch": 1.0, "val_miou": 0.5, "val_oc_rate_fg": 0.1})
    reporter.close()
    assert capsys.readouterr().out == "" and len(reporter.reports) == 1


def test_masks_source_needs_no_seg_init(in_tmp: Path, capsys: pytest.CaptureFixture[str]) -> None:
    masks = ["data.name=voc", f"data.root={in_tmp / 'nowhere'}", "stage1.source=masks", "stage1.masks_dir=/p"]
    assert main(["train", *masks, "--out", "t"]) == 2  # accepted as a config; refused for the missing data set
    err = capsys.readouterr().err
    assert "nowhere" in err and "seg.init" not in err
    assert main(["train", *masks, "seg.init=cam"]) == 2  # asked for explicitly, a CAM start is still refused
    assert "seg.init = 'cam' copies the CAM encoder" in capsys.readouterr().err
    assert _files(in_tmp) == set()


@pytest.mark.parametrize(("failed", "flag", "code"), [(0, False, 0), (3, False, 1), (3, True, 0)])
def test_failed_trials_exit_1_unless_allowed(failed: int, flag: bool, code: int,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    import argparse

    from study.commands.run import _exit_code

    assert _exit_code(failed, argparse.Namespace(allow_failures=flag)) == code
    assert ("3 trials failed" in capsys.readouterr().err) == (code == 1)
