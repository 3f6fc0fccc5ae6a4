"""Processes a study starts, and ending them: none may outlive the driver that started it.

* A server the CLI starts (``ocr-study ui``'s ``mlflow server`` and its workers) runs in its own session
  and process group, and the whole group is ended when the command ends: normally, by Ctrl-C or SIGTERM.
* The local Ray of a study is started by Ray itself; right after it starts, the driver records the
  processes it made (its descendants: GCS, raylet, agents, ...) in the study's folder, with their create
  times. At exit (normal, Ctrl-C, SIGTERM) the driver ends those still running. A driver killed with
  SIGKILL can do nothing; the next ``resume`` of the same study ends what it left, by the recorded PIDs,
  and only processes whose create time still matches (a reused PID is another process).
"""

from __future__ import annotations

import atexit
import contextlib
import json
import logging
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import psutil

from record import failpoint

log = logging.getLogger(__name__)
PROCESSES_FILE = "processes.json"
GRACE_S = 5.0  # between SIGTERM and SIGKILL
_CREATE_TIME_SLACK_S = 1.0
_RECORD_AGAIN_S = (3.0, 15.0)  # Ray's agents start a moment after ray.init returns
_recorded: dict[Path, list[dict[str, Any]]] = {}


def exit_on_sigterm() -> None:
    """Turn SIGTERM into ``SystemExit(143)`` in the main thread, so ``finally`` blocks and atexit run."""

    def handler(signum: int, frame: Any) -> None:
        raise SystemExit(128 + signum)

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, handler)


def end_processes(procs: Sequence[psutil.Process], grace: float = GRACE_S) -> int:
    """SIGTERM ``procs``, SIGKILL those still alive after ``grace`` seconds; returns how many were ended."""
    alive = []
    for proc in procs:
        with contextlib.suppress(psutil.NoSuchProcess, psutil.AccessDenied):
            proc.terminate()
            alive.append(proc)
    _, still = psutil.wait_procs(alive, timeout=grace)
    for proc in still:
        with contextlib.suppress(psutil.NoSuchProcess, psutil.AccessDenied):
            proc.kill()
    psutil.wait_procs(still, timeout=grace)
    return len(alive)


def end_group(proc: subprocess.Popen[Any], grace: float = GRACE_S) -> None:
    """End the process group led by ``proc`` (started with ``start_new_session=True``): SIGTERM, then
    SIGKILL after ``grace`` seconds for whatever of the group is left."""
    try:
        members = [p for p in psutil.process_iter() if _pgid(p.pid) == proc.pid]
        os.killpg(proc.pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=grace)
    _, still = psutil.wait_procs(members, timeout=grace)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=grace)
    psutil.wait_procs(still, timeout=grace)


def _pgid(pid: int) -> int | None:
    try:
        return os.getpgid(pid)
    except (ProcessLookupError, PermissionError):
        return None


def call_in_own_group(cmd: Sequence[str], env: Mapping[str, str]) -> int:
    """Run ``cmd`` in its own session and process group until it exits; on Ctrl-C, SIGTERM or any
    error here, end its whole group. Returns its exit code (0 after Ctrl-C).

    The failpoint ``processes.group-waiting`` (``pid``) marks the moment it waits for the command."""
    exit_on_sigterm()
    proc = subprocess.Popen(list(cmd), env=dict(env), start_new_session=True)
    try:
        failpoint("processes.group-waiting", pid=proc.pid)
        return proc.wait()
    except KeyboardInterrupt:
        return 0
    finally:
        end_group(proc)


def _entry(proc: psutil.Process) -> dict[str, Any] | None:
    try:
        return {"pid": proc.pid, "create_time": proc.create_time(), "name": proc.name()}
    except psutil.NoSuchProcess:
        return None


def record_started(folder: Path) -> None:
    """Record this driver's descendants (the local Ray it just started) in ``folder``, now and a little
    later (Ray starts some agents after ``ray.init`` returns); end them at exit."""
    _recorded[folder] = []
    _record(folder)
    for delay in _RECORD_AGAIN_S:
        timer = threading.Timer(delay, _record, args=(folder,))
        timer.daemon = True
        timer.start()


def record_again() -> None:
    """Record the descendants started since (a trial's start calls it: Ray's workers and agents are up)."""
    for folder in list(_recorded):
        _record(folder)


def _record(folder: Path) -> None:
    if folder not in _recorded:  # ended already
        return
    known = {(e["pid"], e["create_time"]) for e in _recorded[folder]}
    for child in psutil.Process().children(recursive=True):
        entry = _entry(child)
        if entry and (entry["pid"], entry["create_time"]) not in known:
            _recorded[folder].append(entry)
    me = _entry(psutil.Process())
    doc = {"driver": me, "started": _recorded[folder]}
    tmp = folder / f".{PROCESSES_FILE}.tmp"
    with contextlib.suppress(OSError):  # the folder may be gone (a test cleaning up)
        tmp.write_text(json.dumps(doc, indent=1))
        tmp.replace(folder / PROCESSES_FILE)


def _still_running(entries: Sequence[dict[str, Any]]) -> list[psutil.Process]:
    """The recorded processes that are still the same processes (PID and create time)."""
    found = []
    for entry in entries:
        try:
            proc = psutil.Process(int(entry["pid"]))
            if abs(proc.create_time() - float(entry["create_time"])) <= _CREATE_TIME_SLACK_S and \
                    proc.status() != psutil.STATUS_ZOMBIE and proc.pid != os.getpid():
                found.append(proc)
        except (psutil.NoSuchProcess, psutil.AccessDenied, KeyError, TypeError, ValueError):
            continue
    return found


def end_recorded(folder: Path) -> int:
    """End what the study's driver recorded in ``folder`` and is still running; forget the record.

    Used by ``resume`` for what a dead driver left, and by a driver at its own exit. Returns how many
    processes were ended.
    """
    entries = _recorded.pop(folder, None)
    if entries is None:
        try:
            entries = json.loads((folder / PROCESSES_FILE).read_text()).get("started", [])
        except (OSError, ValueError, AttributeError):
            entries = []
    ended = end_processes(_still_running(entries or []))
    (folder / PROCESSES_FILE).unlink(missing_ok=True)
    if ended:
        log.warning("ended %d processes a driver of study %s left running", ended, folder.name)
    return ended


@atexit.register
def _end_at_exit() -> None:
    """Stop Ray (if this driver started it) and end what is left of the recorded processes."""
    if not _recorded:
        return
    ray = sys.modules.get("ray")
    if ray is not None:
        with contextlib.suppress(Exception):
            ray.shutdown()
    for folder in list(_recorded):
        with contextlib.suppress(Exception):
            end_recorded(folder)
