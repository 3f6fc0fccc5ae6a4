"""A real tiny Tune study (ASHA, one seed failing): collected from its record, rebuilt from MLflow, reported."""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest

from record import FAILPOINTS_ENV
from results import Dataset, collect_mlflow, collect_study, load_dataset, report_study
from study.cli import main
from study.spec import StudySpec
from tests.conftest import TINY
from tests.study.test_tune_study import tiny_spec

pytestmark = pytest.mark.slow
FAULT = "train.step[stage=seg,epoch=1,seed=1]=*return"  # every trial of seed 1: a NaN loss in its first epoch
NOT_IN_MLFLOW = ["wall_s", "node_id", "hostname", "artifacts", "error"]


@pytest.fixture(scope="module")
def real_study(tmp_path_factory: pytest.TempPathFactory, shared_cache: Path) -> Iterator[StudySpec]:
    import ray

    from study.handle import open_study
    from study.runner import init_ray, run_study

    saved = os.environ.get(FAILPOINTS_ENV)
    os.environ[FAILPOINTS_ENV] = FAULT  # before Ray starts, so its workers inherit it
    spec = tiny_spec(tmp_path_factory.mktemp("real"), shared_cache, trial={**TINY, "cache_dir": str(shared_cache),
                                                                          "seg.epochs": 4},
                     scheduler={"type": "asha", "grace_period": 1, "reduction_factor": 2, "metric": "val_miou",
                                "mode": "max"})
    try:
        init_ray(None)
        run_study(open_study(spec))
        yield spec
    finally:
        ray.shutdown()
        if saved is None:
            os.environ.pop(FAILPOINTS_ENV, None)
        else:
            os.environ[FAILPOINTS_ENV] = saved


@pytest.fixture(scope="module")
def collected(real_study: StudySpec) -> Dataset:
    return load_dataset(collect_study(Path(real_study.study_dir)))


def test_collected_trials_match_tune_and_the_raw_reports(real_study: StudySpec, collected: Dataset) -> None:
    from study.handle import open_study
    from study.runner import trial_table

    rows = {r["trial_id"]: r for r in trial_table(open_study(real_study))}
    trials = collected.trials.set_index("trial_id")
    assert set(trials.index) == set(rows) and len(rows) == 6
    for trial_id, row in rows.items():
        assert trials.loc[trial_id, "status"] == row["status"]
        assert trials.loc[trial_id, "epochs"] == row["epochs"]
        assert trials.loc[trial_id, "cell"] == row["cell"] and trials.loc[trial_id, "seed"] == row["seed"]
        if row["val_miou"] is not None:
            assert trials.loc[trial_id, "final_val_miou"] == row["val_miou"]
    assert len(collected.curves) == trials["epochs"].sum()
    assert collected.info.rungs == (1, 2) and collected.info.scheduler == "asha"


def test_why_each_real_trial_stopped(collected: Dataset) -> None:
    trials = collected.trials
    failed = trials[trials["stop_reason"].astype(str) == "failed"]
    assert sorted(failed["seed"].tolist()) == [1, 1, 1] and (failed["epochs"] == 0).all()
    assert failed["error"].str.contains("NonFiniteLossError").all()
    rest = trials[trials["seed"] == 0]
    assert set(rest["stop_reason"].astype(str)) <= {"completed", "early_stopped"}
    assert (rest.loc[rest["stop_reason"].astype(str) == "completed", "epochs"] == 4).all()
    stopped = rest[rest["stop_reason"].astype(str) == "early_stopped"]
    assert set(stopped["epochs"]) <= {1, 2} and (stopped["stop_rung"] == stopped["epochs"]).all()
    assert rest["node_id"].notna().all() and (rest["cpu_s"] > 0).all() and (rest["gpu_s"] == 0).all()
    assert rest["git_commit"].notna().all()  # read from the study's MLflow store


def test_collecting_again_gives_the_same_rows(real_study: StudySpec, collected: Dataset) -> None:
    again = load_dataset(collect_study(Path(real_study.study_dir)))
    pd.testing.assert_frame_equal(collected.trials, again.trials)
    pd.testing.assert_frame_equal(collected.curves, again.curves)


def test_the_record_holds_every_trial_in_its_own_layout(real_study: StudySpec, collected: Dataset) -> None:
    """What a study promises to leave in its folder (README, record/): ``study.json``, per trial
    ``trials/<id>/trial.json`` and ``epochs.jsonl``, and the collected ``results/*.parquet``."""
    study_dir = Path(real_study.study_dir)
    doc = json.loads((study_dir / "study.json").read_text())
    assert (doc["name"], doc["scheduler"], doc["rungs"], doc["epochs_planned"]) == (real_study.name, "asha", [1, 2], 4)
    assert doc["planned_trials"] == 6 and doc["seeds"] == [0, 1]
    assert {cell["id"] for cell in doc["phases"][0]["cells"]} == set(collected.trials["cell"])
    trials = collected.trials.set_index("trial_id")
    assert sorted(p.name for p in (study_dir / "trials").iterdir()) == sorted(trials.index)
    for trial_id, row in trials.iterrows():
        folder = study_dir / "trials" / str(trial_id)
        record = json.loads((folder / "trial.json").read_text())
        assert record["trial_id"] == trial_id and record["status"] == row["status"]
        assert (record["cell"], record["seed"]) == (row["cell"], row["seed"])
        assert record["stop_reason"] == str(row["stop_reason"])
        lines = (folder / "epochs.jsonl").read_text().splitlines() if (folder / "epochs.jsonl").exists() else []
        epochs = [json.loads(line) for line in lines]
        assert [e["epoch"] for e in epochs] == list(range(1, row["epochs"] + 1))
        assert all(e["trial_id"] == trial_id for e in epochs)
        if epochs:
            assert epochs[-1]["val_miou"] == row["final_val_miou"]
    for name in ("trials.parquet", "curves.parquet"):
        assert (study_dir / "results" / name).is_file()
    on_disk = pd.read_parquet(study_dir / "results" / "trials.parquet")
    assert sorted(on_disk["trial_id"]) == sorted(trials.index)


