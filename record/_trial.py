"""One trial's record: ``trial.json`` (who it is and how it ended) and ``epochs.jsonl`` (its metrics).

``trial.json`` is replaced whole (written to a temporary file, then renamed), so a reader sees the old
or the new document, never half of one. Each epoch is one JSON line appended with a single ``write`` to a
file opened with ``O_APPEND``; a line cut short by a crash has no newline, and readers skip it.

Fields of ``trial.json``: ``trial_id``, ``study``, ``phase``, ``cell``, ``setting``, ``seed``,
``config`` (the flat trial config with its ``meta.*`` keys), ``status`` (a
:class:`record.TrialStatus`: Tune's words, or ABANDONED, see :func:`abandon_trials`), ``stop_reason`` (a
:class:`record.StopReason`) and ``stop_rung``, ``epochs_planned``,
``node_id``, ``hostname``, ``error`` (the exception line of a failed trial), ``wall_s``, ``artifacts``,
``updated`` (Unix time).
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Mapping
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


def write_trial(folder: Path, fields: Mapping[str, Any]) -> dict[str, Any]:
    """Write ``trial.json`` in ``folder`` (made if missing) with exactly ``fields`` (and ``updated``),
    atomically; returns what was written."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    doc = {key: _plain(value) for key, value in fields.items()}
    doc["updated"] = time.time()
    tmp = folder / f".{TRIAL_FILE}.{os.getpid()}.tmp"
    tmp.write_text(json.dumps(doc, default=str), encoding="utf-8")
    os.replace(tmp, folder / TRIAL_FILE)
    return doc


def read_trial(folder: Path) -> dict[str, Any] | None:
    """The ``trial.json`` of ``folder``, or ``None`` when it is missing or unreadable."""
    try:
        doc = json.loads((Path(folder) / TRIAL_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return doc if isinstance(doc, dict) else None


def update_trial(folder: Path, **fields: Any) -> dict[str, Any]:
    """Merge ``fields`` into the trial's ``trial.json`` (made if missing); returns the new document."""
    return write_trial(folder, {**(read_trial(folder) or {}), **fields})


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


def study_trials(study_dir: Path) -> list[tuple[Path, dict[str, Any]]]:
    """Each trial of a study with its ``trial.json``, by trial id: the trials that count.

    Left out: folders without a readable ``trial.json``, and abandoned trials (see :func:`abandon_trials`).
    """
    out = []
    for folder in trial_folders(study_dir):
        doc = read_trial(folder)
        if doc is not None and doc.get("trial_id") and doc.get("status") != ABANDONED:
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
        if doc.get("phase", Phase.SEARCH) == phase and str(doc["trial_id"]) not in known:
            update_trial(folder, status=TrialStatus.ABANDONED, stop_reason=StopReason.ABANDONED,
                         error="started by a driver that was killed before Tune saved it; Tune ran the work "
                               "again as another trial")
            marked.append(str(doc["trial_id"]))
    return marked
