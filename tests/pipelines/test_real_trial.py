"""Whole trials on the field's networks (DeepLab-v2 and IRN's CAM network on a ResNet-18 with random
weights, 64 px crops) on a VOC tree the test writes, budgets in iterations, and resume mid-run."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
import torch

import pipelines.stage1_key as stage1_key
import pipelines.stage_cam as stage_cam
from pipelines.config import ConfigError, SegConfig, from_flat
from pipelines.reporter import ListReporter
from pipelines.stage_seg import CHECKPOINT_FILE
from pipelines.trial import run_trial
from record import config_reports, trial_reports
from study.cli import main
from tests.pipelines import trees

REAL: dict[str, Any] = {
    "threads": 1, "device": "cpu", "data.name": "voc", "data.train_split": "train", "data.workers": 0,
    "data.crop_size": 64, "cam.ink_threshold": 0.0, "cam.batch_size": 2, "cam.iterations": 2,
    "seg.batch_size": 2, "seg.iterations": 3, "seg.report_every": 2,
    "model.name": "deeplab", "model.backbone": "resnet18", "model.cam_backbone": "resnet18",
    "model.head": "v2", "model.output_stride": 8, "model.cam_output_stride": 16,
}


@pytest.fixture
def voc(tmp_path: Path) -> Path:
    return trees.write_voc(tmp_path / "data")


def _args(flat: dict[str, Any]) -> list[str]:
    return [f"{k}={v}" for k, v in flat.items()]


def _state(folder: Path) -> dict[str, Any]:
    blob: dict[str, Any] = torch.load(folder / "checkpoint" / CHECKPOINT_FILE, weights_only=True)
    return blob


def test_reports_of_a_budget_in_iterations() -> None:
    assert trial_reports(10) == 10
    assert trial_reports(10, iterations=7, report_every=2) == 4  # after 2, 4, 6 and 7
    assert trial_reports(10, iterations=7) == 1
    assert SegConfig(iterations=30000, report_every=1000).reports == 30
    assert config_reports({"seg.epochs": 5, "seg.iterations": 9, "seg.report_every": 3}) == 3
    assert config_reports({"seg.epochs": 5, "seg.iterations": 0}) == 5
    assert config_reports({}) is None
    with pytest.raises(ConfigError, match=r"seg\.report_every.*seg\.iterations"):
        SegConfig(report_every=5)
    with pytest.raises(ConfigError, match=r"exceeds seg\.iterations"):
        SegConfig(iterations=4, report_every=5)


@pytest.mark.slow
def test_train_deeplab_v2_on_a_pseudo_mask_folder(tmp_path: Path, voc: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    """``ocr-study train`` with ``stage1.source=masks``: 3 iterations, a report after 2 and after 3."""
    pseudo = trees.write_pseudo(tmp_path / "pseudo", trees.VOC_ITEMS, trees.VOC_LISTS["train"])
    flat = {**REAL, "data.root": voc, "cache_dir": tmp_path / "cache", "stage1.source": "masks",
            "stage1.masks_dir": pseudo, "seg.init": "scratch", "seg.lr": 1e-3}
    out = tmp_path / "trial"
    assert main(["train", "--out", str(out), *_args(flat)]) == 0
    printed = capsys.readouterr().out  # a line per report (not a terminal), then the metrics table
    rows = [line.split()[0] for line in printed.splitlines() if line.split() and line.split()[0].isdigit()]
    assert rows == ["1", "2"], printed
    state = _state(out)
    assert (state["epoch"], state["iteration"]) == (2, 3)
    assert any(k.startswith("head.") for k in state["model"]) and "backbone.conv1.weight" in state["model"]
    groups = state["optimizer"]["param_groups"]
    assert [g["name"] for g in groups] == ["backbone", "head"]  # SGD, 10x on the head
    assert groups[1]["initial_lr"] == pytest.approx(10 * groups[0]["initial_lr"])
    assert groups[0]["lr"] == pytest.approx(0.0)  # poly decay reached its end at iteration 3


@pytest.mark.slow
def test_cam_stage_and_ocr_in_both_stages_on_resnet_cam(tmp_path: Path, voc: Path) -> None:
    """``stage1.source=cam`` trains IRN's CAM network with OCR (``ocr.stage=both``); stage 2 starts
    from its backbone (``seg.init=cam``)."""
    cfg = from_flat({**REAL, "data.root": str(voc), "cache_dir": str(tmp_path / "cache"), "ocr.stage": "both",
                     "seg.init": "cam"})
    reporter = ListReporter()
    final = run_trial(cfg, reporter, tmp_path / "trial")
    assert [(r["epoch"], r["iteration"]) for r in reporter.reports] == [(1.0, 2.0), (2.0, 3.0)]
    assert 0.0 <= final["pseudo_miou"] <= 1.0
    assert final["train_ocr"] > 0.0
    folder = next((tmp_path / "cache" / "stage1").glob("cam-*"))
    assert stage_cam._load(folder / stage_cam.STATE_FILE).encoder  # the CAM backbone, for seg.init=cam
    other = from_flat({**REAL, "data.root": str(voc), "cache_dir": str(tmp_path / "cache"), "ocr.stage": "both",
                       "seg.init": "cam", "model.cam_output_stride": 8})
    assert stage1_key.stage_key(other) != stage1_key.stage_key(cfg)  # the CAM network's config is part of the cache key


class _StopAfterFirst(ListReporter):
    def report(self, metrics: Mapping[str, float], checkpoint_dir: Path | None = None) -> None:
        super().report(metrics, checkpoint_dir)
        raise KeyboardInterrupt("stopped after the first report")


@pytest.mark.slow
def test_resume_mid_run_continues_the_iteration_count(tmp_path: Path, voc: Path) -> None:
    pseudo = trees.write_pseudo(tmp_path / "pseudo", trees.VOC_ITEMS, trees.VOC_LISTS["train"])
    cfg = from_flat({**REAL, "data.root": str(voc), "cache_dir": str(tmp_path / "cache"),
                     "stage1.source": "masks", "stage1.masks_dir": str(pseudo), "seg.init": "scratch",
                     "seg.iterations": 5, "seg.report_every": 2})
    first = _StopAfterFirst()
    with pytest.raises(KeyboardInterrupt):
        run_trial(cfg, first, tmp_path / "trial")
    assert [r["iteration"] for r in first.reports] == [2.0]
    assert _state(tmp_path / "trial")["iteration"] == 2
    rest = ListReporter()
    run_trial(cfg, rest, tmp_path / "trial")
    assert [(r["epoch"], r["iteration"]) for r in rest.reports] == [(2.0, 4.0), (3.0, 5.0)]
    state = _state(tmp_path / "trial")
    assert state["schedule"]["last_epoch"] == 5  # the poly schedule stepped once per iteration, across runs
