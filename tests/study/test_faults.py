"""Faults, through the real CLI in child processes, each made at a named failpoint: a trial's worker killed
mid-epoch after a checkpoint, the driver killed after a trial's record and before Tune saved it, a trial
whose loss turns NaN. Each test asserts that its fault happened, then what the study made of it, and ends
every process it started, by PID."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pandas as pd
import pytest

from record import ABANDONED, read_epochs, read_trial, study_trials, trial_folder, trial_folders
from study.handle import open_study
from study.plan import plan
from study.runner import trial_table
from study.spec import StudySpec
from tests.study.cli_procs import (
    EPOCHS,
    Processes,
    finish,
    killed_by_failpoint,
    mlflow_trial_runs,
    procs,
    spec_file,
)

pytestmark = pytest.mark.slow
__all__ = ["procs"]  # the fixture, used by name
Procs = Callable[..., Processes]


def test_killed_worker_resumes_its_trial_from_the_checkpoint(procs: Procs, tmp_path: Path,
                                                            shared_cache: Path) -> None:
    """The worker of seed 0's trial dies (SIGKILL) in the middle of epoch 3, after epoch 2's checkpoint."""
    path, spec = spec_file(tmp_path, shared_cache, grid={"ocr.selection": ["none"]}, search=None)
    p = procs("train.step[stage=seg,epoch=3,step=2,seed=0]=kill")
    finish(p.start("run", str(path)))

    (fault,) = p.fired()
    assert fault["name"] == "train.step" and fault["context"]["seed"] == 0
    rows = trial_table(open_study(spec))
    assert len(rows) == 2 and {r["status"] for r in rows} == {"TERMINATED"}
    victim = next(r for r in rows if r["seed"] == 0)
    lines = read_epochs(trial_folder(Path(spec.study_dir), victim["trial_id"]))
    epochs = [int(line["epoch"]) for line in lines]
    assert epochs == list(range(1, EPOCHS + 1)), epochs  # a restart would repeat 1 and 2
    runs = mlflow_trial_runs(spec)
    assert sorted(runs["tags.ocr_study.trial_id"]) == sorted(r["trial_id"] for r in rows)
    assert set(runs["status"]) == {"FINISHED"}


def _record_states(spec: StudySpec) -> Counter[str]:
    """Trials that count by the status their own ``trial.json`` holds (the study's record)."""
    return Counter(str(doc.status) for _, doc in study_trials(Path(spec.study_dir)))


def test_a_driver_killed_before_tune_saved_a_started_trial_resumes_to_exactly_the_planned_trials(
        procs: Procs, tmp_path: Path, shared_cache: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The driver dies (SIGKILL) once the fourth trial's record is written and before Tune saved its
    experiment state with that trial: two trials are done, one is mid-training, one exists only in our
    record. ``resume`` ends what the driver left, keeps the finished trials, continues the running one,
    plans the unsaved one again under a new id (its record marked ABANDONED); then the Parquet rows, their
    statuses, the report and ``status`` agree (issue 14, item 1)."""
    from results import load_dataset
    from study.cli import main

    path, spec = spec_file(tmp_path, shared_cache)
    planned = plan(spec).trials
    cells = {c.id: c.trials for c in plan(spec).cells}
    p = procs("driver.trial-started[phase=search,started>=4,unsaved=True]=kill")
    killed_by_failpoint(p.start("run", str(path)), p, "driver.trial-started")
    unsaved = p.fired()[0]["context"]["trial_id"]
    folder = Path(spec.study_dir)
    assert getattr(read_trial(trial_folder(folder, unsaved)), "status", None) == "RUNNING"
    done = {doc.trial_id: len(read_epochs(path)) for path, doc in study_trials(folder)
            if doc.status == "TERMINATED"}
    assert len(done) >= 2, done
    running = {doc.trial_id for _, doc in study_trials(folder) if doc.status == "RUNNING"}

    out = finish(p.start("resume", spec.name, "--storage", spec.storage, armed=False))
    assert f"report of study {spec.name}" in out, out
    abandoned = {d.trial_id for d in map(read_trial, trial_folders(folder)) if d and d.status == ABANDONED}
    # the trial the failpoint saw unsaved is abandoned; so is any other trial started since Tune's last save
    # (Tune saves its experiment state on its own clock, so one or two may have started in between), and
    # never one that had finished
    assert unsaved in abandoned and abandoned <= running, (abandoned, running)
    for trial_id, count in done.items():  # finished trials were not run again
        assert len(read_epochs(trial_folder(folder, trial_id))) == count

    trials = load_dataset(folder / "results").trials  # what resume's report collected
    assert len(trials) == planned == 6 and trials["trial_id"].is_unique and not abandoned & set(trials["trial_id"])
    assert set(trials["status"].astype(str)) == {"TERMINATED"}  # none left RUNNING
    assert set(trials["stop_reason"].astype(str)) == {"completed"}
    assert _record_states(spec) == Counter({"TERMINATED": planned})
    rows = {r["trial_id"]: r for r in trial_table(open_study(spec))}
    assert Counter(r["cell"] for r in rows.values()) == cells and set(rows) == set(trials["trial_id"])
    runs = mlflow_trial_runs(spec)
    assert len(runs) == planned and set(runs["tags.ocr_study.trial_id"]) == set(trials["trial_id"])
    assert set(runs["status"]) == {"FINISHED"}
    for row in trials.itertuples():
        assert rows[row.trial_id]["epochs"] == row.epochs == EPOCHS
        assert rows[row.trial_id]["val_miou"] == row.final_val_miou
    assert main(["status", spec.name, "--storage", spec.storage]) == 0
    status = capsys.readouterr().out
    assert f"{planned} trials known — {planned} completed" in status, status
    html = (folder / "report" / "report.html").read_text()
    assert f"{planned} trials ({planned} completed)" in html
    ablation = pd.read_csv(folder / "report" / "csv" / "ablation.csv")
    best_delta = ablation.loc[ablation["cell"] == "ocr.selection=oc", "ocr.delta"].iloc[0]
    assert f"ocr.delta={best_delta:.3g}" in status.split("ocr.selection=oc:")[1], status  # the same best δ


def test_nan_trial_is_marked_failed_once_and_the_study_goes_on(procs: Procs, tmp_path: Path, shared_cache: Path,
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    """Seed 1's loss turns NaN at epoch 2 in each of its trials: each fails once (its own code failed: no
    retry), the others complete, ``run`` exits 1 and says how many failed and why."""
    path, spec = spec_file(tmp_path, shared_cache)
    p = procs("train.step[stage=seg,epoch=2,seed=1]=*return")
    proc = p.start("run", str(path))
    out, _ = proc.communicate(timeout=600)
    assert proc.returncode == 1, out  # --allow-failures would make it 0
    assert "3 trials failed" in out and "non-finite loss in stage 'seg' at epoch 2" in out, out
    assert sorted({f["context"]["seed"] for f in p.fired()}) == [1] and len(p.fired()) == 3  # no retry
    assert out.count("Trial task failed for trial") == 3, out  # one traceback per trial, never a retry's
    rows = trial_table(open_study(spec))
    assert Counter((r["seed"], r["status"]) for r in rows) == {(0, "TERMINATED"): 3, (1, "ERROR"): 3}
    runs = mlflow_trial_runs(spec)
    failed = runs[runs["tags.ocr_study.seed"] == "1"]
    assert set(failed["status"]) == {"FAILED"}
    assert all("epoch 2" in e and "nan" in e for e in failed["tags.ocr_study.error"])
    assert set(runs[runs["tags.ocr_study.seed"] == "0"]["status"]) == {"FINISHED"}
    from study.cli import main

    assert main(["status", spec.name, "--storage", spec.storage]) == 0
    status = capsys.readouterr().out
    assert status.count("NonFiniteLossError: non-finite loss in stage 'seg' at epoch 2") == 3, status
