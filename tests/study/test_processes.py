"""Processes the project starts end with it; leftovers are ended by recorded PID and create time only."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from study.failures import FATAL_KEY, FailFast, failure_reasons, fatal_report
from study.processes import PROCESSES_FILE, end_recorded

ROOT = Path(__file__).parents[2]


@pytest.fixture
def sleepers() -> Iterator[list[subprocess.Popen[bytes]]]:
    started: list[subprocess.Popen[bytes]] = []
    yield started
    for proc in started:
        proc.kill()
        proc.wait()


def _sleeper(started: list[subprocess.Popen[bytes]]) -> psutil.Process:
    proc = subprocess.Popen(["sleep", "120"])
    started.append(proc)
    return psutil.Process(proc.pid)


def test_resume_ends_only_the_recorded_processes_that_are_still_the_same(
        tmp_path: Path, sleepers: list[subprocess.Popen[bytes]]) -> None:
    left, reused = _sleeper(sleepers), _sleeper(sleepers)
    record = {"driver": {"pid": 1, "create_time": 0.0, "name": "gone"}, "started": [
        {"pid": left.pid, "create_time": left.create_time(), "name": "sleep"},
        {"pid": reused.pid, "create_time": reused.create_time() - 1000, "name": "sleep"},  # a reused PID
        {"pid": 2 ** 22 + 7, "create_time": 0.0, "name": "long gone"},
    ]}
    (tmp_path / PROCESSES_FILE).write_text(json.dumps(record))
    assert end_recorded(tmp_path) == 1
    assert not left.is_running() or left.status() == psutil.STATUS_ZOMBIE
    assert reused.is_running() and reused.status() != psutil.STATUS_ZOMBIE
    assert not (tmp_path / PROCESSES_FILE).exists()
    assert end_recorded(tmp_path) == 0  # nothing recorded: nothing to do


# Ctrl-C as a terminal delivers it: a command started in the background of a non-interactive shell (as a
# test run may be) inherits SIGINT ignored, and Python then keeps it ignored
GROUP = """
import os, signal, sys
signal.signal(signal.SIGINT, signal.default_int_handler)
from study.processes import call_in_own_group
sys.exit(call_in_own_group(["sh", "-c", "sleep 300 & sleep 300 & wait"], os.environ))
"""


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_a_server_started_in_its_own_group_ends_with_the_command(sig: signal.Signals, tmp_path: Path) -> None:
    """The signal comes once the command waits for its server (failpoint ``processes.group-waiting``) and the
    server's shell has started both its children; then the whole group ends."""
    from record import FAILPOINT_DIR_ENV, FAILPOINTS_ENV, fired

    env = {**os.environ, FAILPOINTS_ENV: "processes.group-waiting=sleep(0)", FAILPOINT_DIR_ENV: str(tmp_path)}
    proc = subprocess.Popen([sys.executable, "-c", GROUP], cwd=ROOT, env=env)
    children: list[psutil.Process] = []
    try:
        end = time.monotonic() + 300  # a guard only: the loop waits for events
        while (len(children) < 3 or not fired(tmp_path)) and time.monotonic() < end:  # sh and its two sleeps
            time.sleep(0.2)
            children = psutil.Process(proc.pid).children(recursive=True)
        assert len(children) == 3 and fired(tmp_path)
        assert {os.getpgid(c.pid) for c in children} == {children[0].pid} != {os.getpgid(proc.pid)}
        proc.send_signal(sig)
        proc.wait(timeout=120)
        _, alive = psutil.wait_procs(children, timeout=5)
        assert not alive
    finally:
        for child in children:
            if child.is_running():
                child.kill()
        proc.kill()
        proc.wait()


class _Trial:
    trial_id = "t1"
    max_failures = 2


def test_a_fatal_report_stops_retries_and_a_normal_one_does_not() -> None:
    trial, callback = _Trial(), FailFast()
    callback.on_trial_result(0, [], trial, {"epoch": 1, "val_miou": 0.5})
    assert trial.max_failures == 2
    report = fatal_report({"epoch": 1, "val_miou": 0.5}, ValueError("bad data"))
    assert report == {"epoch": 1, "val_miou": 0.5, FATAL_KEY: "ValueError: bad data"}
    callback.on_trial_result(0, [], trial, report)
    assert trial.max_failures == 0


def test_failure_reasons_are_counted() -> None:
    rows = [{"status": "ERROR", "error": "E: a"}, {"status": "ERROR", "error": "E: a"},
            {"status": "ERROR", "error": ""}, {"status": "TERMINATED", "error": ""}]
    assert failure_reasons(rows) == [("E: a", 2), ("unknown error (see the trial's error.txt)", 1)]
