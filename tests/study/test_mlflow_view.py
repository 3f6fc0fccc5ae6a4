"""What a researcher reads in MLflow after a real tiny study with both phases (local Ray, 2 CPUs), read back
through MLflow's own client: the held-out test figures logged on confirm runs, in percent; the study run's
per-cell figures equal to the report's ablation table; only settings that apply (no δ/τ on baselines, in
MLflow and in the export); the training view's experiment tag; and ``report --out`` leaving the study as it
was."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest

from study.handle import open_study
from study.spec import StudySpec, load_spec
from tests.study.test_tune_study import tiny_doc

pytestmark = pytest.mark.slow
CONFIRM_SEEDS = [3, 4]


@pytest.fixture(scope="module")
def finished(local_ray: None, tmp_path_factory: pytest.TempPathFactory, shared_cache: Path) -> StudySpec:
    """A tiny study (none / oc, 2 δ samples, one search seed, confirm on two more), run and reported as
    ``ocr-study run`` does."""
    from study.commands.report import report_after
    from study.runner import run_study

    tmp_path = tmp_path_factory.mktemp("view")
    doc = tiny_doc(tmp_path, shared_cache, seeds=[0], confirm={"seeds": CONFIRM_SEEDS})
    spec = load_spec(doc)
    run_study(open_study(spec))
    report_after(open_study(spec))
    return spec


def _runs(spec: StudySpec) -> tuple[Any, list[Any]]:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=spec.tracking_uri)
    experiment = client.get_experiment_by_name(spec.name)
    assert experiment is not None
    return experiment, client.search_runs([experiment.experiment_id], max_results=1000)


def test_confirm_runs_log_their_test_figures_in_percent(finished: StudySpec) -> None:
    from mlflow.tracking import MlflowClient

    from record import read_epochs, study_trials

    experiment, runs = _runs(finished)
    assert experiment.tags["mlflow.experimentKind"] == "custom_model_development"  # the training view
    trials = [r for r in runs if "ocr_study.trial_id" in r.data.tags]
    confirm = [r for r in trials if r.data.tags["ocr_study.phase"] == "confirm"]
    assert len(confirm) == 2 * len(CONFIRM_SEEDS)
    last = {doc.trial_id: read_epochs(path)[-1] for path, doc in study_trials(Path(finished.study_dir))}
    for run in confirm:
        record = last[run.data.tags["ocr_study.trial_id"]]
        assert run.data.metrics["2 test/miou pct"] == pytest.approx(100 * record["test_miou"])
        assert run.data.metrics["2 test/oc_rate_fg pct"] == pytest.approx(100 * record["test_oc_rate_fg"])
        assert run.data.metrics["1 val/miou pct"] == pytest.approx(100 * record["val_miou"])
        assert run.info.run_name.startswith("confirm · ")
    assert not any(k.startswith("2 test/") for r in trials if r not in confirm for k in r.data.metrics)
    client = MlflowClient(tracking_uri=finished.tracking_uri)
    history = client.get_metric_history(confirm[0].info.run_id, "4 class IoU/background pct")
    assert len(history) == 2  # per-class IoU every epoch (tiny_doc: 2), in its own section


def test_baselines_carry_no_delta_or_tau_anywhere(finished: StudySpec) -> None:
    from results import collect_study, load_dataset

    _, runs = _runs(finished)
    trials = [r for r in runs if "ocr_study.trial_id" in r.data.tags]
    baselines = [r for r in trials if r.data.tags["ocr_study.cell"] == "ocr.selection=none"]
    assert baselines and all("ocr.delta" not in r.data.params and "ocr.tau" not in r.data.params
                             for r in baselines)
    assert all("δ" not in r.info.run_name for r in baselines)
    assert all("ocr.delta" in r.data.params for r in trials if r not in baselines)
    parent = next(r for r in runs if r.data.tags.get("ocr_study.role") == "study")
    assert "trial.ocr.selection" not in parent.data.params  # the grid replaces it
    assert "trial.ocr.delta" not in parent.data.params  # the search replaces it
    trials_frame = load_dataset(collect_study(Path(finished.study_dir))).trials
    none = trials_frame[trials_frame["cell"].astype(str) == "ocr.selection=none"]
    assert none["params.ocr.delta"].isna().all() and none["params.ocr.tau"].isna().all()
    assert trials_frame.loc[trials_frame["cell"].astype(str) != "ocr.selection=none", "params.ocr.delta"].notna().all()


def test_the_study_run_shows_the_ablation_table_s_figures(finished: StudySpec) -> None:
    from results import ablation_table, collect_study, load_dataset

    _, runs = _runs(finished)
    parent = next(r for r in runs if r.data.tags.get("ocr_study.role") == "study")
    table = ablation_table(load_dataset(collect_study(Path(finished.study_dir)))).values
    assert "test_miou_mean" in table  # the digit scenes have a test split: the table measures there
    for _, row in table.iterrows():
        label = str(row["cell"]).split("=", 1)[1]
        assert parent.data.metrics[f"{label} test_miou mean pct"] == pytest.approx(100 * row["test_miou_mean"])
        assert parent.data.metrics[f"{label} n"] == len(CONFIRM_SEEDS)
        if not math.isnan(row["test_oc_rate_fg_mean"]):
            assert parent.data.metrics[f"{label} test_oc_rate_fg mean pct"] == pytest.approx(
                100 * row["test_oc_rate_fg_mean"])
    note = parent.data.tags["mlflow.note.content"]
    assert "seeds: 0 in the search; 3, 4 in the confirm phase" in note
    assert f"| none | {100 * table['test_miou_mean'].iloc[0]:.2f}" in note
    assert not any("/" in k for k in parent.data.metrics)  # no chart section of the study run's own


def test_report_out_writes_only_there(finished: StudySpec, tmp_path: Path) -> None:
    from study.cli import main

    folder = Path(finished.study_dir)

    def snapshot() -> dict[str, tuple[int, int]]:
        return {str(p.relative_to(folder)): (p.stat().st_mtime_ns, p.stat().st_size)
                for p in folder.rglob("*") if p.is_file()}

    before = snapshot()
    out = tmp_path / "elsewhere"
    assert main(["report", finished.name, "--storage", str(folder.parent), "--format", "md,csv",
                 "--out", str(out)]) == 0
    assert (out / "report.md").is_file()
    assert snapshot() == before  # results/ and report/ of the study untouched: it may be read-only or shared
