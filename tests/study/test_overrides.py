"""``ocr-study run SPEC key=value ...``: overrides validated like the file, saved as the effective spec."""

from __future__ import annotations

from pathlib import Path

import pytest

from study.cli import main
from study.spec import SpecError, load_spec


def test_valid_overrides_change_the_spec() -> None:
    spec = load_spec("quick", ["seeds=[0,1,2]", "trial.seg.epochs=8", "confirm.seeds=[0,1,2,3,4]",
                               "scheduler.type=none", "grid.ocr.selection=[none,oc]",
                               "search.params.ocr.delta.high=4"])
    assert spec.seeds == (0, 1, 2) and spec.trial.seg.epochs == 8
    assert spec.confirm is not None and spec.confirm.seeds == (0, 1, 2, 3, 4)
    assert spec.scheduler.type == "none" and spec.scheduler.max_epochs == 8
    assert [c["ocr.selection"] for c in spec.cells] == ["none", "oc"]
    delta = spec.search.param("ocr.delta") if spec.search else None
    assert delta is not None and delta.high == 4


@pytest.mark.parametrize(("override", "path", "words"), [
    ("trial.seg.epochz=8", "trial.seg.epochz", "did you mean 'seg.epochs'"),  # unknown key
    ("bogus=1", "bogus", "unknown key"),
    ("confirm.tops=1", "confirm.tops", "unknown key"),
    ("seeds=abc", "seeds", "must be a list"),  # wrong type
    ("trial.seg.epochs=x", "trial.seg.epochs", "must be an integer"),
    ("max_concurrent=0", "max_concurrent", ">= 1"),  # out of range
    ("confirm.seeds=[-1]", "confirm.seeds[0]", "in [0, 4294967295]"),
    ("seeds", "", "not key=value"),
])
def test_bad_overrides_name_the_key(override: str, path: str, words: str) -> None:
    with pytest.raises(SpecError) as info:
        load_spec("quick", [override])
    assert info.value.path == path and words in str(info.value)


def test_cli_exits_2_and_writes_nothing(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    storage = tmp_path / "studies"
    assert main(["run", "quick", f"storage={storage}", "trial.seg.epochs=-1"]) == 2
    assert "trial.seg.epochs" in capsys.readouterr().err
    assert not storage.exists()


def test_dry_run_shows_the_overrides(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["run", "quick", "confirm.seeds=[0,1,2,3,4]", "trial.seg.epochs=3", "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "× seeds [0, 1, 2, 3, 4], 3 epochs, no early stopping" in out
