"""Faults, through the real CLI in child processes: a trial's worker killed, the driver killed then resumed,
a trial whose loss turns NaN. Each test ends every process it started, by PID."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import psutil
import pytest
import yaml

from record import ABANDONED, read_trial, study_trials, trial_folders
from study.plan import plan
from study.runner import trial_table
from study.spec import StudySpec, load_spec
from tests.study.test_tune_study import tiny_doc

pytestmark = pytest.mark.slow
OCR_STUDY = str(Path(sys.executable).parent / "ocr-study")
EPOCHS = 5


def _spec_file(tmp_path: Path, cache: Path, **overrides: Any) -> tuple[Path, StudySpec]:
    doc = tiny_doc(tmp_path, cache, **overrides)
    # Longer trials than the tiny default, so that a kill lands mid-training.
    doc["trial"].update({"seg.epochs": EPOCHS, "data.digits.train_size": 320})
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path, load_spec(doc)


class Processes:
    """Starts CLI commands with their own Ray temp folder and ends every process they made, by PID."""

    def __init__(self, tmp_path: Path, **env: str) -> None:
        self.ray_tmp = Path("/tmp") / f"ocr-faults-{os.getpid()}-{time.time_ns() % 10**8}"
        self.env = {**os.environ, "RAY_TMPDIR": str(self.ray_tmp), **env}
        self.cwd = tmp_path
        self.seen: dict[int, psutil.Process] = {}

    def start(self, *args: str) -> subprocess.Popen[str]:
        proc = subprocess.Popen([OCR_STUDY, *args], cwd=self.cwd, env=self.env, text=True,
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        self.seen[proc.pid] = psutil.Process(proc.pid)
        return proc

    def track(self) -> None:
        """Remember every live descendant of the started commands and every process of our Ray folder."""
        for root in list(self.seen.values()):
            try:
                for child in root.children(recursive=True):
                    self.seen.setdefault(child.pid, child)
            except psutil.NoSuchProcess:
                pass
        for proc in psutil.process_iter(["cmdline"]):
            if any(str(self.ray_tmp) in part for part in proc.info["cmdline"] or []):
                self.seen.setdefault(proc.pid, proc)

    def kill_all(self) -> None:
        self.track()
        for proc in self.seen.values():
            with contextlib.suppress(psutil.NoSuchProcess):
                proc.send_signal(signal.SIGKILL)
        psutil.wait_procs(list(self.seen.values()), timeout=10)


@pytest.fixture
def procs(tmp_path: Path) -> Iterator[Processes]:
    p = Processes(tmp_path)
    yield p
    p.kill_all()
    alive = [q.pid for q in p.seen.values() if q.is_running() and q.status() != psutil.STATUS_ZOMBIE]
    assert not alive, f"processes left running: {alive}"


def _results(spec: StudySpec) -> dict[str, list[dict[str, Any]]]:
    """Every trial folder's result.json lines, by trial folder name."""
    out = {}
    for path in (Path(spec.study_dir) / "tune").glob("*/result.json"):
        lines = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
        out[path.parent.name] = lines
    return out


def _wait_for(what: str, test: Callable[[], bool], proc: subprocess.Popen[str], procs: Processes,
              timeout: float = 240) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        procs.track()
        if test():
            return
        if proc.poll() is not None:
            pytest.fail(f"the study ended before {what}:\n{proc.stdout.read() if proc.stdout else ''}")
        time.sleep(0.2)
    pytest.fail(f"timed out waiting for {what}")


def _finish(proc: subprocess.Popen[str], timeout: float = 400) -> str:
    out, _ = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, out
    return out


def _mlflow_trial_runs(spec: StudySpec) -> Any:
    import mlflow

    mlflow.set_tracking_uri(spec.tracking_uri)
    runs = mlflow.search_runs(experiment_names=[spec.name])
    return runs[runs["tags.ocr_study.role"] != "study"]


