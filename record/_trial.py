"""One trial's record: ``trial.json`` (who it is and how it ended) and ``epochs.jsonl`` (its metrics).

``trial.json`` is a :class:`TrialDoc`, written only by :func:`write_trial` / :func:`update_trial` and
read only by :func:`read_trial`. It is replaced whole (written to a temporary file, then renamed), so a
reader sees the old or the new document, never half of one. Each epoch is one JSON line appended with a
single ``write`` to a file opened with ``O_APPEND``; a line cut short by a crash has no newline, and
readers skip it.

Fields of ``trial.json``: ``trial_id``, ``study``, ``phase``, ``cell``, ``setting``, ``seed``,
``config`` (the flat trial config with its ``meta.*`` keys), ``status`` (a
:class:`record.TrialStatus`: Tune's words, or ABANDONED, see :func:`abandon_trials`), ``stop_reason`` (a
:class:`record.StopReason`) and ``stop_rung``, ``epochs`` and ``epochs_planned``,
``node_id``, ``hostname``, ``error`` (the exception line of a failed trial), ``wall_s``, ``artifacts``,
``updated`` (Unix time).
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from record._layout import EPOCHS_FILE, TRIAL_FILE, trial_folders
from record._vocab import Phase, StopReason, TrialStatus

ABANDONED = TrialStatus.ABANDONED


def _plain(value: Any) -> Any:
    """JSON has no NaN or infinity: those become ``None``."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


@dataclass(frozen=True)
class TrialDoc:
    """A trial's ``trial.json`` (see the module's docstring); ``status``, ``stop_reason`` and ``phase`` are
    the record's words (a wrong word is a ``ValueError`` naming the field)."""

    trial_id: str
    study: str | None = None
    phase: Phase = Phase.SEARCH
    cell: str | None = None
    setting: int | None = None
    seed: int | None = None
    config: dict[str, Any] = field(default_factory=dict)
    status: TrialStatus = TrialStatus.RUNNING
    stop_reason: StopReason | None = None  # None: not recorded (a record from before the driver wrote it)
    stop_rung: int | None = None
    epochs: int | None = None
    epochs_planned: int | None = None
    node_id: str | None = None
    hostname: str | None = None
    error: str | None = None
    wall_s: float | None = None
    artifacts: str | None = None
    updated: float | None = None

    def __post_init__(self) -> None:
        for name, kind in (("phase", Phase), ("status", TrialStatus), ("stop_reason", StopReason)):
            value = getattr(self, name)
            if value is None and name == "stop_reason":
                continue
            try:
                object.__setattr__(self, name, kind(value))
            except ValueError as err:
                raise ValueError(f"trial.json {name}: {value!r} is none of {[str(v) for v in kind]}") from err
        if not self.trial_id or not isinstance(self.trial_id, str):
            raise ValueError(f"trial.json trial_id: {self.trial_id!r} is no trial id")

    def to_json(self) -> dict[str, Any]:
        """The document as JSON data (NaN and infinity as ``null``)."""
        doc = dataclasses.asdict(self)
        return {key: _plain(value) for key, value in doc.items()}

    @classmethod
    def from_json(cls, doc: Mapping[str, Any]) -> TrialDoc:
        """The document of JSON data (keys it does not know are ignored: a newer writer's additions)."""
        return cls(**{k: v for k, v in doc.items() if k in FIELDS})


FIELDS = frozenset(f.name for f in dataclasses.fields(TrialDoc))


def write_trial(folder: Path, doc: TrialDoc) -> TrialDoc:
    """Write ``doc`` as ``trial.json`` in ``folder`` (made if missing), with ``updated`` set to now,
    atomically; returns what was written."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    doc = dataclasses.replace(doc, updated=time.time())
    tmp = folder / f".{TRIAL_FILE}.{os.getpid()}.tmp"
    tmp.write_text(json.dumps(doc.to_json(), default=str), encoding="utf-8")
    os.replace(tmp, folder / TRIAL_FILE)
    return doc


def read_trial(folder: Path) -> TrialDoc | None:
    """The ``trial.json`` of ``folder``, or ``None`` when it is missing or does not hold a trial's record."""
    try:
        doc = json.loads((Path(folder) / TRIAL_FILE).read_text(encoding="utf-8"))
        return TrialDoc.from_json(doc) if isinstance(doc, dict) else None
    except (OSError, ValueError, TypeError):
        return None


