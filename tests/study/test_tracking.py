"""The MLflow view of a study, driven by fake Tune trials against a SQLite store: run names, params that
apply, early-stopped runs marked, per-class IoU metrics, and the parent run carrying the study."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from pipelines.config import from_flat
from record import mlflow_metric, record_metric
from study.tracking import (
    BEST_VIEW_TAG,
    CELL_COLOURS,
    CELLS_VIEW_TAG,
    CONFIG_ARTIFACT,
    EXPERIMENT_KIND,
    STORE_TEMPLATES,
    VIEW_TAG,
    MLflowTracking,
    cell_colour,
    cell_label,
    describe,
    headline_summary,
    log_report,
    mlflow_metrics,
    outcome_text,
    param_text,
    parent_params,
    prepare_ui,
    run_name,
    runs_url,
    seed_sqlite_store,
    sqlite_file,
    trial_note,
    trial_params,
    view_states,
)
from tests.pipelines.test_figures import fake_examples

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


def test_run_names_say_phase_cell_values_and_seed() -> None:
    sampled = _config("oc", 1, {"ocr.delta": 7.7123, "ocr.tau": 0.0612})
    assert run_name(sampled) == "search · oc · δ 7.7 · τ 0.061 · s1"  # the phase first: the table cuts the end
    assert run_name(_config("none", 0, phase=None)) == "none · s0"  # δ and τ do not apply without OCR
    assert cell_label("ocr.selection=oc,ocr.prior=uniform") == "oc · uniform"
    assert cell_label("base") == "base"


def test_params_apply_and_are_rounded() -> None:
    baseline = trial_params(_config("none", 0))
    assert "ocr.delta" not in baseline and "ocr.tau" not in baseline and "meta.cell" not in baseline
    assert baseline["lr"] == "0.01235" and baseline["ocr.selection"] == "none"
    assert trial_params(_config("oc", 0))["ocr.delta"] == "6"
    assert param_text(0.1 + 0.2) == "0.3"


def test_metrics_read_in_percent_and_order_the_chart_view() -> None:
    """MLflow shows IoU and OC rates in percent under keys that say so; sections put val first (the chart
    view sorts sections by name), and the record's names come back from them."""
    logged = mlflow_metrics({"val_miou": 0.6110, "val_oc_rate_fg": 0.25, "test_miou": 0.5, "train_loss": 1.5,
                             "iou/digit 3": 0.4, "iteration": 94.0})
    assert logged == pytest.approx({"1 val/miou pct": 61.10, "1 val/oc_rate_fg pct": 25.0, "2 test/miou pct": 50.0,
                                    "3 train/loss": 1.5, "4 class IoU/digit 3 pct": 40.0, "iteration": 94.0})
    sections = sorted({k.rsplit("/", 1)[0] for k in logged if "/" in k})
    assert sections == ["1 val", "2 test", "3 train", "4 class IoU"]
    assert sorted(k for k in logged if k.startswith("1 val/"))[0] == "1 val/miou pct"  # mIoU leads its section
    assert mlflow_metric("best_val_miou")[0] == "1 val/miou_best pct"  # after it, where the UI sorts " " < "_"
    for name in ("val_miou", "test_oc_rate_fg", "train_loss", "best_val_miou", "pseudo_miou", "images_per_s"):
        key, factor = mlflow_metric(name)
        assert record_metric(key) == (name, pytest.approx(1 / factor))
    assert record_metric("val_miou") == ("val_miou", 1.0)  # a study of an older version: the record's names
    assert record_metric("4 class IoU/digit 3 pct") is None and record_metric("iou/one") is None


def test_outcomes_and_notes_say_what_happened() -> None:
    from record import StopReason

    assert outcome_text(StopReason.EARLY_STOPPED, 1, 4) == "stopped by ASHA at epoch 1 of 4"
    assert outcome_text(StopReason.COMPLETED, 4, 4) == "completed"
    assert outcome_text(StopReason.STOPPED, 2, None) == "stopped by the time budget at epoch 2"
    baseline = trial_note("t0", _config("none", 0))
    assert "δ and τ do not apply" in baseline and "δ =" not in baseline
    assert "δ = 7.7, τ = 0.06" in trial_note("t1", _config("oc", 1, {"ocr.delta": 7.7, "ocr.tau": 0.06}))