def test_killed_worker_resumes_its_trial_from_the_checkpoint(procs: Processes, tmp_path: Path,
                                                            shared_cache: Path) -> None:
    path, spec = _spec_file(tmp_path, shared_cache, grid={"ocr.selection": ["none"]}, search=None)
    proc = procs.start("run", str(path))
    victim: dict[str, Any] = {}

    def mid_training() -> bool:
        for name, lines in _results(spec).items():
            if 1 <= len(lines) < EPOCHS - 1:
                victim.update(name=name, pid=lines[-1]["pid"], epoch=lines[-1]["epoch"])
                return True
        return False

    _wait_for("a trial in mid-training", mid_training, proc, procs)
    os.kill(victim["pid"], signal.SIGKILL)
    _finish(proc)

    rows = trial_table(spec)
    assert len(rows) == 2 and {r["status"] for r in rows} == {"TERMINATED"}
    lines = _results(spec)[victim["name"]]
    epochs = [int(line["epoch"]) for line in lines]
    assert epochs[-1] == EPOCHS and epochs == sorted(set(epochs)), epochs  # continued, never restarted
    assert victim["pid"] in {line["pid"] for line in lines} and len({line["pid"] for line in lines}) == 2
    runs = _mlflow_trial_runs(spec)
    assert sorted(runs["tags.ocr_study.trial_id"]) == sorted(r["trial_id"] for r in rows)
    assert set(runs["status"]) == {"FINISHED"}


def test_killed_driver_then_resume_runs_exactly_the_planned_trials(procs: Processes, tmp_path: Path,
                                                                   shared_cache: Path) -> None:
    path, spec = _spec_file(tmp_path, shared_cache)
    planned = {c.id: c.trials for c in plan(spec).cells}
    proc = procs.start("run", str(path))
    done_before: dict[str, int] = {}

    def some_done_some_not() -> bool:
        results = _results(spec)
        done = {n: len(v) for n, v in results.items() if v and v[-1]["epoch"] >= EPOCHS}
        running = [n for n, v in results.items() if v and v[-1]["epoch"] < EPOCHS]
        if len(done) >= 2 and running:
            done_before.update(done)
            return True
        return False

    _wait_for("two finished trials and one running", some_done_some_not, proc, procs)
    procs.kill_all()  # the driver and the local Ray it started, all with SIGKILL

    _finish(procs.start("resume", spec.name, "--storage", spec.storage))
    rows = trial_table(spec)
    assert Counter(r["cell"] for r in rows) == planned
    assert {r["status"] for r in rows} == {"TERMINATED"}
    assert len({r["trial_id"] for r in rows}) == sum(planned.values())
    results = _results(spec)
    for name, count in done_before.items():
        assert len(results[name]) == count  # finished trials were not run again
    runs = _mlflow_trial_runs(spec)
    assert sorted(runs["tags.ocr_study.trial_id"]) == sorted(r["trial_id"] for r in rows)


