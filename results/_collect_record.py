"""Collect a study from its own record (the source of truth), without Ray and without Tune's files.

What is read (see :mod:`record`): ``study.json`` (the study's facts; inferred from the trials when it is
missing), and per trial ``trials/<id>/trial.json`` (config, status, node, error) and
``trials/<id>/epochs.jsonl`` (one line of metrics per epoch; a line still being written is skipped, and an
epoch run again after a resumption replaces the earlier one). Nothing under ``tune/`` is read.
"""

from __future__ import annotations

import io
import logging
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.json as pa_json

from record import EPOCHS_FILE, META, RESULTS_DIR, TrialDoc, TrialStatus, study_trials
from record._trial import complete_lines, parse_lines
from results._errors import ResultsError
from results._schema import write_dataset
from results._study_info import StudyInfo, infer_info, read_study_info
from results._summary import build_trials, clean_curves, stretch_sum

log = logging.getLogger(__name__)
BLOCK = 1 << 24


def _epoch_bytes(folder: Path) -> bytes:
    try:
        return complete_lines((folder / EPOCHS_FILE).read_bytes())
    except FileNotFoundError:
        return b""


def read_epochs(folders: list[Path]) -> pd.DataFrame:
    """Every complete epoch line of these trials as one frame (Arrow's JSON reader; line by line in
    Python, skipping lines that do not parse, if that fails)."""
    data = b"".join(_epoch_bytes(f) for f in folders)
    if not data:
        return pd.DataFrame()
    try:
        table = pa_json.read_json(io.BytesIO(data), read_options=pa_json.ReadOptions(block_size=BLOCK))
    except (pa.ArrowInvalid, pa.ArrowTypeError) as err:
        log.warning("falling back to line-by-line parsing: %s", err)
        return pd.DataFrame(parse_lines(data))
    keep = [name for name in table.column_names if not pa.types.is_nested(table.schema.field(name).type)]
    return table.select(keep).to_pandas()


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def _base_row(doc: TrialDoc) -> dict[str, Any]:
    config = doc.config if isinstance(doc.config, dict) else {}
    return {"trial_id": doc.trial_id, "config": config, "status": doc.status.value,
            # what the record says; a trial.json from before it said so gets it derived (results._summary)
            "stop_reason": doc.stop_reason.value if doc.stop_reason is not None else None,
            "stop_rung": doc.stop_rung, "epochs_planned": doc.epochs_planned,
            "error": (doc.error or "") if doc.status == TrialStatus.ERROR else None,
            "node_id": _text(doc.node_id), "hostname": _text(doc.hostname),
            "git_commit": _text(config.get(f"{META}git_commit")), "artifacts": _text(doc.artifacts)}


def read_trial_docs(study_dir: Path) -> tuple[list[TrialDoc], list[Path]]:
    """The ``trial.json`` of every trial that counts (see :func:`record.study_trials`), and their folders."""
    pairs = study_trials(study_dir)
    return [doc for _, doc in pairs], [folder for folder, _ in pairs]


def read_record_study(study_dir: Path, info: StudyInfo | None) -> tuple[pd.DataFrame, pd.DataFrame, StudyInfo]:
    """The ``trials`` and ``curves`` frames of a study's record, and its facts."""
    docs, folders = read_trial_docs(study_dir)
    base = pd.DataFrame([_base_row(d) for d in docs],
                        columns=["trial_id", "config", "status", "stop_reason", "stop_rung", "epochs_planned", "error",
                                 "node_id", "hostname", "git_commit", "artifacts"])
    if info is None:
        info = infer_info(study_dir.name, base["config"].tolist())
    epochs = read_epochs(folders)
    curves = clean_curves(epochs, info.name)
    base["wall_s"] = base["trial_id"].map(stretch_sum(curves, "trial_wall_s"))
    return build_trials(base, curves, info), curves, info


def collect_study(study_dir: Path, out: Path | None = None) -> Path:
    """Turn a study's record into ``trials.parquet`` and ``curves.parquet``; returns their folder.

    Idempotent (the same record gives the same rows) and safe on a study still running (its running
    trials are collected as they stand). Each file is written to a temporary name, then renamed.

    Args:
        study_dir: the study folder, ``<storage>/<name>`` (holding ``study.json`` and ``trials/``).
        out: where to write (default ``study_dir / "results"``).
    """
    study_dir = Path(study_dir)
    if not study_dir.is_dir():
        raise ResultsError(f"no study folder {study_dir.absolute()}: check the name and --storage")
    trials, curves, info = read_record_study(study_dir, read_study_info(study_dir))
    return write_dataset(trials, curves, Path(out) if out is not None else study_dir / RESULTS_DIR, info, "record")
