"""Collect a study from its Ray Tune storage (the source of truth), without importing Ray.

What is read, in Tune 2.60's format: ``tune/experiment_state-*.json`` (each trial's status, folder and
error file; the newest file wins), and in each trial folder ``params.json`` (the flat config),
``result.json`` (one JSON object per report; a line still being written is skipped) and ``error.txt``.
Trials whose folder exists but which Tune has not yet saved in its state (a study still running) are
read from their folder alone, as running; trials in the state without a folder yet (pending) are read
from the state alone.
"""

from __future__ import annotations

import io
import json
import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.json as pa_json

from results._errors import ResultsError
from results._schema import write_dataset
from results._study_info import StudyInfo, read_spec_info
from results._summary import build_trials, clean_curves

log = logging.getLogger(__name__)
TUNE_DIR = "tune"
CONFIG_KEY = b', "config": {'
FOLDER_ID = re.compile(r"_([0-9a-f]{8}(?:_\d{5})?)_\d+_")
ANSI = re.compile(r"\x1b\[[0-9;]*m")
EXCEPTION_LINE = re.compile(r"^[A-Za-z_][\w.]*(Error|Exception|Interrupt|Exit|Failure)\b.*")
REPORT_FIELDS = ("trial_id", "time_total_s", "node_id", "hostname", "node_ip", "checkpoint_dir_name")


@dataclass(frozen=True)
class _State:
    status: str
    folder: str
    error_file: str | None
    config: dict[str, Any]


def _state_entry(entry: Any) -> tuple[str, _State] | None:
    try:
        info, runtime = json.loads(entry[0]), json.loads(entry[1])
    except (TypeError, IndexError, ValueError):
        return None
    config = info.get("config")
    return str(info["trial_id"]), _State(str(info.get("status", "PENDING")), str(info.get("relative_logdir") or ""),
                                         runtime.get("error_filename"), config if isinstance(config, dict) else {})


def read_states(tune_dir: Path) -> dict[str, _State]:
    """Trial id → status, folder and error file, from every experiment state (newest last, so it wins)."""
    states: dict[str, _State] = {}
    files = sorted(tune_dir.glob("experiment_state-*.json"), key=lambda p: (p.stat().st_mtime, p.name))
    for path in files:
        try:
            doc = json.loads(path.read_bytes())
        except (OSError, ValueError) as err:  # being rewritten by a running study: use the folders
            log.warning("skipping %s: %s", path, err)
            continue
        for entry in doc.get("trial_data", []):
            parsed = _state_entry(entry)
            if parsed is not None:
                states[parsed[0]] = parsed[1]
    return states


def _without_config(data: bytes) -> bytes:
    """Cut every ``, "config": {...}`` (flat: its first ``}`` closes it) out of the report lines.

    A config whose text holds a ``}`` leaves a line that does not parse; :func:`read_reports` then falls
    back to parsing line by line, where such a line is skipped.
    """
    out, pos, find = [], 0, data.find
    while True:
        start = find(CONFIG_KEY, pos)
        if start < 0:
            out.append(data[pos:])
            return b"".join(out)
        out.append(data[pos:start])
        pos = find(b"}", start) + 1 or len(data)


def _raw_lines(path: Path) -> bytes:
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return b""
    return data[: data.rfind(b"\n") + 1]


def _parse_python(paths: list[Path]) -> pd.DataFrame:
    rows = []
    for line in b"".join(_raw_lines(p) for p in paths).splitlines():
        try:
            row = json.loads(line)
        except ValueError:
            continue
        if isinstance(row, dict):
            row.pop("config", None)
            rows.append(row)
    return pd.DataFrame(rows)


def read_reports(paths: list[Path]) -> pd.DataFrame:
    """Every complete report line of these ``result.json`` files as one frame, without the configs.

    Arrow's JSON reader over the lines with their configs cut out; if that fails (a malformed line), the
    files are parsed again line by line in Python, skipping lines that do not parse.
    """
    data = b"".join(_without_config(_raw_lines(p)) for p in paths)
    if not data:
        return pd.DataFrame()
    try:
        table = pa_json.read_json(io.BytesIO(data), read_options=pa_json.ReadOptions(block_size=1 << 24))
    except (pa.ArrowInvalid, pa.ArrowTypeError) as err:
        log.warning("falling back to line-by-line parsing: %s", err)
        return _parse_python(paths)
    keep = [name for name in table.column_names if not pa.types.is_struct(table.schema.field(name).type)]
    return table.select(keep).to_pandas()


def _trial_id(folder: Path, by_folder: dict[str, str]) -> str | None:
    if folder.name in by_folder:
        return by_folder[folder.name]
    match = FOLDER_ID.search(folder.name)
    return match.group(1) if match else None


def trial_folders(tune_dir: Path, states: dict[str, _State]) -> dict[str, Path]:
    """Trial id → folder, for every folder holding a ``params.json``."""
    by_folder = {s.folder: tid for tid, s in states.items() if s.folder}
    found: dict[str, Path] = {}
    for folder in sorted(p.parent for p in tune_dir.glob("*/params.json")):
        trial_id = _trial_id(folder, by_folder)
        if trial_id is not None:
            found[trial_id] = folder
    return found