def update_trial(folder: Path, **fields: Any) -> TrialDoc:
    """Set ``fields`` in the trial's ``trial.json`` (made from them if missing); returns the new document.

    Raises ``TypeError`` naming a field ``trial.json`` does not have.
    """
    unknown = sorted(set(fields) - FIELDS)
    if unknown:
        raise TypeError(f"trial.json has no field {unknown}; its fields: {sorted(FIELDS)}")
    old = read_trial(folder)
    base = old.to_json() if old is not None else {}
    return write_trial(folder, TrialDoc.from_json({**base, **fields}))


def append_epoch(folder: Path, metrics: Mapping[str, Any]) -> None:
    """Append one epoch's metrics as a JSON line of ``epochs.jsonl`` (one ``write``, ``O_APPEND``)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    line = (json.dumps({k: _plain(v) for k, v in metrics.items()}, default=str) + "\n").encode("utf-8")
    fd = os.open(folder / EPOCHS_FILE, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line)
    finally:
        os.close(fd)


def complete_lines(data: bytes) -> bytes:
    """``data`` up to its last newline: a line still being written (or cut by a crash) is left out."""
    return data[: data.rfind(b"\n") + 1]


def read_epochs(folder: Path) -> list[dict[str, Any]]:
    """Every complete line of the trial's ``epochs.jsonl``, in order (an epoch run twice appears twice)."""
    try:
        return parse_lines(complete_lines((Path(folder) / EPOCHS_FILE).read_bytes()))
    except FileNotFoundError:
        return []


def read_last_epochs(folder: Path, max_bytes: int = 1 << 16) -> list[dict[str, Any]]:
    """The complete lines of the trial's ``epochs.jsonl`` within its last ``max_bytes`` (the line cut at
    the start of that window left out): the latest epochs without reading a long record whole."""
    try:
        with open(Path(folder) / EPOCHS_FILE, "rb") as f:
            size = f.seek(0, os.SEEK_END)
            f.seek(max(0, size - max_bytes))
            data = f.read()
    except FileNotFoundError:
        return []
    if size > max_bytes:
        data = data[data.find(b"\n") + 1:]
    return parse_lines(complete_lines(data))


def parse_lines(data: bytes) -> list[dict[str, Any]]:
    """The JSON objects of ``data``, one a line; a line that does not parse is skipped."""
    rows = []
    for line in data.splitlines():
        try:
            row = json.loads(line)
        except ValueError:
            continue
        if isinstance(row, dict):
            rows.append(row)
    return rows


def study_trials(study_dir: Path) -> list[tuple[Path, TrialDoc]]:
    """Each trial of a study with its ``trial.json``, by trial id: the trials that count.

    Left out: folders without a readable ``trial.json``, and abandoned trials (see :func:`abandon_trials`).
    """
    out = []
    for folder in trial_folders(study_dir):
        doc = read_trial(folder)
        if doc is not None and doc.status != TrialStatus.ABANDONED:
            out.append((folder, doc))
    return out


def abandon_trials(study_dir: Path, phase: str, known: set[str]) -> list[str]:
    """Mark as ABANDONED the trials of ``phase`` that Tune's finished experiment does not hold.

    A driver killed after Tune started a trial but before Tune saved its experiment state leaves that
    trial's record behind; on resume Tune plans the same work again under a new trial id. The old record
    is kept (for its logs) but no longer counts. Returns the ids marked.
    """
    marked = []
    for folder, doc in study_trials(study_dir):
        if doc.phase == phase and doc.trial_id not in known:
            update_trial(folder, status=TrialStatus.ABANDONED, stop_reason=StopReason.ABANDONED,
                         error="started by a driver that was killed before Tune saved it; Tune ran the work "
                               "again as another trial")
            marked.append(doc.trial_id)
    return marked
