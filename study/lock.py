"""One driver per study: a lock file in the study's folder naming the process that holds it.

``run`` and ``resume`` take the lock for the driver's whole life and release it at exit. A lock whose
holder is gone (its pid dead on this host, or reused by another process) is stale and is replaced; a
live holder makes ``run``, ``run --fresh`` and ``resume`` refuse, naming it, before anything is changed.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import logging
import os
import shutil
import socket
import time
from dataclasses import dataclass
from pathlib import Path

import psutil

log = logging.getLogger(__name__)
LOCK_FILE = "study.lock"
_CREATE_TIME_SLACK_S = 1.0  # psutil's create time is rounded to the clock tick
_held: dict[Path, Holder] = {}


class StudyLockedError(ValueError):
    """The study is held by a live driver; the message names it (the CLI exits 2)."""


@dataclass(frozen=True)
class Holder:
    """Who holds a study: process id, host, the process's create time and when it took the lock."""

    pid: int
    host: str
    create_time: float
    started: float

    @classmethod
    def me(cls) -> Holder:
        """This process, now."""
        return cls(os.getpid(), socket.gethostname(), psutil.Process().create_time(), time.time())

    def alive(self) -> bool:
        """Whether the holder still runs. On another host it cannot be checked, so it counts as alive."""
        if self.host != socket.gethostname():
            return True
        try:
            proc = psutil.Process(self.pid)
            return (abs(proc.create_time() - self.create_time) <= _CREATE_TIME_SLACK_S
                    and proc.status() != psutil.STATUS_ZOMBIE)
        except psutil.NoSuchProcess:
            return False

    def same_process(self, other: Holder) -> bool:
        """Whether both name the same process (a pid is reused only with another create time)."""
        return (self.pid, self.host) == (other.pid, other.host) and \
            abs(self.create_time - other.create_time) <= _CREATE_TIME_SLACK_S

    def describe(self) -> str:
        """``pid 123 on host h (since 2026-01-01 10:00:00 UTC)``."""
        since = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(self.started))
        return f"pid {self.pid} on host {self.host} (since {since})"


def read_holder(folder: Path) -> Holder | None:
    """The holder named in ``folder``'s lock file; ``None`` without one (or with an unreadable one)."""
    try:
        doc = json.loads((folder / LOCK_FILE).read_text())
        return Holder(int(doc["pid"]), str(doc["host"]), float(doc["create_time"]), float(doc["started"]))
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _settled_holder(folder: Path) -> Holder | None:
    """The holder, read again after a moment when the file is unreadable (it may be being written)."""
    holder = read_holder(folder)
    if holder is None and (folder / LOCK_FILE).exists():
        time.sleep(0.1)
        holder = read_holder(folder)
    return holder


def _locked_message(folder: Path, holder: Holder) -> str:
    return (f"study {folder.name!r} is in use by {holder.describe()}: wait for it to end or stop it first "
            f"(nothing was changed). If that process is gone, delete {folder / LOCK_FILE}")


def _try_create(path: Path, me: Holder) -> bool:
    try:
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    except FileExistsError:
        return False
    with os.fdopen(fd, "w") as out:
        json.dump({"pid": me.pid, "host": me.host, "create_time": me.create_time, "started": me.started}, out)
    return True


def acquire(folder: Path) -> None:
    """Take the study's lock for this process until it exits (re-entrant); a stale lock is replaced.

    Raises:
        StudyLockedError: another live process holds it.
    """
    folder.mkdir(parents=True, exist_ok=True)
    path, me = folder / LOCK_FILE, Holder.me()
    for _ in range(3):
        if _try_create(path, me):
            _held[folder] = me
            return
        holder = _settled_holder(folder)
        if holder is not None and holder.same_process(me):
            _held[folder] = holder
            return
        if holder is not None and holder.alive():
            raise StudyLockedError(_locked_message(folder, holder))
        if _settled_holder(folder) != holder:  # another driver replaced it meanwhile: look again
            continue
        log.warning("replacing the stale lock of study %s (%s)", folder.name,
                    holder.describe() + " is gone" if holder else "unreadable")
        path.unlink(missing_ok=True)
    raise StudyLockedError(f"could not take the lock {path}: other processes keep taking it")


def release(folder: Path) -> None:
    """Give the study's lock back, if this process holds it."""
    me = _held.pop(folder, None)
    holder = read_holder(folder)
    if me is not None and holder is not None and holder.same_process(me):
        (folder / LOCK_FILE).unlink(missing_ok=True)


@atexit.register
def _release_all() -> None:
    for folder in list(_held):
        with contextlib.suppress(OSError):
            release(folder)


def clear_folder(folder: Path) -> None:
    """Delete everything in a study's folder but its lock (``run --fresh``, with the lock held)."""
    for entry in folder.iterdir():
        if entry.name == LOCK_FILE:
            continue
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry)
        else:
            entry.unlink()
