"""The shipped VOC specs: the authors' settings, budgets in iterations, placeholders a user must set."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from pipelines.config import to_flat
from pipelines.presets import load_preset
from record import config_reports
from study.cli import main
from study.plan import check_placeholders, placeholders, plan, study_record
from study.spec import SpecError, load_spec, shipped_specs


def test_voc_masks_is_the_papers_protocol() -> None:
    spec = load_spec("voc-masks")
    t = spec.trial
    assert (t.model.name, t.model.head, t.model.backbone, t.stage1.source) == ("deeplab", "v2", "resnet101", "masks")
    preset, flat = load_preset("paper"), to_flat(t)
    for key in ("seg.lr", "seg.batch_size", "data.crop_size", "ocr.weight", "ocr.delta", "ocr.tau",
                "model.optimizer", "model.momentum", "model.head_lr_mult", "seg.weight_decay"):
        assert flat[key] == preset[key], key
    assert (preset["seg.lr"], preset["data.crop_size"], preset["seg.batch_size"]) == (7e-4, 321, 16)
    assert {a.key for a in spec.grid} == {"ocr.selection", "ocr.prior", "ocr.group"} and spec.search is None


@pytest.mark.parametrize("name", ["voc", "voc-masks"])
def test_planned_epochs_are_the_reports_of_the_iteration_budget(name: str) -> None:
    spec = load_spec(name)
    assert (spec.trial.seg.iterations, spec.trial.seg.report_every) == (20000, 1000)
    study = plan(spec)
    assert spec.scheduler.max_epochs == study.max_epochs == spec.trial.seg.reports == 20
    assert study_record(study)["epochs_planned"] == 20
    assert config_reports(to_flat(spec.trial)) == 20  # what the record callbacks compute per trial


def test_voc_spec_trains_both_stages_on_the_fields_networks() -> None:
    t = load_spec("voc").trial
    assert (t.stage1.source, t.model.cam_backbone, t.model.cam_output_stride) == ("cam", "resnet50", 16)
    assert (t.model.backbone, t.model.head, t.seg.init) == ("resnet101", "v2", "scratch")


def test_dry_run_lists_placeholders_and_a_real_run_exits_2_naming_them(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.chdir(tmp_path)
    assert main(["run", "voc-masks", "--dry-run"]) == 0
    out = capsys.readouterr().out
    for key in ("trial.data.root", "trial.stage1.masks_dir", "trial.model.weights"):
        assert key in out, key
    assert "iterations: 20000 per trial" in out
    assert main(["run", "voc-masks"]) == 2
    err = capsys.readouterr().err
    assert "trial.data.root" in err and "trial.stage1.masks_dir" in err and "trial.model.weights" in err
    assert not (tmp_path / ".ocr-study" / "studies" / "voc-masks").exists()  # nothing started


def test_a_spec_with_its_placeholders_set_has_none(tmp_path: Path) -> None:
    spec = load_spec("voc-masks")
    with pytest.raises(SpecError, match=r"trial\.data\.root"):
        check_placeholders(spec)
    doc = yaml.safe_load(Path(shipped_specs()["voc-masks"]).read_text())
    doc["trial"]["data"]["root"] = str(tmp_path / "voc")
    doc["trial"]["stage1"]["masks_dir"] = str(tmp_path / "pseudo")
    doc["trial"]["model"]["weights"] = str(tmp_path / "resnet101.safetensors")
    mine = tmp_path / "mine.yaml"
    mine.write_text(yaml.safe_dump(doc))
    assert placeholders(load_spec(mine)) == {}
    check_placeholders(load_spec(mine))