def test_the_study_run_lists_only_settings_trials_used_and_every_seed() -> None:
    spec = {**SPEC, "trial": {"ocr.selection": "oc", "ocr.delta": 6.0, "ocr.tau": 0.2, "seg.epochs": 3},
            "confirm": {"seeds": [0, 1, 2]}}
    params = parent_params(spec)
    assert params["trial.seg.epochs"] == "3"  # the grid and the search replace the others: no trial used them
    assert not {"trial.ocr.selection", "trial.ocr.delta", "trial.ocr.tau"} & set(params)
    assert "seeds: 0, 1 in the search; 0–2 planned for the confirm phase" in describe(spec, "abc")
    ran = describe(spec, "abc", [0, 1, 2, 3], "| cell |")
    assert "0–3 in the confirm phase" in ran and ran.splitlines()[2] == "| cell |"  # the table first
    rule = {**spec, "confirm": {"seeds": {"min": 3, "max": 9, "step": 2}}}  # a sequential confirm phase
    assert "3 to 9 per setting, added while undecided" in describe(rule, "abc")


def test_the_views_group_runs_by_cell_or_nest_them() -> None:
    views = view_states("val_miou", "max")
    assert list(views) == ["ocrstudy-best", "ocrstudy-cells", "ocrstudy"]  # the first: what `ocr-study ui` opens
    best, cells, nested = views["ocrstudy-best"][1], views["ocrstudy-cells"][1], views["ocrstudy"][1]
    assert best["orderByKey"] == "metrics.`1 val/miou pct`" and "groupBy" not in best
    assert nested["orderByKey"] == "attributes.start_time"  # MLflow nests runs only in start-time order
    assert "metrics.`1 val/miou pct`" in nested["selectedColumns"]
    assert {"tags.`ocr_study.phase`", "tags.`ocr_study.cell`", "tags.`ocr_study.outcome`"} <= set(
        nested["selectedColumns"])
    assert cells["orderByKey"] == "metrics.`1 val/miou pct`" and cells["orderByAsc"] is False
    assert [k["groupByData"] for k in cells["groupBy"]["groupByKeys"]] == ["ocr_study.phase", "ocr_study.cell"]
    assert cells["searchFilter"] == "tags.`ocr_study.completed` = 'true'"  # what the tables average
    assert view_states("val_oc_rate_fg", "min")["ocrstudy-cells"][1]["orderByAsc"] is True


def _epoch(tracking: MLflowTracking, trial: FakeTrial, epoch: int, miou: float, folder: Path) -> None:
    trial.last_result = {"epoch": epoch, "val_miou": miou, "best_val_miou": miou, "train_loss": 1.0 / epoch}
    tracking.on_trial_result(epoch, [], trial, trial.last_result)
    artifacts = folder / trial.trial_id / "artifacts"
    artifacts.mkdir(parents=True, exist_ok=True)
    (artifacts / "class_iou.json").write_text(json.dumps({"background": 0.9, "one": miou, "two": None}))
    fake_examples(artifacts)  # numbers only: the callback draws the picture when it uploads them
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


def tracking_tmp(tracking: MLflowTracking) -> Path:
    """A fresh folder beside the fake study's store."""
    folder = Path(tracking.uri.removeprefix("sqlite:///")).parent / "downloads"
    folder.mkdir(exist_ok=True)
    return folder