def test_nan_trial_is_marked_failed_and_the_study_goes_on(tmp_path: Path, shared_cache: Path,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    procs = Processes(tmp_path, OCR_STUDY_FAULT="nan:seg:2:1")  # seed 1 diverges at epoch 2
    try:
        path, spec = _spec_file(tmp_path, shared_cache)
        out = _finish(procs.start("run", str(path), "--allow-failures"))  # exit 1 without it
    finally:
        procs.kill_all()
    assert "3 failed" in out
    rows = trial_table(spec)
    assert Counter((r["seed"], r["status"]) for r in rows) == {(0, "TERMINATED"): 3, (1, "ERROR"): 3}
    runs = _mlflow_trial_runs(spec)
    failed = runs[runs["tags.ocr_study.seed"] == "1"]
    assert set(failed["status"]) == {"FAILED"}
    assert all("epoch 2" in e and "nan" in e for e in failed["tags.ocr_study.error"])
    assert set(runs[runs["tags.ocr_study.seed"] == "0"]["status"]) == {"FINISHED"}
    from study.cli import main

    assert main(["status", spec.name, "--storage", spec.storage]) == 0
    status = capsys.readouterr().out
    assert status.count("NonFiniteLossError: non-finite loss in stage 'seg' at epoch 2") == 3, status


def _record_states(spec: StudySpec) -> Counter[str]:
    """Trials that count by the status their own ``trial.json`` holds (the study's record)."""
    return Counter(str(doc["status"]) for _, doc in study_trials(Path(spec.study_dir)))


def test_after_a_driver_kill_and_resume_dataset_status_and_report_agree(
        procs: Processes, tmp_path: Path, shared_cache: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Issue 14, item 1: the Parquet rows, their statuses, the report and `status` agree after a resume."""
    from results import load_dataset
    from study.cli import main

    path, spec = _spec_file(tmp_path, shared_cache)
    planned = plan(spec).trials
    proc = procs.start("run", str(path))

    def unsaved_trial_running() -> bool:
        """Two trials done, and one started after Tune last saved its experiment state (Tune saves on each
        trial checkpoint): killed now, the driver leaves a trial that resume plans again under a new id."""
        states = _record_states(spec)
        saved = [f.stat().st_mtime for f in (Path(spec.study_dir) / "tune").glob("experiment_state-*.json")]
        fresh = [f for f in trial_folders(Path(spec.study_dir)) if not (f / "epochs.jsonl").exists()
                 and (read_trial(f) or {}).get("status") == "RUNNING"
                 and (f / "trial.json").stat().st_mtime > max(saved, default=0.0)]
        return states["TERMINATED"] >= 2 and bool(fresh and saved)

    _wait_for("two finished trials and one started after Tune's last save", unsaved_trial_running, proc, procs)
    procs.kill_all()  # the driver and the local Ray it started, all with SIGKILL
    out = _finish(procs.start("resume", spec.name, "--storage", spec.storage))
    assert f"report of study {spec.name}" in out, out
    abandoned = [d for d in map(read_trial, trial_folders(Path(spec.study_dir))) if d and d["status"] == ABANDONED]
    assert abandoned, "no trial was left unsaved by the killed driver: the test no longer makes the fault"

    trials = load_dataset(Path(spec.study_dir) / "results").trials  # what resume's report collected
    assert len(trials) == planned == 6 and trials["trial_id"].is_unique
    assert set(trials["status"].astype(str)) == {"TERMINATED"}  # none left RUNNING
    assert set(trials["stop_reason"].astype(str)) == {"completed"}
    assert _record_states(spec) == Counter({"TERMINATED": planned})
    runs = _mlflow_trial_runs(spec)
    assert len(runs) == planned and set(runs["tags.ocr_study.trial_id"]) == set(trials["trial_id"])
    assert set(runs["status"]) == {"FINISHED"}

    rows = {r["trial_id"]: r for r in trial_table(spec)}
    assert set(rows) == set(trials["trial_id"])
    for row in trials.itertuples():
        assert rows[row.trial_id]["epochs"] == row.epochs == EPOCHS
        assert rows[row.trial_id]["val_miou"] == row.final_val_miou
    assert main(["status", spec.name, "--storage", spec.storage]) == 0
    status = capsys.readouterr().out
    assert f"{planned} trials known — {planned} completed" in status, status
    html = (Path(spec.study_dir) / "report" / "report.html").read_text()
    assert f"{planned} trials ({planned} completed)" in html
    ablation = pd.read_csv(Path(spec.study_dir) / "report" / "csv" / "ablation.csv")
    best_delta = ablation.loc[ablation["cell"] == "ocr.selection=oc", "ocr.delta"].iloc[0]
    assert f"ocr.delta={best_delta:.3g}" in status.split("ocr.selection=oc:")[1], status  # the same best δ
