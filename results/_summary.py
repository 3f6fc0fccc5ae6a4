"""From per-trial facts and learning curves to the rows of ``trials.parquet`` (shared by both sources).

A collector gives, per trial, its config, status, error and run facts (wall time, node, ...) and the
deduplicated curves of all trials; this module adds what is derived: epochs, final and best metrics,
CPU/GPU seconds and why the trial stopped.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np
import pandas as pd

from record import BASE_CELL, META, Phase, StopReason, config_reports, ocr_applies, planned_epochs, stop_reason
from results._schema import PARAM_PREFIX
from results._study_info import StudyInfo

IDS = ("study", "trial_id", "epoch")


def clean_curves(reports: pd.DataFrame, study: str) -> pd.DataFrame:
    """One row per (trial, epoch), the last report winning; only numeric metrics."""
    if reports.empty or "epoch" not in reports:
        return pd.DataFrame({"study": pd.Series(dtype=str), "trial_id": pd.Series(dtype=str),
                             "epoch": pd.Series(dtype="int64")})
    frame = reports[reports["epoch"].notna()]
    frame = frame.drop_duplicates(["trial_id", "epoch"], keep="last")
    metrics = [c for c in frame.columns if c not in IDS and _numeric(frame[c])]
    out = frame[["trial_id", "epoch", *metrics]].astype({"epoch": "int64", **{m: "float64" for m in metrics}})
    out.insert(0, "study", study)
    return out.sort_values(["trial_id", "epoch"], kind="stable").reset_index(drop=True)


def _numeric(column: pd.Series) -> bool:
    return pd.api.types.is_numeric_dtype(column) and not pd.api.types.is_bool_dtype(column)


def stretch_sum(curves: pd.DataFrame, column: str) -> pd.Series:
    """Per trial, a counter that restarts at each resumption (``trial_cpu_s``, ``trial_wall_s``): the sum of
    the last value of every stretch."""
    if column not in curves:
        return pd.Series(dtype="float64")
    cpu = curves[column]
    fresh = (curves["trial_id"] != curves["trial_id"].shift()) | (cpu.diff() < 0)
    stretch = fresh.cumsum()
    last = cpu.groupby(stretch).max()
    owner = curves["trial_id"].groupby(stretch).first()
    return last.groupby(owner.to_numpy()).sum(min_count=1)


def summarize_curves(curves: pd.DataFrame, info: StudyInfo) -> pd.DataFrame:
    """Per trial: epochs run, ``final_*`` (last report), ``best_epoch`` and ``best_val_*``, ``cpu_s``."""
    metrics = [c for c in curves.columns if c not in ("study", "trial_id", "epoch")]
    if curves.empty:
        return pd.DataFrame({"epochs": pd.Series(dtype="int64")}, index=pd.Index([], name="trial_id"))
    grouped = curves.groupby("trial_id", sort=False)
    last = grouped.tail(1).set_index("trial_id")
    out = pd.DataFrame({"epochs": grouped["epoch"].max()})
    out = out.join(last[metrics].add_prefix("final_"))
    scored = curves[curves[info.metric].notna()] if info.metric in curves else curves.iloc[:0]
    if not scored.empty:
        score = scored[info.metric] if info.mode == "max" else -scored[info.metric]
        best = curves.loc[score.groupby(scored["trial_id"]).idxmax().to_numpy()].set_index("trial_id")
        val = [m for m in metrics if m.startswith("val_")]
        out = out.join(best[["epoch", *val]].rename(columns={"epoch": "best_epoch"}).rename(
            columns={m: f"best_{m}" for m in val}))
    out["cpu_s"] = stretch_sum(curves, "trial_cpu_s")
    out.index.name = "trial_id"
    return out


def _params(configs: Iterable[dict[str, Any]]) -> pd.DataFrame:
    """``params.<key>`` per trial: the settings that apply to it; an ``ocr.*`` value of a trial with the OCR
    loss off (``ocr.selection = none``, a baseline) is left empty, as it changed nothing."""
    configs = list(configs)
    keys = sorted({k for c in configs for k in c if not k.startswith(META)})
    return pd.DataFrame({f"{PARAM_PREFIX}{k}": pd.Series(
        [c.get(k) if ocr_applies(k, c.get("ocr.selection")) else None for c in configs], dtype=object)
        for k in keys})


def _planned(config: dict[str, Any], info: StudyInfo) -> int | None:
    """The epochs (reports) a trial was to run: its reports as the record counts them (``seg.epochs``, or
    ``seg.iterations`` / ``seg.report_every``: :func:`record.config_reports`), capped by ASHA's
    ``max_epochs``."""
    try:
        planned = config_reports(config)
    except (TypeError, ValueError):
        planned = None
    if planned is None:
        return info.max_epochs
    if config.get(f"{META}phase") == Phase.CONFIRM:  # the confirm phase runs without early stopping
        return planned
    return planned_epochs(planned, info.scheduler, info.max_epochs)


def _identity(config: dict[str, Any], info: StudyInfo) -> dict[str, Any]:
    return {"study": config.get(f"{META}study") or info.name, "phase": config.get(f"{META}phase") or Phase.SEARCH,
            "cell": config.get(f"{META}cell", BASE_CELL),
            "setting": config.get(f"{META}setting", 0), "seed": config.get("seed"),
            "spec_hash": config.get(f"{META}spec_hash"),
            "epochs_planned": _planned(config, info),
            "round": config.get(f"{META}round")}  # a sequential confirm trial's round, else None


def _recorded(base: pd.DataFrame, column: str) -> pd.Series:
    """What the source recorded per trial in ``column`` (missing: all ``None``)."""
    if column not in base:
        return pd.Series([None] * len(base), index=base.index, dtype=object)
    return base[column].astype(object).where(base[column].notna(), None)


def _stop(status: str, epochs: int, planned: Any, recorded: Any, rung: Any, info: StudyInfo) -> tuple[str, Any]:
    """Why a trial stopped: what its record says (``trial.json``, MLflow's tag), else derived from its status
    and epochs (a record from before it said so)."""
    if recorded is not None:
        reason = StopReason(recorded)
        if reason != StopReason.EARLY_STOPPED:
            return reason, None
        return reason, int(epochs if rung is None or pd.isna(rung) else rung)  # ASHA stops a trial at its rung
    return stop_reason(status, epochs, None if planned is None or pd.isna(planned) else int(planned), info.scheduler,
                       info.rungs)


def build_trials(base: pd.DataFrame, curves: pd.DataFrame, info: StudyInfo) -> pd.DataFrame:
    """The ``trials`` frame from ``base`` (one row per trial: ``trial_id``, ``config``, ``status``, ``error``,
    ``wall_s``, ``node_id``, ``hostname``, ``git_commit``, ``artifacts``; and, where the source recorded
    them, ``stop_reason``, ``stop_rung``, ``epochs_planned``) and the cleaned curves. What the source recorded
    is read, not derived again; a trial without it gets it derived from the study's facts."""
    base = base.reset_index(drop=True)
    recorded = {c: _recorded(base, c) for c in ("stop_reason", "stop_rung", "epochs_planned")}
    configs = base["config"].tolist()
    ident = pd.DataFrame([_identity(c, info) for c in configs], index=base.index,
                         columns=["study", "phase", "cell", "setting", "seed", "spec_hash", "epochs_planned", "round"])
    ident["epochs_planned"] = [derived if mine is None else int(mine) for mine, derived in zip(
        recorded["epochs_planned"], ident["epochs_planned"], strict=True)]
    frame = pd.concat([base.drop(columns=["config", *recorded], errors="ignore"), ident], axis=1)
    frame = frame.join(summarize_curves(curves, info), on="trial_id")
    frame["epochs"] = frame["epochs"].fillna(0).astype("int64")
    reasons = [_stop(s, e, p, r, g, info) for s, e, p, r, g in zip(
        frame["status"], frame["epochs"], frame["epochs_planned"], recorded["stop_reason"], recorded["stop_rung"],
        strict=True)]
    frame["stop_reason"] = [str(r) for r, _ in reasons]
    frame["stop_rung"] = [r for _, r in reasons]
    on_cpu = np.array([c.get("device") == "cpu" for c in configs], dtype=bool)
    gpus = info.gpus if info.gpus is not None else np.nan
    frame["gpu_s"] = np.where(on_cpu, 0.0, frame["wall_s"].to_numpy(dtype="float64") * gpus)
    out = pd.concat([frame.reset_index(drop=True), _params(configs)], axis=1)
    return out.sort_values("trial_id", kind="stable").reset_index(drop=True)