@pytest.mark.slow
def test_runs_show_what_they_are(tracked: MLflowTracking) -> None:
    tracking = tracked
    client = tracking.client
    experiment = client.get_experiment_by_name("unit")
    assert experiment.tags[EXPERIMENT_KIND[0]] == EXPERIMENT_KIND[1]
    runs = {r.data.tags["ocr_study.trial_id"]: r for r in client.search_runs([experiment.experiment_id])
            if "ocr_study.trial_id" in r.data.tags}
    assert runs["t0"].info.run_name == "search · none · s0"
    assert "ocr.delta" not in runs["t0"].data.params and runs["t1"].data.params["ocr.tau"] == "0.06"
    assert "ocr_study.config" not in runs["t0"].data.tags  # an artifact: a tag that long reads as a cut chip
    exact = client.download_artifacts(runs["t0"].info.run_id, CONFIG_ARTIFACT, str(tracking_tmp(tracking)))
    assert json.loads(Path(exact).read_text())["lr"] == 0.0123456789  # exact, for rebuilds
    assert runs["t0"].info.status == "FINISHED" and runs["t0"].data.tags["ocr_study.completed"] == "true"
    assert runs["t0"].data.tags["ocr_study.outcome"] == "completed"
    assert runs["t0"].data.tags["mlflow.runColor"] == CELL_COLOURS[0]  # one colour per cell, in grid order
    assert runs["t1"].data.tags["mlflow.runColor"] == runs["t2"].data.tags["mlflow.runColor"] == CELL_COLOURS[1]
    stopped = runs["t2"]
    assert stopped.info.status == "KILLED" and stopped.data.tags["ocr_study.completed"] == "false"
    assert stopped.info.run_name == "search · oc · δ 2 · τ 0.2 · s0 · stopped by ASHA at epoch 1 of 4"
    assert stopped.data.tags["ocr_study.outcome"] == "stopped by ASHA at epoch 1 of 4"
    assert "Stopped by ASHA at epoch 1 of 4.** MLflow marks" in stopped.data.tags["mlflow.note.content"]
    # the record's words (record.StopReason), and the epoch it stopped at
    assert (stopped.data.tags["ocr_study.stop_reason"], stopped.data.tags["ocr_study.stop_epoch"]) == (
        "early_stopped", "1")
    assert "ocr_study.stop_epoch" not in runs["t0"].data.tags
    assert stopped.data.metrics["4 class IoU/one pct"] == pytest.approx(12.0)
    assert "4 class IoU/two pct" not in stopped.data.metrics
    assert runs["t1"].data.metrics["1 val/miou pct"] == pytest.approx(41.0)  # 0.41 in the record
    history = client.get_metric_history(runs["t1"].info.run_id, "4 class IoU/one pct")
    assert [m.step for m in history] == [1, 2, 3, 4]
    artifacts = {a.path for a in client.list_artifacts(stopped.info.run_id)}
    assert "val_examples.png" in artifacts  # an ASHA-stopped run gets its examples too, drawn on upload
    assert "val_examples.npz" not in artifacts  # the numbers behind it stay with the checkpoint
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
    assert not any("/" in k for k in parent.data.metrics)  # a section of its own would be empty in the charts
    report = tmp_path / "report"
    report.mkdir()
    (report / "report.html").write_text("<html></html>")
    (report / "table.md").write_text("| a |")
    assert log_report(tracking.uri, "unit", "unit", {"html": report / "report.html"}) == tracking.parent_run_id
    assert {a.path for a in client.list_artifacts(tracking.parent_run_id, "report")} == {
        "report/report.html", "report/table.md"}
    url = runs_url("http://127.0.0.1:5000", tracking.uri, "unit")
    experiment = client.get_experiment_by_name("unit")
    assert url == (f"http://127.0.0.1:5000/#/experiments/{experiment.experiment_id}/runs"
                   "?viewStateShareKey=ocrstudy-best&workflowType=machine_learning")  # the training view
    for tag in (VIEW_TAG, CELLS_VIEW_TAG, BEST_VIEW_TAG):  # as MLflow 3.17 lists saved views: name, createdAt, state
        envelope = json.loads(experiment.tags[tag])
        assert envelope["name"].startswith("ocr-study: ") and isinstance(envelope["createdAt"], int)
        assert "params.`ocr.delta`" in json.loads(envelope["state"])["selectedColumns"]


@pytest.mark.slow
def test_the_ui_sets_the_training_view_on_a_study_made_before(tmp_path: Path) -> None:
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(tracking_uri=uri)
    assert prepare_ui(uri, "old") is False  # no such experiment yet
    experiment_id = client.create_experiment("old")  # as a version before the tag made it
    assert EXPERIMENT_KIND[0] not in client.get_experiment(experiment_id).tags
    assert prepare_ui(uri, "old") is True
    assert client.get_experiment(experiment_id).tags[EXPERIMENT_KIND[0]] == EXPERIMENT_KIND[1]


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


