"""The dataset's schema: ``trials.parquet`` (one row per trial) and ``curves.parquet`` (one row per epoch).

``trials.parquet`` columns, in order:

- ``study``, ``trial_id``, ``phase`` (``search`` or ``confirm``), ``cell``, ``setting`` (index of the sampled
  setting in its cell; in the confirm phase, of the search setting it confirms), ``seed``;
- ``status`` (in Tune's words: TERMINATED, ERROR, RUNNING, PENDING, PAUSED) and ``stop_reason``: ``completed``,
  ``early_stopped`` (by ASHA; ``stop_rung`` is the rung's epoch), ``stopped`` (ended early otherwise, e.g.
  the time budget), ``failed`` (``error`` holds the exception line), ``running``, ``pending``, ``paused``;
- ``epochs`` run, ``epochs_planned`` (the trial's ``seg.epochs``), ``best_epoch`` (best by the study's
  metric and mode);
- ``wall_s`` (``trial_wall_s`` summed over resumptions; from MLflow: run end − start), ``cpu_s`` (``trial_cpu_s`` summed
  over resumptions), ``gpu_s`` (wall seconds × GPUs the trial held; 0 on CPU);
- ``node_id``, ``hostname``, ``git_commit``, ``spec_hash``, ``artifacts`` (folder of the last checkpoint's
  artifacts, or the MLflow run's artifact URI);
- ``final_<metric>`` for every metric (last report) and ``best_<metric>`` for every ``val_*`` metric (at
  ``best_epoch``);
- ``params.<key>`` for every trial config key, typed (bool, int64, float64 or string); empty where it does not
  apply (the ``ocr.*`` keys of a trial with ``ocr.selection = none``).

``curves.parquet``: ``study``, ``trial_id``, ``epoch`` and every metric reported (float64), one row per
(trial, epoch). Both files: zstd, categoricals dictionary-encoded, the schema version, the source and the
study's facts (:class:`~results._study_info.StudyInfo`) in the file metadata.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from record import CURVES_TABLE, TRIALS_TABLE
from results._errors import ResultsError
from results._study_info import StudyInfo

SCHEMA_VERSION = "1"
TRIALS_FILE = TRIALS_TABLE
CURVES_FILE = CURVES_TABLE
PARAM_PREFIX = "params."
META_VERSION = b"ocr_study.schema_version"
META_SOURCE = b"ocr_study.source"
META_INFO = b"ocr_study.study"

ID_COLUMNS = ("study", "trial_id", "phase", "cell", "setting", "seed", "round")
STATE_COLUMNS = ("status", "stop_reason", "stop_rung", "error", "epochs", "epochs_planned", "best_epoch")
RUN_COLUMNS = ("wall_s", "cpu_s", "gpu_s", "node_id", "hostname", "git_commit", "spec_hash", "artifacts")
TRIAL_COLUMNS = (*ID_COLUMNS, *STATE_COLUMNS, *RUN_COLUMNS)
INT_COLUMNS = ("setting", "seed", "round", "stop_rung", "epochs", "epochs_planned", "best_epoch")
FLOAT_COLUMNS = ("wall_s", "cpu_s", "gpu_s")
CATEGORIES = ("study", "phase", "cell", "status", "stop_reason", "node_id", "hostname", "git_commit", "spec_hash")


@dataclass(frozen=True)
class Dataset:
    """A collected study: its trials, its learning curves, the study's facts and where they came from."""

    trials: pd.DataFrame
    curves: pd.DataFrame
    info: StudyInfo
    source: str


def _string_array(values: list[Any], categorical: bool) -> pa.Array:
    array = pa.array([None if v is None else str(v) for v in values], type=pa.string())
    return array.dictionary_encode() if categorical else array


def param_array(values: list[Any]) -> pa.Array:
    """One parameter's values as a typed column: bool, int64, float64, else dictionary-encoded strings."""
    given = [v for v in values if v is not None]
    if given and all(isinstance(v, bool) for v in given):
        return pa.array(values, type=pa.bool_())
    if given and all(isinstance(v, int) and not isinstance(v, bool) for v in given):
        return pa.array(values, type=pa.int64())
    if given and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in given):
        return pa.array([None if v is None else float(v) for v in values], type=pa.float64())
    text = [v if v is None or isinstance(v, str) else json.dumps(v) for v in values]
    return _string_array(text, categorical=True)


