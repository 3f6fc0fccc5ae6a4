"""One trial end to end on the tiny config: reports, checkpoints and resume, caching, failures."""

from __future__ import annotations

import dataclasses
import json
import math
import pickle
from collections.abc import Callable, Mapping
from pathlib import Path

import pytest
import torch

import pipelines.stage_cam as stage_cam
from pipelines.config import TrialConfig, from_flat, to_flat
from pipelines.engine import NonFiniteLossError
from pipelines.ocr_term import OCRTerm
from pipelines.reporter import ListReporter
from pipelines.trial import run_trial

EPOCH_KEYS = {"epoch", "val_miou", "val_oracle_miou", "val_oc_rate", "val_oc_rate_fg", "train_ce",
              "train_ocr", "images_per_s", "pseudo_miou", "best_val_miou"}


def _with(cfg: TrialConfig, **flat: object) -> TrialConfig:
    return from_flat({k.replace("__", "."): v for k, v in flat.items()}, base=cfg)


def test_trial_reports_every_epoch_and_checkpoints(tiny_config: TrialConfig, tmp_path: Path) -> None:
    reporter = ListReporter()
    final = run_trial(tiny_config, reporter, tmp_path)
    assert [r["epoch"] for r in reporter.reports] == [1.0, 2.0]
    for report in reporter.reports:
        assert report.keys() >= EPOCH_KEYS
        assert all(math.isfinite(v) for v in report.values())
        assert 0.0 <= report["val_miou"] <= 1.0 and 0.0 <= report["val_oracle_miou"] <= 1.0
    assert final == reporter.reports[-1]
    assert reporter.checkpoints[-1] == tmp_path / "checkpoint"
    assert (tmp_path / "checkpoint" / "state.pt").exists()
    artifacts = tmp_path / "checkpoint" / "artifacts"
    iou = json.loads((artifacts / "class_iou.json").read_text())
    assert next(iter(iou)) == "background" and len(iou) == 11
    for name in ("prior.png", "val_examples.png"):
        assert (artifacts / name).read_bytes()[:4] == b"\x89PNG"
    assert (artifacts / "prior.csv").read_text().count("\n") == 12


def test_the_test_split_is_scored_once_at_the_last_report(tiny_config: TrialConfig, tmp_path: Path) -> None:
    """Issue 10: with ``eval.test`` the last report adds the held-out split's figures; val ones stay."""
    reporter = ListReporter()
    run_trial(_with(tiny_config, eval__test=True), reporter, tmp_path)
    first, last = reporter.reports
    assert not any(key.startswith("test_") for key in first)
    assert {"test_miou", "test_oc_rate", "test_oracle_miou"} <= last.keys()
    assert 0.0 <= last["test_miou"] <= 1.0 and last["test_miou"] != last["val_miou"]
    assert (tmp_path / "checkpoint" / "artifacts" / "class_iou_test.json").is_file()


def test_the_final_protocol_runs_only_at_the_last_report(tiny_config: TrialConfig, tmp_path: Path) -> None:
    """Issue 20: ``eval.final_scales`` scores the last report also by the paper's protocol, beside the cheap
    figures; earlier reports stay cheap."""
    reporter = ListReporter()
    run_trial(_with(tiny_config, eval__final_scales="0.75,1,1.25", eval__final_flip=True), reporter, tmp_path)
    first, last = reporter.reports
    assert not any("final" in key for key in first)
    assert {"val_final_miou", "val_final_oracle_miou", "val_final_oc_rate_fg"} <= last.keys()
    assert 0.0 <= last["val_final_miou"] <= 1.0 and last["val_final_miou"] != last["val_miou"]
    assert (tmp_path / "checkpoint" / "artifacts" / "class_iou_final.json").is_file()


class _Crash(RuntimeError):
    pass


class CrashAfterFirstEpoch(ListReporter):
    """Dies right after the first epoch's report, as a killed worker would."""

    def report(self, metrics: Mapping[str, float], checkpoint_dir: Path | None = None) -> None:
        super().report(metrics, checkpoint_dir)
        raise _Crash


def test_restart_continues_where_it_stopped(tiny_config: TrialConfig, tmp_path: Path) -> None:
    straight = ListReporter()
    run_trial(tiny_config, straight, tmp_path / "straight")
    with pytest.raises(_Crash):
        run_trial(tiny_config, CrashAfterFirstEpoch(), tmp_path / "split")
    again = ListReporter()
    run_trial(tiny_config, again, tmp_path / "split")  # finds its checkpoint, runs epoch 2 only
    assert [r["epoch"] for r in again.reports] == [2.0]
    for key in ("val_miou", "train_loss", "val_oc_rate"):
        assert again.reports[0][key] == pytest.approx(straight.reports[1][key], rel=1e-6)