def error_line(text: str) -> str:
    """The exception that failed the trial: the first exception line of the last failure in ``error.txt``."""
    text = ANSI.sub("", text)
    last = text.rsplit("Failure # ", 1)[-1]
    for line in last.splitlines():
        if EXCEPTION_LINE.match(line.strip()):
            return line.strip()[:4000]
    lines = [line.strip() for line in last.splitlines() if line.strip()]
    return lines[-1][:4000] if lines else ""


def _error(folder: Path, state: _State | None) -> str | None:
    if state is None or state.status != "ERROR":
        return None
    path = folder / (state.error_file or "error.txt")
    try:
        return error_line(path.read_text(errors="replace"))
    except OSError:
        return ""


def _read_config(folder: Path) -> dict[str, Any]:
    try:
        doc = json.loads((folder / "params.json").read_text())
    except (OSError, ValueError):
        return {}
    return doc if isinstance(doc, dict) else {}


def _last_fields(reports: pd.DataFrame) -> dict[str, dict[str, Any]]:
    cols = [c for c in REPORT_FIELDS if c in reports]
    if "trial_id" not in cols:
        return {}
    last = reports[cols].groupby("trial_id", sort=False).tail(1).set_index("trial_id")
    return {str(k): v for k, v in last.to_dict("index").items()}


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def _base_row(trial_id: str, folder: Path, state: _State | None, last: dict[str, dict[str, Any]]) -> dict[str, Any]:
    status = state.status if state is not None else "RUNNING"
    fact = last.get(trial_id, {})
    ckpt = fact.get("checkpoint_dir_name")
    return {"trial_id": trial_id, "config": _read_config(folder), "status": status, "error": _error(folder, state),
            "wall_s": fact.get("time_total_s"), "node_id": _text(fact.get("node_id")) or _text(fact.get("node_ip")),
            "hostname": _text(fact.get("hostname")),
            "artifacts": str(folder / ckpt / "artifacts") if isinstance(ckpt, str) else None}


def _unstarted_row(trial_id: str, state: _State) -> dict[str, Any]:
    """A trial Tune knows but that has no folder yet (pending): its config from the experiment state."""
    return {"trial_id": trial_id, "config": state.config, "status": state.status, "error": None, "wall_s": None,
            "node_id": None, "hostname": None, "artifacts": None}


def _git_commits(study_dir: Path) -> dict[str, str]:
    """Trial id → git commit from the study's own MLflow store (Tune's storage does not hold it)."""
    if not (study_dir / "mlflow.db").is_file():
        return {}
    from results._collect_mlflow import trial_tags

    try:
        return trial_tags(f"sqlite:///{(study_dir / 'mlflow.db').absolute()}", None, "git_commit")
    except Exception as err:  # the commit is a nicety; the dataset stands without it
        log.warning("git commits not read from %s: %s", study_dir / "mlflow.db", err)
        return {}


def read_tune_study(study_dir: Path, info: StudyInfo) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The ``trials`` and ``curves`` frames of a study folder's Tune storage."""
    tune_dir = study_dir / TUNE_DIR
    if not tune_dir.is_dir():
        raise ResultsError(f"study {study_dir.name!r} has no Tune storage at {tune_dir}: run it first "
                           f"(`ocr-study run SPEC`), or rebuild it from MLflow with results.collect_mlflow")
    states = read_states(tune_dir)
    folders = trial_folders(tune_dir, states)
    if not folders and not states:
        raise ResultsError(f"study {study_dir.name!r} has no trials yet in {tune_dir}: wait for the first "
                           "trial to start (`ocr-study status NAME`)")
    reports = read_reports([f / "result.json" for f in folders.values()])
    curves = clean_curves(reports, info.name)
    last = _last_fields(reports)
    base = pd.DataFrame([_base_row(t, f, states.get(t), last) for t, f in folders.items()]
                        + [_unstarted_row(t, s) for t, s in states.items() if t not in folders])
    recorded = [(cfg or {}).get("meta.git_commit") for cfg in base["config"]]  # the runner records it
    commits = _git_commits(study_dir) if not all(recorded) else {}  # older studies: from MLflow's tags
    base["git_commit"] = [c or commits.get(t) for c, t in zip(recorded, base["trial_id"], strict=True)]
    return build_trials(base, curves, info), curves


def collect_study(study_dir: Path, out: Path | None = None) -> Path:
    """Turn a study's Tune storage into ``trials.parquet`` and ``curves.parquet``; returns their folder.

    Idempotent (the same storage gives the same rows) and safe on a study still running (its running
    trials are collected as they stand). Each file is written to a temporary name, then renamed.

    Args:
        study_dir: the study folder, ``<storage>/<name>`` (holding ``spec.yaml`` and ``tune/``).
        out: where to write (default ``study_dir / "results"``).
    """
    study_dir = Path(study_dir)
    if not study_dir.is_dir():
        raise ResultsError(f"no study folder {study_dir.absolute()}: check the name and --storage")
    info = read_spec_info(study_dir)
    trials, curves = read_tune_study(study_dir, info)
    return write_dataset(trials, curves, Path(out) if out is not None else study_dir / "results", info, "tune")