def _column(frame: pd.DataFrame, name: str) -> pa.Array:
    if name not in frame:
        return pa.nulls(len(frame), type=pa.int64() if name in INT_COLUMNS else pa.float64()
                        if name in FLOAT_COLUMNS else pa.string())
    if name in INT_COLUMNS:
        return pa.array(pd.array(pd.to_numeric(frame[name], errors="coerce"), dtype="Int64"), type=pa.int64())
    if name in FLOAT_COLUMNS or name.startswith(("final_", "best_")):
        return pa.array(pd.to_numeric(frame[name], errors="coerce").to_numpy(dtype="float64"), type=pa.float64(),
                        from_pandas=True)
    values = [None if _missing(v) else v for v in frame[name].tolist()]
    if name.startswith(PARAM_PREFIX):
        return param_array(values)
    return _string_array(values, categorical=name in CATEGORIES)


def _missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and value != value) or value is pd.NA


def trials_table(frame: pd.DataFrame) -> pa.Table:
    """``trials`` as Arrow with the schema's types (fixed columns first, then metrics, then params)."""
    metrics = sorted(c for c in frame.columns if c.startswith(("final_", "best_")) and c != "best_epoch")
    params = sorted(c for c in frame.columns if c.startswith(PARAM_PREFIX))
    names = [*TRIAL_COLUMNS, *metrics, *params]
    return pa.table({name: _column(frame, name) for name in names})


def curves_table(frame: pd.DataFrame) -> pa.Table:
    """``curves`` as Arrow: categorical ids, int64 epoch, float64 metrics (sorted by name)."""
    metrics = sorted(c for c in frame.columns if c not in ("study", "trial_id", "epoch"))
    columns: dict[str, pa.Array] = {
        "study": pa.array(frame["study"].astype(str).tolist(), type=pa.string()).dictionary_encode(),
        "trial_id": pa.array(frame["trial_id"].astype(str).tolist(), type=pa.string()).dictionary_encode(),
        "epoch": pa.array(frame["epoch"].to_numpy(dtype="int64"), type=pa.int64()),
    }
    for name in metrics:
        columns[name] = pa.array(pd.to_numeric(frame[name], errors="coerce").to_numpy(dtype="float64"),
                                 type=pa.float64(), from_pandas=True)
    return pa.table(columns)


def _with_metadata(table: pa.Table, info: StudyInfo, source: str) -> pa.Table:
    return table.replace_schema_metadata({META_VERSION: SCHEMA_VERSION.encode(), META_SOURCE: source.encode(),
                                          META_INFO: info.to_json().encode()})


def _write_atomic(table: pa.Table, path: Path) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        pq.write_table(table, tmp, compression="zstd")
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_dataset(trials: pd.DataFrame, curves: pd.DataFrame, out: Path, info: StudyInfo, source: str) -> Path:
    """Write both files into ``out`` (each to a temporary file, then renamed into place); returns ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    _write_atomic(_with_metadata(curves_table(curves), info, source), out / CURVES_FILE)
    _write_atomic(_with_metadata(trials_table(trials), info, source), out / TRIALS_FILE)
    return out


def _read(path: Path) -> tuple[pd.DataFrame, dict[bytes, bytes]]:
    if not path.is_file():
        raise ResultsError(f"{path} is missing: collect the study first (`ocr-study export NAME`)")
    table = pq.read_table(path)
    meta = table.schema.metadata or {}
    version = meta.get(META_VERSION, b"?").decode()
    if version != SCHEMA_VERSION:
        raise ResultsError(f"{path} has schema version {version}, this ocr-study reads {SCHEMA_VERSION}: "
                           "collect the study again (`ocr-study export NAME`)")
    return table.to_pandas(types_mapper={pa.int64(): pd.Int64Dtype()}.get), meta


def load_dataset(folder: Path) -> Dataset:
    """Read ``trials.parquet`` and ``curves.parquet`` from ``folder`` (pyarrow and pandas only).

    Args:
        folder: what :func:`results.collect_study` or :func:`results.collect_mlflow` returned.
    """
    trials, meta = _read(Path(folder) / TRIALS_FILE)
    curves, _ = _read(Path(folder) / CURVES_FILE)
    info = StudyInfo.from_json(meta[META_INFO].decode())
    return Dataset(trials, curves, info, meta.get(META_SOURCE, b"").decode())