def test_resume_from_explicit_checkpoint(tiny_config: TrialConfig, tmp_path: Path) -> None:
    run_trial(_with(tiny_config, seg__epochs=1), ListReporter(), tmp_path / "a")
    later = ListReporter()
    run_trial(tiny_config, later, tmp_path / "b", resume_from=tmp_path / "a" / "checkpoint")
    assert [r["epoch"] for r in later.reports] == [2.0]


def test_stage1_is_cached_and_shared(tiny_config: TrialConfig, tmp_path: Path,
                                     monkeypatch: pytest.MonkeyPatch) -> None:
    run_trial(tiny_config, ListReporter(), tmp_path / "one")

    def must_not_build(*args: object) -> None:
        raise AssertionError("stage 1 was rebuilt")

    monkeypatch.setattr(stage_cam, "_build_tensor", must_not_build)
    other = _with(tiny_config, ocr__delta=1.0, ocr__selection="all", seg__epochs=1)
    run_trial(other, ListReporter(), tmp_path / "two")  # OCR settings on seg only: same stage 1


def test_stage1_key_depends_on_ocr_only_when_ocr_acts_on_cams(tiny_config: TrialConfig) -> None:
    seg_a = stage_cam.stage_key(tiny_config)
    seg_b = stage_cam.stage_key(_with(tiny_config, ocr__delta=1.0))
    cam_a = stage_cam.stage_key(_with(tiny_config, ocr__stage="cam"))
    cam_b = stage_cam.stage_key(_with(tiny_config, ocr__stage="cam", ocr__delta=1.0))
    assert seg_a == seg_b
    assert len({seg_a, cam_a, cam_b}) == 3
    assert seg_a != stage_cam.stage_key(_with(tiny_config, seed=1))


@pytest.mark.parametrize("stage", ["cam", "both"])
def test_ocr_on_the_cam_network(tiny_config: TrialConfig, tmp_path: Path, stage: str) -> None:
    cfg = _with(tiny_config, ocr__stage=stage, ocr__selection="all", seg__epochs=1)
    reporter = ListReporter()
    run_trial(cfg, reporter, tmp_path)
    assert math.isfinite(reporter.reports[-1]["pseudo_miou"])
    assert (reporter.reports[-1]["train_ocr"] > 0) == (stage == "both")


@pytest.mark.parametrize("group", ["paper", "top1", "rank_bg"])
@pytest.mark.parametrize("prior", ["posterior", "shuffled"])
def test_every_group_and_a_stateful_prior_train(tiny_config: TrialConfig, tmp_path: Path, group: str,
                                                 prior: str) -> None:
    cfg = _with(tiny_config, ocr__group=group, ocr__prior=prior, ocr__selection="all", seg__epochs=1)
    reporter = ListReporter()
    run_trial(cfg, reporter, tmp_path)
    assert reporter.reports[-1]["train_ocr"] > 0


def test_non_finite_loss_names_epoch_and_part(tiny_config: TrialConfig, tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    def nan_loss(self: OCRTerm, logits: torch.Tensor, tags: torch.Tensor, valid: object) -> torch.Tensor:
        return logits.sum() * float("nan")

    monkeypatch.setattr(OCRTerm, "__call__", nan_loss)
    with pytest.raises(NonFiniteLossError, match=r"epoch 1: the 'ocr' loss is nan") as err:
        run_trial(_with(tiny_config, ocr__selection="all"), ListReporter(), tmp_path)
    assert err.value.stage == "seg" and err.value.part == "ocr"
    again = pickle.loads(pickle.dumps(err.value))  # as Ray sends it from a worker to the driver
    assert (again.stage, again.epoch, again.part, str(again)) == ("seg", 1, "ocr", str(err.value))
    assert not (tmp_path / "checkpoint" / "state.pt").exists()


@pytest.mark.parametrize(("fault", "fails"), [("train.step[stage=seg,epoch=2]=return", True),
                                              ("train.step[stage=seg,epoch=2,seed=0]=*return", True),
                                              ("train.step[stage=seg,epoch=2,seed=7]=*return", False),
                                              ("train.step[stage=cam,epoch=2]=*return", False)])
def test_injected_fault_hits_the_named_epoch_and_seed(tiny_config: TrialConfig, tmp_path: Path,
                                                      failpoints: Callable[[str], None], fault: str,
                                                      fails: bool) -> None:
    failpoints(fault)
    reporter = ListReporter()
    if fails:
        with pytest.raises(NonFiniteLossError, match=r"epoch 2: the 'total' loss is nan"):
            run_trial(tiny_config, reporter, tmp_path)
        assert [r["epoch"] for r in reporter.reports] == [1.0]  # the first epoch went through
    else:
        run_trial(tiny_config, reporter, tmp_path)
        assert len(reporter.reports) == tiny_config.seg.epochs


def test_flat_round_trip(tiny_config: TrialConfig) -> None:
    assert from_flat(to_flat(tiny_config)) == tiny_config
    assert dataclasses.replace(tiny_config, seed=3).seed == 3
