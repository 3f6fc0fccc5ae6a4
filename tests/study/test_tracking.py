"""The MLflow view of a study, driven by fake Tune trials against a SQLite store: run names, params that
apply, early-stopped runs marked, per-class IoU metrics, and the parent run carrying the study."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from pipelines.config import from_flat
from study.tracking import (
    EXPERIMENT_KIND,
    MLflowTracking,
    cell_label,
    log_report,
    param_text,
    run_name,
    runs_url,
    trial_params,
)

BASE = {"seg.epochs": 4, "ocr.delta": 6.0, "ocr.tau": 0.2, "ocr.prior": "cooc_minmax", "lr": 0.0123456789}
SPEC = {"name": "unit", "grid": {"ocr.selection": ["none", "oc"]},
        "search": {"params": {"ocr.delta": {}, "ocr.tau": {}}, "sampler": "tpe", "samples": 2},
        "seeds": [0, 1], "scheduler": {"type": "asha", "metric": "val_miou", "mode": "max", "max_epochs": None}}


@dataclass
class FakeCheckpoint:
    path: str
    filesystem: Any = None


@dataclass
class FakeTrial:
    trial_id: str
    config: dict[str, Any]
    status: str = "RUNNING"
    last_result: dict[str, Any] = field(default_factory=dict)
    checkpoint: FakeCheckpoint | None = None
    error_file: str | None = None


def _config(selection: str, seed: int, values: dict[str, Any] | None = None,
            phase: str | None = "search") -> dict[str, Any]:
    meta = {"meta.cell": f"ocr.selection={selection}", "meta.setting": 0}
    if phase:
        meta["meta.phase"] = phase
    return {**BASE, "ocr.selection": selection, "seed": seed, **(values or {}), **meta}


def test_run_names_say_cell_values_seed_and_phase() -> None:
    sampled = _config("oc", 1, {"ocr.delta": 7.7123, "ocr.tau": 0.0612})
    assert run_name(sampled) == "oc · δ 7.7 · τ 0.061 · s1 · search"
    assert run_name(_config("none", 0, phase=None)) == "none · s0"  # δ and τ do not apply without OCR
    assert cell_label("ocr.selection=oc,ocr.prior=uniform") == "oc · uniform"
    assert cell_label("base") == "base"


def test_params_apply_and_are_rounded() -> None:
    baseline = trial_params(_config("none", 0))
    assert "ocr.delta" not in baseline and "ocr.tau" not in baseline and "meta.cell" not in baseline
    assert baseline["lr"] == "0.01235" and baseline["ocr.selection"] == "none"
    assert trial_params(_config("oc", 0))["ocr.delta"] == "6"
    assert param_text(0.1 + 0.2) == "0.3"


def _epoch(tracking: MLflowTracking, trial: FakeTrial, epoch: int, miou: float, folder: Path) -> None:
    trial.last_result = {"epoch": epoch, "val_miou": miou, "best_val_miou": miou, "train_loss": 1.0 / epoch}
    tracking.on_trial_result(epoch, [], trial, trial.last_result)
    artifacts = folder / trial.trial_id / "artifacts"
    artifacts.mkdir(parents=True, exist_ok=True)
    (artifacts / "class_iou.json").write_text(json.dumps({"background": 0.9, "one": miou, "two": None}))
    (artifacts / "val_examples.png").write_bytes(b"png")
    trial.checkpoint = FakeCheckpoint(str(folder / trial.trial_id))
    tracking.on_checkpoint(epoch, [], trial, trial.checkpoint)


def track_fake_study(uri: str, name: str, artifacts: Path, spec: dict[str, Any]) -> MLflowTracking:
    """A study of three fake trials mirrored into ``uri``: a baseline, an OCR run, one ASHA stops at epoch 1."""
    tracking = MLflowTracking(uri, name, name, "abc123", artifacts.as_uri(), "asha", None, spec, rungs=(1, 2))
    trials = [FakeTrial("t0", _config("none", 0)),
              FakeTrial("t1", _config("oc", 1, {"ocr.delta": 7.7, "ocr.tau": 0.06})),
              FakeTrial("t2", _config("oc", 0, {"ocr.delta": 2.0}))]
    for trial, epochs in zip(trials, (4, 4, 1), strict=True):
        tracking.on_trial_start(0, trials, trial)
        for epoch in range(1, epochs + 1):
            _epoch(tracking, trial, epoch, 0.1 * epoch + 0.01 * int(trial.trial_id[1]), artifacts.parent / "ckpt")
        trial.status = "TERMINATED"
        tracking.on_trial_complete(0, trials, trial)
    tracking.on_experiment_end(trials)
    return tracking


@pytest.fixture
def tracked(tmp_path: Path) -> MLflowTracking:
    return track_fake_study(f"sqlite:///{tmp_path / 'mlflow.db'}", "unit", tmp_path / "art", SPEC)


@pytest.mark.slow
def test_runs_show_what_they_are(tracked: MLflowTracking) -> None:
    tracking = tracked
    client = tracking.client
    experiment = client.get_experiment_by_name("unit")
    assert experiment.tags[EXPERIMENT_KIND[0]] == EXPERIMENT_KIND[1]
    runs = {r.data.tags["ocr_study.trial_id"]: r for r in client.search_runs([experiment.experiment_id])
            if "ocr_study.trial_id" in r.data.tags}
    assert runs["t0"].info.run_name == "none · s0 · search"
    assert "ocr.delta" not in runs["t0"].data.params and runs["t1"].data.params["ocr.tau"] == "0.06"
    assert json.loads(runs["t0"].data.tags["ocr_study.config"])["lr"] == 0.0123456789  # exact, for rebuilds
    assert runs["t0"].info.status == "FINISHED" and runs["t0"].data.tags["ocr_study.completed"] == "true"
    stopped = runs["t2"]
    assert stopped.info.status == "KILLED" and stopped.data.tags["ocr_study.completed"] == "false"
    assert stopped.info.run_name.endswith("· stopped e1")
    # the record's words (record.StopReason), and the epoch it stopped at
    assert (stopped.data.tags["ocr_study.stop_reason"], stopped.data.tags["ocr_study.stop_epoch"]) == (
        "early_stopped", "1")
    assert "ocr_study.stop_epoch" not in runs["t0"].data.tags
    assert stopped.data.metrics["iou/one"] == pytest.approx(0.12) and "iou/two" not in stopped.data.metrics
    history = client.get_metric_history(runs["t1"].info.run_id, "iou/one")
    assert [m.step for m in history] == [1, 2, 3, 4]
    artifacts = {a.path for a in client.list_artifacts(stopped.info.run_id)}
    assert "val_examples.png" in artifacts  # an ASHA-stopped run gets its examples too
    assert all(r.data.tags["mlflow.parentRunId"] == tracking.parent_run_id for r in runs.values())


@pytest.mark.slow
def test_parent_run_carries_the_study(tracked: MLflowTracking, tmp_path: Path) -> None:
    tracking = tracked
    client = tracking.client
    parent = client.get_run(tracking.parent_run_id)
    assert parent.info.status == "FINISHED"
    assert parent.data.params["scheduler.type"] == "asha" and parent.data.params["seeds"] == "[0, 1]"
    assert "grid: ocr.selection ∈ {none, oc}" in parent.data.tags["mlflow.note.content"]
    assert {a.path for a in client.list_artifacts(tracking.parent_run_id)} == {"spec.yaml"}
    metrics = parent.data.metrics
    assert metrics["none/val_miou_mean"] == pytest.approx(0.4)
    assert metrics["oc/completed"] == 1.0 and metrics["oc/val_miou_mean"] == pytest.approx(0.41)  # t2 stopped
    report = tmp_path / "report"
    report.mkdir()
    (report / "report.html").write_text("<html></html>")
    (report / "table.md").write_text("| a |")
    assert log_report(tracking.uri, "unit", "unit", {"html": report / "report.html"}) == tracking.parent_run_id
    assert {a.path for a in client.list_artifacts(tracking.parent_run_id, "report")} == {
        "report/report.html", "report/table.md"}
    url = runs_url("http://127.0.0.1:5000", tracking.uri, "unit")
    experiment = client.get_experiment_by_name("unit")
    assert url == f"http://127.0.0.1:5000/#/experiments/{experiment.experiment_id}/runs?viewStateShareKey=ocrstudy"
    view = json.loads(experiment.tags["mlflow.sharedViewState.ocrstudy"])
    assert view["orderByKey"] == "metrics.`val_miou`" and "params.`ocr.delta`" in view["selectedColumns"]


def test_params_record_where_tags_come_from_and_what_auto_stood_for() -> None:
    from pipelines.config import to_flat

    trial = {**to_flat(from_flat({"cam.width": 4, "seg.width": 4})), "meta.cell": "base", "meta.setting": 0}
    params = trial_params(trial)
    assert params["data.tags"] == "gt (auto)" and params["seg.init"] == "cam (auto)"
    assert params["model.freeze_bn"] == "auto"  # the tiny networks have no backbone to freeze
    deeplab = {**trial, "model.name": "deeplab", "model.backbone": "resnet18", "model.cam_backbone": "resnet18"}
    assert trial_params(deeplab)["model.freeze_bn"] == "cam: false, seg: true (auto)"  # seg: the trained CAM's
    labels = {**trial, "data.labels": "cls_labels.npy", "seg.width": 8}
    assert trial_params(labels)["data.tags"] == "file (auto)" and trial_params(labels)["seg.init"] == "scratch (auto)"
    assert trial_params({**trial, "data.tags": "gt"})["data.tags"] == "gt"  # set explicitly: as given
