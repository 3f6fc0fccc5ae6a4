"""Faults through the real CLI with Ray (slow): a running study is locked, a driver killed with SIGKILL
leaves processes that ``resume`` ends, a driver ended with SIGTERM ends its Ray, ``ocr-study ui`` ended
with SIGTERM leaves nothing running. Every process started is ended by PID (the ``procs`` fixture)."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psutil
import pytest
import yaml

from study.handle import open_study
from study.plan import plan
from study.processes import PROCESSES_FILE
from study.runner import trial_table
from study.spec import load_spec
from tests.study.cli_procs import OCR_STUDY, Processes, finish, procs, spec_file, wait_for_fired
from tests.study.test_tune_study import tiny_doc

pytestmark = pytest.mark.slow
__all__ = ["procs"]  # the fixture, used by name
Procs = Callable[..., Processes]


def _same_process(entry: dict[str, Any]) -> bool:
    try:
        proc = psutil.Process(int(entry["pid"]))
        return abs(proc.create_time() - float(entry["create_time"])) <= 1.0 and \
            proc.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def test_a_running_study_is_locked_and_resume_ends_what_a_killed_driver_left(
        procs: Procs, tmp_path: Path, shared_cache: Path) -> None:
    """The driver pauses at its first trial result (failpoint ``driver.trial-result``, action pause), holding
    the study: ``run``, ``run --fresh`` and ``resume`` are refused; then it is killed with SIGKILL."""
    path, spec = spec_file(tmp_path, shared_cache, grid={"ocr.selection": ["none"]}, search=None)
    folder = Path(spec.study_dir)
    planned = {c.id: c.trials for c in plan(spec).cells}
    p = procs("driver.trial-result[epoch=1]=pause")
    driver = p.start("run", str(path))
    wait_for_fired(p, "driver.trial-result", driver)
    for args in (["run", str(path), "--fresh"], ["run", str(path)], ["resume", spec.name, "--storage", spec.storage]):
        other = p.start(*args)
        out, _ = other.communicate(timeout=300)
        assert other.returncode == 2, out
        assert f"is in use by pid {driver.pid} on host {socket.gethostname()}" in out, out
    assert (folder / "spec.yaml").is_file() and (folder / "tune").is_dir()  # --fresh deleted nothing

    recorded = json.loads((folder / PROCESSES_FILE).read_text())["started"]
    names = {e["name"] for e in recorded}  # the test looks at names; the driver records descendants, never by name
    assert {"raylet", "gcs_server"} <= names, names
    driver.send_signal(signal.SIGKILL)
    driver.wait()
    left = [e for e in recorded if _same_process(e)]
    assert left, "a driver killed with SIGKILL left nothing running: the fault did not reproduce"

    out = finish(p.start("resume", spec.name, "--storage", spec.storage, armed=False))
    assert not [e for e in left if _same_process(e)], "resume left the dead driver's processes running"
    assert not p.ray_processes(), "resume, ended normally, left its own Ray running"
    assert not (folder / PROCESSES_FILE).exists() and not (folder / "study.lock").exists()
    rows = trial_table(open_study(spec))
    assert Counter(r["cell"] for r in rows) == planned and {r["status"] for r in rows} == {"TERMINATED"}
    print(f"killed driver left {len(left)} of {len(recorded)} recorded processes {[e['name'] for e in left]}; "
          "resume ended them; "
          f"{len(rows)} trials TERMINATED ({dict(Counter(r['cell'] for r in rows))})\n{out}")


def test_a_driver_ended_with_sigterm_ends_its_ray_and_releases_the_study(
        procs: Procs, tmp_path: Path, shared_cache: Path) -> None:
    path, spec = spec_file(tmp_path, shared_cache, grid={"ocr.selection": ["none"]}, search=None)
    folder = Path(spec.study_dir)
    p = procs("driver.trial-result[epoch=1]=pause")  # a trial in training, the driver in its loop
    driver = p.start("run", str(path))
    wait_for_fired(p, "driver.trial-result", driver)
    assert p.ray_processes()
    driver.send_signal(signal.SIGTERM)
    out, _ = driver.communicate(timeout=300)
    assert driver.returncode != 0, out
    assert not p.ray_processes(), f"Ray outlived its driver:\n{out}"
    assert not (folder / "study.lock").exists() and not (folder / PROCESSES_FILE).exists()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _listening(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def test_ui_ended_with_sigterm_leaves_no_server(tmp_path: Path) -> None:
    doc = tiny_doc(tmp_path, tmp_path / "cache")
    spec = load_spec(doc)
    Path(spec.study_dir).mkdir(parents=True)
    (Path(spec.study_dir) / "spec.yaml").write_text(yaml.safe_dump(spec.to_dict()))
    port = _free_port()
    proc = subprocess.Popen([OCR_STUDY, "ui", spec.name, "--storage", spec.storage, "--port", str(port)],
                            cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    seen: dict[int, psutil.Process] = {}
    try:
        end = time.monotonic() + 180
        while not _listening(port):
            assert proc.poll() is None and time.monotonic() < end, "the MLflow UI did not start"
            time.sleep(0.5)
        seen = {p.pid: p for p in psutil.Process(proc.pid).children(recursive=True)}
        assert seen
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)
        _, alive = psutil.wait_procs(list(seen.values()), timeout=5)
        assert not alive, f"left running: {[p.pid for p in alive]}"
        assert not _listening(port)
    finally:
        for p in [*seen.values(), psutil.Process(proc.pid) if proc.poll() is None else None]:
            if p is not None and p.is_running():
                p.kill()
