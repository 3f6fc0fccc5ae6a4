"""The shipped VOC specs: the authors' settings, budgets in iterations, placeholders a user must set."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from pipelines.config import from_flat, to_flat
from pipelines.presets import load_preset
from record import config_reports
from study.cli import main
from study.plan import check_placeholders, placeholders, plan, study_record
from study.spec import SpecError, load_spec, shipped_specs


def test_voc_masks_is_the_papers_protocol_with_the_authors_recipe() -> None:
    spec = load_spec("voc-masks")
    t = spec.trial
    assert (t.model.name, t.model.head, t.model.backbone, t.stage1.source) == ("deeplab", "v1", "resnet101", "masks")
    assert t.preset == "ocr-authors-voc-aug"
    preset, flat = load_preset("ocr-authors-voc-aug"), to_flat(t)
    for key, value in preset.items():  # as the config holds it (model.freeze_bn: true -> "true")
        assert flat[key] == to_flat(from_flat({key: value}))[key], key
    assert (flat["ocr.weight"], flat["ocr.delta"], flat["ocr.tau"]) == (1.0, 6.0, 0.2)
    assert {a.key for a in spec.grid} == {"ocr.selection", "ocr.prior", "ocr.group"} and spec.search is None


def test_voc_masks_plans_the_authors_thirty_epochs() -> None:
    spec = load_spec("voc-masks")
    assert (spec.trial.seg.epochs, spec.trial.seg.iterations) == (30, 0)
    assert plan(spec).max_epochs == spec.trial.seg.reports == 30


def test_voc_trains_stage_2_with_kazuto1011s_recipe() -> None:
    t = load_spec("voc").trial
    assert t.preset == "deeplabv2-kazuto1011-voc12"
    assert (t.seg.lr, t.seg.weight_decay, t.seg.batch_size) == (2.5e-4, 5e-4, 10)
    assert (t.model.head_bias_lr_mult, t.model.head_bias_decay) == (20.0, False)


def test_a_grid_cannot_vary_the_recipe() -> None:
    doc = yaml.safe_load(Path(shipped_specs()["voc-masks"]).read_text())
    doc["grid"]["preset"] = ["ocr-authors-voc-aug", "ocr-authors-voc"]
    with pytest.raises(SpecError, match=r"preset cannot be varied by a study"):
        load_spec(doc)


@pytest.mark.parametrize("name", ["voc"])
def test_planned_epochs_are_the_reports_of_the_iteration_budget(name: str) -> None:
    spec = load_spec(name)
    assert (spec.trial.seg.iterations, spec.trial.seg.report_every) == (20000, 1000)
    study = plan(spec)
    assert spec.scheduler.max_epochs == study.max_epochs == spec.trial.seg.reports == 20
    assert study_record(study).epochs_planned == 20
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
    assert "max 30 epochs" in out  # the recipe's 30 epochs, one report each
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
