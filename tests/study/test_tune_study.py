"""A real Ray Tune study end to end on tiny settings (local Ray, 2 CPUs), read back through MLflow."""

from __future__ import annotations

import contextlib
import json
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from record import read_epochs, trial_folder
from study.handle import open_study
from study.plan import plan
from study.runner import run_study, trial_table
from study.spec import StudySpec, load_spec
from study.trial_record import record_line
from tests.conftest import TINY

pytestmark = pytest.mark.slow


def tiny_spec(tmp_path: Path, cache: Path, **overrides: Any) -> StudySpec:
    """A study of the tiny trial: selection none/oc, δ sampled twice in the OCR cell, 2 seeds."""
    return load_spec(tiny_doc(tmp_path, cache, **overrides))


def tiny_doc(tmp_path: Path, cache: Path, **overrides: Any) -> dict[str, Any]:
    """The spec document behind :func:`tiny_spec` (for writing it to a YAML file)."""
    trial = {**TINY, "cache_dir": str(cache)}
    trial.pop("seg.epochs")
    doc: dict[str, Any] = {
        "name": "tiny",
        "trial": {**trial, "seg.epochs": 2},
        "grid": {"ocr.selection": ["none", "oc"]},
        "search": {"samples": 2, "seed": 0, "params": {"ocr.delta": {"type": "uniform", "low": 0.0, "high": 4.0}}},
        "seeds": [0, 1],
        "scheduler": {"type": "none"},
        "max_concurrent": 2,
        "resources": {"cpus": 1, "gpus": 0},
        "storage": str(tmp_path / "studies"),
    }
    doc.update(overrides)
    return doc


def _runs(spec: StudySpec) -> Any:
    import mlflow

    mlflow.set_tracking_uri(spec.tracking_uri)
    return mlflow.search_runs(experiment_names=[spec.name])


def test_study_runs_every_planned_trial_and_mirrors_them_in_mlflow(local_ray: None, tmp_path: Path,
                                                                     shared_cache: Path) -> None:
    spec = tiny_spec(tmp_path, shared_cache)
    planned = {c.id: c.trials for c in plan(spec).cells}
    run_study(open_study(spec))
    rows = trial_table(open_study(spec))
    assert Counter(r["cell"] for r in rows) == planned == {"ocr.selection=none": 2, "ocr.selection=oc": 4}
    assert {r["status"] for r in rows} == {"TERMINATED"}
    assert len({(r["setting"], r["seed"], r["cell"]) for r in rows}) == 6
    oc_deltas = {r["config"]["ocr.delta"] for r in rows if r["cell"] == "ocr.selection=oc"}
    assert len(oc_deltas) == 2  # two sampled settings, each run for both seeds

    runs = _runs(spec)
    parent = runs[runs["tags.ocr_study.role"] == "study"]
    trials = runs[runs["tags.ocr_study.role"] != "study"]
    assert len(parent) == 1 and len(trials) == 6
    assert set(trials["tags.mlflow.parentRunId"]) == {parent["run_id"].iloc[0]}
    assert set(trials["tags.ocr_study.trial_id"]) == {r["trial_id"] for r in rows}
    assert trials["metrics.1 val/miou pct"].notna().all()  # in percent, under its section
    ocr_on = trials["params.ocr.selection"] != "none"  # δ applies only with the OCR loss on
    assert trials.loc[ocr_on, "params.ocr.delta"].notna().all() and trials.loc[~ocr_on, "params.ocr.delta"].isna().all()
    assert trials["metrics.4 class IoU/background pct"].notna().all()
    assert set(trials["status"]) == {"FINISHED"}
    assert set(trials["tags.ocr_study.stop_reason"]) == {"completed"}

    from mlflow.tracking import MlflowClient

    client = MlflowClient(spec.tracking_uri)
    run_id = trials["run_id"].iloc[0]
    assert [m.step for m in client.get_metric_history(run_id, "1 val/miou pct")] == [1, 2]
    artifacts = {a.path for a in client.list_artifacts(run_id)}
    assert {"class_iou.json", "prior.png", "prior.csv", "val_examples.png"} <= artifacts
    assert (open_study(spec).folder / "spec.yaml").is_file()
    _tune_results_match_the_record(open_study(spec).folder)


def _tune_results_match_the_record(folder: Path) -> None:
    """What the driver would write from Tune's results (a worker on another host) is, key for key and
    value for value, what the worker wrote: so it recognises the worker's lines and adds no others."""
    compared = 0
    for path in (folder / "tune").glob("*/result.json"):
        for raw in path.read_text().splitlines():
            result = json.loads(raw)
            trial_id = result["trial_id"]
            rows = [row for row in read_epochs(trial_folder(folder, trial_id)) if row["epoch"] == result["epoch"]]
            assert rows == [json.loads(json.dumps(record_line(trial_id, result)))], (rows, sorted(result))
            compared += 1
    assert compared == 12  # 6 trials × 2 epochs


def test_rerunning_an_existing_study_is_refused(local_ray: None, tmp_path: Path, shared_cache: Path) -> None:
    from study.runner import StudyError

    spec = tiny_spec(tmp_path, shared_cache, seeds=[0], grid={"ocr.selection": ["none"]}, search=None)
    run_study(open_study(spec))
    with pytest.raises(StudyError, match="already exists"):
        run_study(open_study(spec))
    _check_ui_serves_the_study(spec)


def _check_ui_serves_the_study(spec: StudySpec) -> None:
    """``ocr-study ui NAME`` serves the study's MLflow store on 127.0.0.1; the test ends it by PID."""
    import json
    import socket
    import subprocess
    import sys
    import time
    import urllib.request

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    cli = str(Path(sys.executable).parent / "ocr-study")
    proc = subprocess.Popen([cli, "ui", spec.name, "--storage", spec.storage, "--port", str(port)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        url = f"http://127.0.0.1:{port}/api/2.0/mlflow/experiments/get-by-name?experiment_name={spec.name}"
        deadline, answer = time.monotonic() + 60, None
        while answer is None and time.monotonic() < deadline and proc.poll() is None:
            try:
                with urllib.request.urlopen(url, timeout=2) as response:
                    answer = json.loads(response.read())
            except OSError:
                time.sleep(0.5)
        assert answer is not None, "the MLflow UI did not answer"
        assert answer["experiment"]["name"] == spec.name
    finally:
        _end_group(proc.pid)


def _end_group(pgid: int) -> None:
    """SIGTERM every process of the group ``pgid`` (a command and what it started), SIGKILL what stays."""
    import os
    import signal

    import psutil

    def members() -> list[psutil.Process]:
        found = []
        for p in psutil.process_iter():
            try:
                if os.getpgid(p.pid) == pgid and p.status() != psutil.STATUS_ZOMBIE:
                    found.append(p)
            except (ProcessLookupError, psutil.Error):
                pass
        return found

    for sig in (signal.SIGTERM, signal.SIGKILL):
        for p in members():
            with contextlib.suppress(psutil.Error):
                p.send_signal(sig)
        psutil.wait_procs(members(), timeout=15)
    assert not members(), "the UI left processes running"


def test_unreachable_tracking_server_fails_before_any_trial(tmp_path: Path, shared_cache: Path) -> None:
    from study.tracking import TrackingError

    spec = tiny_spec(tmp_path, shared_cache, tracking={"uri": "http://127.0.0.1:9", "experiment": None})
    with pytest.raises(TrackingError, match="cannot be reached"):
        run_study(open_study(spec))
    assert not Path(spec.study_dir).exists()