def test_the_study_run_s_figures_are_the_ablation_table_s(tmp_path: Path) -> None:
    """Without a confirm phase the headline table is the search's, on val: the study run logs its means and
    stds in percent, and the description shows them as a table."""
    from results import ablation_table, collect_study, load_dataset
    from tests.results.conftest import make_study

    ds = load_dataset(collect_study(make_study(tmp_path, name="small")))
    metrics, table = headline_summary(ds)
    values = ablation_table(ds).values
    assert len(values) == 3 and table.count("\n") == 3 + len(values)
    assert table.endswith(f"*{ablation_table(ds).title}*: mean ± std over seeds, as the report's table.")
    for _, row in values.iterrows():
        label = cell_label(str(row["cell"])).replace(" · ", "_")
        assert metrics[f"{label} val_miou mean pct"] == pytest.approx(100 * row["val_miou_mean"])
        assert metrics[f"{label} val_oc_rate_fg std pct"] == pytest.approx(100 * row["val_oc_rate_fg_std"])
        assert metrics[f"{label} n"] == row["val_miou_n"]
        assert f"| {cell_label(str(row['cell']))} | {100 * row['val_miou_mean']:.2f} ± " in table
    assert not any("/" in k for k in metrics)  # in MLflow's "Model metrics" section, never an empty one


def test_each_cell_has_its_colour_in_grid_order() -> None:
    grid: dict[str, list[Any]] = {"ocr.selection": ["none", "oc"], "ocr.prior": ["uniform", "cooc_minmax"],
                                  "ocr.ic": [True, False]}
    assert cell_colour("ocr.selection=oc,ocr.prior=cooc_minmax,ocr.ic=false", grid) == CELL_COLOURS[7]
    assert cell_colour("ocr.selection=none", grid) == CELL_COLOURS[0]  # a baseline merges the OCR-only axes
    assert cell_colour("base", None) in CELL_COLOURS


def _store_rows(db: Path) -> dict[str, Any]:
    """What a store holds besides its runs: the schema, its revision, the experiments (name, location)."""
    import sqlite3

    with sqlite3.connect(db) as conn:
        return {"tables": sorted(r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")),
                "revision": conn.execute("SELECT version_num FROM alembic_version").fetchall(),
                "experiments": conn.execute("SELECT experiment_id, name, artifact_location FROM experiments "
                                            "ORDER BY experiment_id").fetchall()}


@pytest.mark.slow
def test_a_new_store_copied_from_the_cached_schema_is_the_store_mlflow_builds(tmp_path: Path,
                                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """A copy of MLflow's empty schema (kept once per MLflow version) opens as the store MLflow would have
    built itself: same tables and revision, its Default experiment where MLflow puts it, the study's next."""
    import mlflow
    from mlflow.tracking import MlflowClient

    cache = tmp_path / "cache"
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)  # the cached schema is made by a driver started in another folder
    assert seed_sqlite_store(f"sqlite:///{elsewhere / 'first.db'}", cache)
    monkeypatch.chdir(tmp_path)  # MLflow places its Default experiment under the working folder
    built, seeded, again = (f"sqlite:///{tmp_path / name / 'mlflow.db'}" for name in ("built", "seeded", "again"))
    (tmp_path / "built").mkdir()
    for uri in (built, seeded, again):
        made = seed_sqlite_store(uri, cache) if uri != built else False
        assert made == (uri != built)
        MlflowClient(tracking_uri=uri).create_experiment("study")
    assert [p.name for p in (cache / STORE_TEMPLATES).iterdir()] == [f"empty-{mlflow.__version__}.db"]
    rows = [_store_rows(tmp_path / name / "mlflow.db") for name in ("built", "seeded", "again")]
    assert rows[0]["experiments"][0][:2] == (0, "Default") and rows[0]["experiments"][1][:2] == (1, "study")
    assert rows[1] == rows[2] == rows[0]
    # a store that is there is never replaced; a URI that is not an SQLite file is left to MLflow
    assert not seed_sqlite_store(seeded, cache)
    assert len(MlflowClient(tracking_uri=seeded).search_experiments()) == 2
    assert not seed_sqlite_store("http://127.0.0.1:5000", cache)
    assert sqlite_file("sqlite:///:memory:") is None and sqlite_file("sqlite:////a/b.db") == Path("/a/b.db")


def test_a_cache_that_cannot_hold_the_schema_leaves_the_store_to_mlflow(tmp_path: Path) -> None:
    blocked = tmp_path / "cache"
    blocked.write_text("a file where the cache folder should be")
    target = tmp_path / "study" / "mlflow.db"
    assert not seed_sqlite_store(f"sqlite:///{target}", blocked)
    assert not target.exists()
