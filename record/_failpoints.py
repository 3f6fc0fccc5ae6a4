"""Failpoints: named places in the code where a test makes a fault happen, not a moment found by polling.

After etcd's gofail and FreeBSD's fail(9): the code calls ``failpoint("driver.trial-started", **context)``
at the places faults matter, and a test names the place, a condition and an action in the environment::

    OCR_STUDY_FAILPOINTS="train.mid-epoch[stage=seg,epoch=3]=kill; driver.trial-result[phase=confirm]=pause"

- ``name[cond,...]=action``, several separated by ``;``. A condition is ``key=value`` or ``key>=number``,
  matched against the keywords the call site passes (a missing key never matches).
- actions: ``kill`` (the process sends itself SIGKILL: nothing runs after it), ``raise``
  (:class:`FailpointError`), ``exit(CODE)`` (``os._exit``), ``pause`` (blocks until the process is killed),
  ``sleep(SECONDS)``, ``return`` (:func:`failpoint` returns True and the caller makes its own fault, e.g. a
  NaN loss).
- ``N*action`` fires at most N times, ``*action`` every time; a bare action fires once. Where
  ``OCR_STUDY_FAILPOINT_DIR`` names a folder, firings are counted across processes (a retried trial, a
  resumed driver) by one file per firing there, written before the action (so a test reads what fired and
  where with :func:`fired`); without it, per process.

Unset (normal use), :func:`failpoint` returns at its first line: the specification is read once, when
this module is imported, so a process inherits it from its parent's environment (Ray's workers from the
driver that started Ray). :func:`configure` re-reads it for tests in one process.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

FAILPOINTS_ENV = "OCR_STUDY_FAILPOINTS"
FAILPOINT_DIR_ENV = "OCR_STUDY_FAILPOINT_DIR"
ACTIONS = ("kill", "raise", "exit", "pause", "sleep", "return")
_TERM = re.compile(r"^\s*(?P<name>[\w.:-]+)\s*(?:\[(?P<cond>[^\]]*)\])?\s*=\s*(?P<count>\d*\*)?\s*"
                   r"(?P<action>[a-z]+)(?:\((?P<arg>[^)]*)\))?\s*$")
_COND = re.compile(r"^\s*(?P<key>\w+)\s*(?P<op>>=|=)\s*(?P<value>[^\s]+)\s*$")


class FailpointError(RuntimeError):
    """Raised by a failpoint whose action is ``raise``."""


@dataclass(frozen=True)
class Failpoint:
    """One term of the specification: where, when, what, and how many times."""

    name: str
    conditions: tuple[tuple[str, str, str], ...]  # (key, "=" or ">=", value)
    action: str
    arg: str = ""
    times: int | None = 1  # None: every time

    def matches(self, context: dict[str, Any]) -> bool:
        """Whether every condition holds for the keywords of one call."""
        for key, op, value in self.conditions:
            if key not in context:
                return False
            if op == "=" and not _equal(context[key], value):
                return False
            if op == ">=" and not float(context[key]) >= float(value):
                return False
        return True


def _equal(given: Any, value: str) -> bool:
    """``given`` (a keyword of the call) equals ``value`` (the condition's text); numbers as numbers, so
    that ``epoch=1`` matches an epoch reported as ``1.0``."""
    if str(given) == value:
        return True
    try:
        return not isinstance(given, bool) and float(given) == float(value)
    except (TypeError, ValueError):
        return False


def parse(spec: str) -> dict[str, list[Failpoint]]:
    """The failpoints of a specification string, by name; ``ValueError`` names a malformed term."""
    points: dict[str, list[Failpoint]] = {}
    for term in filter(str.strip, spec.split(";")):
        match = _TERM.match(term)
        if not match or match["action"] not in ACTIONS:
            raise ValueError(f"{FAILPOINTS_ENV}: cannot read {term.strip()!r}: write name[key=value,...]=action "
                             f"with an action of {list(ACTIONS)}, e.g. 'train.mid-epoch[epoch=3]=kill'")
        conditions = []
        for cond in filter(str.strip, (match["cond"] or "").split(",")):
            found = _COND.match(cond)
            if not found:
                raise ValueError(f"{FAILPOINTS_ENV}: condition {cond.strip()!r} of {match['name']!r} is not "
                                 "key=value or key>=number")
            conditions.append((found["key"], found["op"], found["value"]))
        count = match["count"]
        times = 1 if count is None else (None if count == "*" else int(count[:-1]))
        point = Failpoint(match["name"], tuple(conditions), match["action"], (match["arg"] or "").strip(), times)
        points.setdefault(point.name, []).append(point)
    return points


_POINTS: dict[str, list[Failpoint]] = {}
_FIRED_HERE: dict[Failpoint, int] = {}


def configure(spec: str | None = None) -> None:
    """(Re)read the specification: ``spec``, or the environment's ``OCR_STUDY_FAILPOINTS``."""
    global _POINTS
    _POINTS = parse(os.environ.get(FAILPOINTS_ENV, "") if spec is None else spec)
    _FIRED_HERE.clear()


def failpoint(name: str, /, **context: Any) -> bool:
    """The failpoint ``name``: does what the specification says for it, if anything matches ``context``.

    Returns True only when a ``return`` action fired; every other action acts here (or never returns).
    """
    if not _POINTS:
        return False
    for point in _POINTS.get(name, ()):
        if point.matches(context) and _claim(point, context):
            return _act(point)
    return False


def _claim(point: Failpoint, context: dict[str, Any]) -> bool:
    """Take one of the point's firings: across processes through the firing folder, else in this one."""
    folder = os.environ.get(FAILPOINT_DIR_ENV)
    if not folder:
        seen = _FIRED_HERE.get(point, 0)
        if point.times is not None and seen >= point.times:
            return False
        _FIRED_HERE[point] = seen + 1
        return True
    root = Path(folder)
    root.mkdir(parents=True, exist_ok=True)
    record = json.dumps({"name": point.name, "action": point.action, "pid": os.getpid(), "time": time.time(),
                         "context": {k: v if isinstance(v, (int, float, bool)) else str(v)
                                     for k, v in context.items()}})
    tags = [uuid.uuid4().hex] if point.times is None else [str(i) for i in range(point.times)]
    for tag in tags:
        try:
            fd = os.open(root / f"{point.name}.{tag}.json", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            continue
        with os.fdopen(fd, "w") as out:
            out.write(record)
            out.flush()
            os.fsync(out.fileno())
        return True
    return False


def _act(point: Failpoint) -> bool:
    if point.action == "return":
        return True
    if point.action == "kill":
        os.kill(os.getpid(), signal.SIGKILL)
    if point.action == "exit":
        os._exit(int(point.arg or 1))
    if point.action == "raise":
        raise FailpointError(f"failpoint {point.name} fired")
    if point.action == "sleep":
        time.sleep(float(point.arg or 1))
        return False
    while True:  # pause: until the process is killed (SIGKILL, or SIGTERM's handler)
        time.sleep(3600)


def fired(folder: str | Path, name: str | None = None) -> list[dict[str, Any]]:
    """What fired, from a firing folder (``OCR_STUDY_FAILPOINT_DIR``), oldest first; only ``name``'s if given."""
    found = []
    for path in Path(folder).glob("*.json") if Path(folder).is_dir() else ():
        with contextlib.suppress(ValueError, OSError):
            doc = json.loads(path.read_text())
            if name is None or doc.get("name") == name:
                found.append(doc)
    return sorted(found, key=lambda d: float(d.get("time", 0)))


configure()
