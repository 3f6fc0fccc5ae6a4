"""Running the real CLI in child processes for fault tests: failpoints armed in their environment, every
process they start ended by PID afterwards.

A fault happens at a named failpoint (:mod:`record._failpoints`), never at a moment found by polling: the
tests wait for events (a process exits, a failpoint's firing is written), never for a moment.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import psutil
import pytest
import yaml

from record import FAILPOINT_DIR_ENV, FAILPOINTS_ENV, fired
from study.spec import StudySpec, load_spec
from tests.study.test_tune_study import tiny_doc

OCR_STUDY = str(Path(sys.executable).parent / "ocr-study")
EPOCHS = 4


def spec_file(tmp_path: Path, cache: Path, epochs: int = EPOCHS, **overrides: Any) -> tuple[Path, StudySpec]:
    """The tiny study as a YAML file (``epochs`` segmentation epochs of 3 steps each), and its spec."""
    doc = tiny_doc(tmp_path, cache, **overrides)
    doc["trial"]["seg.epochs"] = epochs
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path, load_spec(doc)


class Processes:
    """Starts CLI commands with their own Ray temp folder and the failpoints given, and ends every process
    they made, by PID."""

    def __init__(self, tmp_path: Path, failpoints: str = "", **env: str) -> None:
        self.ray_tmp = Path("/tmp") / f"ocr-faults-{os.getpid()}-{time.time_ns() % 10**8}"
        self.fired_dir = tmp_path / "failpoints"
        self.env = {**os.environ, "RAY_TMPDIR": str(self.ray_tmp), FAILPOINTS_ENV: failpoints,
                    FAILPOINT_DIR_ENV: str(self.fired_dir), **env}
        self.cwd = tmp_path
        self.seen: dict[int, psutil.Process] = {}

    def start(self, *args: str, armed: bool = True) -> subprocess.Popen[str]:
        """``ocr-study ARGS``; ``armed=False`` leaves the failpoints out of its environment."""
        env = self.env if armed else {**self.env, FAILPOINTS_ENV: ""}
        proc = subprocess.Popen([OCR_STUDY, *args], cwd=self.cwd, env=env, text=True,
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        self.seen[proc.pid] = psutil.Process(proc.pid)
        return proc

    def fired(self, name: str | None = None) -> list[dict[str, Any]]:
        """The failpoints that fired in these processes (see :func:`record.fired`)."""
        return fired(self.fired_dir, name)

    def track(self) -> None:
        """Remember every live descendant of the started commands and every process of our Ray folder."""
        for root in list(self.seen.values()):
            with contextlib.suppress(psutil.NoSuchProcess):
                for child in root.children(recursive=True):
                    self.seen.setdefault(child.pid, child)
        for proc in psutil.process_iter(["cmdline"]):
            if any(str(self.ray_tmp) in part for part in proc.info["cmdline"] or []):
                self.seen.setdefault(proc.pid, proc)

    def ray_processes(self) -> list[int]:
        """PIDs of live processes of this Ray (its temp folder is on their command lines)."""
        return [proc.pid for proc in psutil.process_iter(["cmdline", "status"])
                if proc.info["status"] != psutil.STATUS_ZOMBIE
                and any(str(self.ray_tmp) in part for part in proc.info["cmdline"] or [])]

    def kill_all(self) -> None:
        self.track()
        for proc in self.seen.values():
            with contextlib.suppress(psutil.NoSuchProcess):
                proc.send_signal(signal.SIGKILL)
        psutil.wait_procs(list(self.seen.values()), timeout=30)


def wait_for_fired(procs: Processes, name: str, proc: subprocess.Popen[str], timeout: float = 600) -> dict[str, Any]:
    """Wait until failpoint ``name`` has fired (its record is written before it acts), while ``proc`` lives.

    The wait is for an event; the timeout only keeps a broken build from hanging CI.
    """
    end = time.monotonic() + timeout
    while not procs.fired(name):
        procs.track()
        if proc.poll() is not None:
            out = proc.stdout.read() if proc.stdout else ""
            pytest.fail(f"the command ended before failpoint {name} fired:\n{out}")
        if time.monotonic() > end:
            pytest.fail(f"failpoint {name} did not fire within {timeout:.0f} s")
        time.sleep(0.1)
    procs.track()
    return procs.fired(name)[0]


def killed_by_failpoint(proc: subprocess.Popen[str], procs: Processes, name: str, timeout: float = 600) -> str:
    """Wait for ``proc`` to end by SIGKILL at failpoint ``name``; returns its output."""
    procs.track()
    out, _ = proc.communicate(timeout=timeout)
    assert proc.returncode == -signal.SIGKILL, f"exit {proc.returncode}, not killed at {name}:\n{out}"
    record = procs.fired(name)
    assert record and record[0]["pid"] == proc.pid, f"failpoint {name} did not fire in the driver: {record}"
    return out


def finish(proc: subprocess.Popen[str], timeout: float = 600) -> str:
    out, _ = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, out
    return out


def mlflow_trial_runs(spec: StudySpec) -> Any:
    import mlflow

    mlflow.set_tracking_uri(spec.tracking_uri)
    runs = mlflow.search_runs(experiment_names=[spec.name])
    return runs[runs["tags.ocr_study.role"] != "study"]


@pytest.fixture
def procs(tmp_path: Path) -> Any:
    """:class:`Processes` made by the test (``procs(failpoints)``); all of them are ended afterwards and
    none may be left running."""
    made: list[Processes] = []

    def make(failpoints: str = "") -> Processes:
        made.append(Processes(tmp_path, failpoints))
        return made[-1]

    yield make
    for p in made:
        p.kill_all()
        alive = [q.pid for q in p.seen.values() if q.is_running() and q.status() != psutil.STATUS_ZOMBIE]
        assert not alive, f"processes left running: {alive}"