def test_collecting_needs_none_of_tune_s_files(real_study: StudySpec, collected: Dataset, tmp_path: Path) -> None:
    """A Ray upgrade that renames Tune's files must not break collecting: delete Tune's folders and collect
    again."""
    copy = tmp_path / real_study.name
    shutil.copytree(real_study.study_dir, copy)
    tune = [copy / name for name in ("tune", "tune-confirm") if (copy / name).is_dir()]
    assert tune  # the study ran on Tune, which wrote there
    for folder in tune:
        shutil.rmtree(folder)
    again = load_dataset(collect_study(copy))
    pd.testing.assert_frame_equal(collected.trials, again.trials)
    pd.testing.assert_frame_equal(collected.curves, again.curves)


def test_mlflow_holds_one_run_per_trial_under_the_study_s_run(real_study: StudySpec, collected: Dataset) -> None:
    """Read back through MLflow's own client: one parent run for the study, one nested run per trial, tagged
    with its trial id, cell, seed and stop reason, with one val mIoU (``1 val/miou pct``) per epoch it ran."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(real_study.tracking_uri)
    experiment = client.get_experiment_by_name(real_study.tracking.experiment)
    assert experiment is not None
    runs = client.search_runs([experiment.experiment_id], max_results=1000)
    (parent,) = [r for r in runs if r.data.tags.get("ocr_study.role") == "study"]
    assert parent.data.tags["ocr_study.study"] == real_study.name
    children = {r.data.tags["ocr_study.trial_id"]: r for r in runs if r is not parent}
    trials = collected.trials.set_index("trial_id")
    assert sorted(children) == sorted(trials.index)
    for trial_id, run in children.items():
        row, tags = trials.loc[trial_id], run.data.tags
        assert tags["mlflow.parentRunId"] == parent.info.run_id
        assert (tags["ocr_study.cell"], tags["ocr_study.seed"]) == (row["cell"], str(row["seed"]))
        reason = str(row["stop_reason"])
        assert tags["ocr_study.stop_reason"] == reason  # the record's word (issue 22, item 1)
        if reason == "early_stopped":
            assert tags["ocr_study.stop_epoch"] == str(row["epochs"]) == str(int(row["stop_rung"]))
        assert tags["ocr_study.completed"] == str(reason == "completed").lower()
        history = client.get_metric_history(run.info.run_id, "1 val/miou pct")  # in percent, as people read it
        assert sorted(m.step for m in history) == list(range(1, row["epochs"] + 1))
        if row["epochs"]:
            assert run.data.metrics["1 val/miou pct"] == pytest.approx(100 * row["final_val_miou"])


def test_an_mlflow_rebuild_matches_the_tune_dataset(real_study: StudySpec, collected: Dataset,
                                                    tmp_path: Path) -> None:
    rebuilt = load_dataset(collect_mlflow(real_study.tracking_uri, real_study.name, tmp_path))
    assert rebuilt.source == "mlflow"
    pd.testing.assert_frame_equal(collected.curves, rebuilt.curves)
    tune, mlflow = collected.trials.drop(columns=NOT_IN_MLFLOW), rebuilt.trials.drop(columns=NOT_IN_MLFLOW)
    pd.testing.assert_frame_equal(tune, mlflow, check_categorical=False)
    failed = rebuilt.trials["stop_reason"].astype(str) == "failed"
    assert rebuilt.trials.loc[failed, "error"].str.len().gt(0).all()
    assert rebuilt.trials["wall_s"].gt(0).all()


def test_report_of_the_real_study(real_study: StudySpec, collected: Dataset, tmp_path: Path,
                                  capsys: pytest.CaptureFixture[str]) -> None:
    written = report_study(Path(real_study.study_dir), tmp_path)
    assert written["html"].is_file() and "n = 1)" in written["md"].read_text()  # in the cells or the header
    completed_ocr = collected.trials[(collected.trials["stop_reason"].astype(str) == "completed")
                                     & (collected.trials["params.ocr.selection"].astype(str) == "oc")]
    assert (tmp_path / "plots" / "priors.png").is_file() == (not completed_ocr.empty)
    storage = str(Path(real_study.study_dir).parent)
    assert main(["report", real_study.name, "--storage", storage, "--format", "md"]) == 0
    assert f"report of study {real_study.name}" in capsys.readouterr().out
    assert main(["export", real_study.name, "--storage", storage, "--mlflow", real_study.tracking_uri,
                 "--out", str(tmp_path / "from_mlflow")]) == 0
    assert (tmp_path / "from_mlflow" / "trials.parquet").is_file()
