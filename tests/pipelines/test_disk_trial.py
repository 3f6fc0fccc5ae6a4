"""Whole trials on tiny disk trees: pseudo-masks from a folder or from the CAM stage, eval.every."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

import pipelines.stage1_key as stage1_key
import pipelines.stage_cam as stage_cam
from pipelines.config import TrialConfig, from_flat
from pipelines.crf import crf_available
from pipelines.data import VOC_CLASSES, open_data
from pipelines.reporter import ListReporter
from pipelines.trial import run_trial
from study.cli import main
from tests.pipelines import trees

TINY_DISK: dict[str, Any] = {
    "threads": 1, "device": "cpu", "data.name": "voc", "data.train_split": "train", "data.workers": 0,
    "data.crop_size": 24, "cam.ink_threshold": 0.0, "cam.width": 4, "cam.epochs": 1, "cam.batch_size": 2,
    "seg.width": 4, "seg.epochs": 2, "seg.batch_size": 2,
}


@pytest.fixture
def voc(tmp_path: Path) -> Path:
    return trees.write_voc(tmp_path / "data")


@pytest.fixture
def pseudo(tmp_path: Path, voc: Path) -> Path:
    return trees.write_pseudo(tmp_path / "pseudo", trees.VOC_ITEMS, trees.VOC_LISTS["train"])


def _cfg(tmp_path: Path, voc: Path, **flat: Any) -> TrialConfig:
    return from_flat({**TINY_DISK, "data.root": str(voc), "cache_dir": str(tmp_path / "cache"), **flat})


def _masks(pseudo: Path) -> dict[str, Any]:
    return {"stage1.source": "masks", "stage1.masks_dir": str(pseudo)}  # seg.init: auto → scratch


@pytest.mark.slow
def test_trial_on_a_pseudo_mask_folder(tmp_path: Path, voc: Path, pseudo: Path) -> None:
    reporter = ListReporter()
    final = run_trial(_cfg(tmp_path, voc, **_masks(pseudo)), reporter, tmp_path / "trial")
    assert [r["epoch"] for r in reporter.reports] == [1.0, 2.0]
    assert all(math.isfinite(v) for v in final.values())
    assert 0.5 < final["pseudo_miou"] < 1.0  # the true masks with an uncertain band (scored as background)
    iou = json.loads((tmp_path / "trial" / "checkpoint" / "artifacts" / "class_iou.json").read_text())
    assert list(iou) == ["background", *VOC_CLASSES]
    assert (tmp_path / "trial" / "checkpoint" / "artifacts" / "val_examples.png").is_file()


def test_edited_folder_is_scored_again(tmp_path: Path, voc: Path, pseudo: Path,
                                       monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = _cfg(tmp_path, voc, **_masks(pseudo))
    calls: list[Path] = []
    real = stage_cam._score_folder

    def counting(folder: Path, data: Any) -> dict[str, float]:
        calls.append(folder)
        return real(folder, data)

    monkeypatch.setattr(stage_cam, "_score_folder", counting)
    data = open_data(cfg)
    first = stage_cam.run_cam_stage(cfg, data, ListReporter())
    assert stage_cam.run_cam_stage(cfg, data, ListReporter()).metrics == first.metrics and len(calls) == 1
    path = pseudo / "2007_000001.png"
    mask = np.array(Image.open(path))
    mask[mask != 255] = 0  # the user re-made one mask: all background now
    trees.write_mask(path, mask)
    second = stage_cam.run_cam_stage(cfg, data, ListReporter())
    assert len(calls) == 2 and second.metrics["pseudo_miou"] < first.metrics["pseudo_miou"]


@pytest.mark.slow
def test_cam_stage_writes_png_pseudo_masks_once(tmp_path: Path, voc: Path) -> None:
    cfg = _cfg(tmp_path, voc, **{"eval.every": 2, "seg.epochs": 3, "seg.init": "cam"})
    reporter = ListReporter()
    run_trial(cfg, reporter, tmp_path / "one")
    assert [r["epoch"] for r in reporter.reports] == [2.0, 3.0]  # every 2nd epoch and the last
    folder = cfg.cache_path / "stage1" / f"cam-{stage1_key.stage_key(cfg)}"
    pngs = sorted(p.stem for p in folder.glob("*.png"))
    assert pngs == sorted(trees.VOC_LISTS["train"])
    for stem in pngs:
        mask = Image.open(folder / f"{stem}.png")
        assert mask.mode == "P" and mask.size == trees.VOC_ITEMS[stem][0]  # full resolution, index PNG
        assert set(np.unique(np.array(mask)).tolist()) <= {0, *trees.VOC_ITEMS[stem][1]}  # tagged classes only
    assert 0.0 <= reporter.reports[-1]["pseudo_miou"] <= 1.0
    assert not list(folder.parent.glob(".*.tmp"))

    def must_not_build(*args: object) -> None:
        raise AssertionError("stage 1 was rebuilt")

    monkeypatch = pytest.MonkeyPatch()
    monkeypatch.setattr(stage_cam, "_build_folder", must_not_build)
    try:
        run_trial(cfg, ListReporter(), tmp_path / "two")
    finally:
        monkeypatch.undo()


@pytest.mark.slow
def test_train_command_with_a_mask_folder(tmp_path: Path, voc: Path, pseudo: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    flat = {**TINY_DISK, **_masks(pseudo), "data.root": str(voc), "cache_dir": str(tmp_path / "cache"),
            "seg.epochs": 1}
    args = ["train", *(f"{k}={v}" for k, v in flat.items()), "--out", str(tmp_path / "out")]
    assert main(args) == 0
    assert "pseudo-mask mIoU" in capsys.readouterr().out
    (pseudo / "2007_000002.png").unlink()
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "lacks the pseudo-masks of 1 of 3" in err and "2007_000002.png" in err


@pytest.mark.slow
def test_pseudo_masks_command_writes_reusable_pngs(tmp_path: Path, voc: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    flat = {**TINY_DISK, "data.root": str(voc), "cache_dir": str(tmp_path / "cache")}
    out = tmp_path / "pngs"
    assert main(["pseudo-masks", *(f"{k}={v}" for k, v in flat.items()), "--out", str(out)]) == 0
    assert f"wrote 3 pseudo-masks to {out}" in capsys.readouterr().out
    assert sorted(p.stem for p in out.glob("*.png")) == sorted(trees.VOC_LISTS["train"])
    reuse = _cfg(tmp_path, voc, **_masks(out), **{"seg.epochs": 1})
    assert run_trial(reuse, ListReporter(), tmp_path / "trial")["epoch"] == 1.0  # the folder is a valid input
    assert main(["pseudo-masks", *(f"{k}={v}" for k, v in flat.items()), "--out", str(out)]) == 2
    assert "already holds PNG files" in capsys.readouterr().err


@pytest.mark.parametrize("crf", [False, pytest.param(True, marks=pytest.mark.skipif(
    not crf_available(), reason="pydensecrf2 is not installed (pip install pydensecrf2)"))])
def test_multi_scale_flip_and_crf_are_reported_beside_raw(tmp_path: Path, voc: Path, pseudo: Path,
                                                          crf: bool) -> None:
    flat = {**_masks(pseudo), "seg.epochs": 1, "eval.scale_min": 0.75, "eval.scale_max": 1.25,
            "eval.flip": True,
            "eval.crf": crf}
    final = run_trial(_cfg(tmp_path, voc, **flat), ListReporter(), tmp_path / "trial")
    assert 0.0 <= final["val_miou"] <= 1.0
    assert ("val_miou_crf" in final) == crf and ("val_oc_rate_crf" in final) == crf
    artifacts = tmp_path / "trial" / "checkpoint" / "artifacts"
    assert (artifacts / "class_iou_crf.json").is_file() == crf
