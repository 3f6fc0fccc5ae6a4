"""``ocr-study status``: trials by state and the best setting so far, per cell, from the study's record."""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from record import best_setting, config_reports, ocr_applies, planned_epochs
from study.spec import StudySpec

SHOWN_KEYS = ("ocr.delta", "ocr.tau")
MAX_ERRORS = 10
PERCENT_METRICS = ("iou", "acc", "oc_rate", "oc_image_rate")  # fractions in the record, percent where people read them
STATES = {"RUNNING": "running", "PENDING": "pending", "PAUSED": "paused", "ERROR": "failed"}


def _planned(spec: StudySpec, row: dict[str, Any]) -> int:
    epochs = config_reports(row["config"]) or 0
    if row.get("phase") == "confirm":  # the confirm phase runs without early stopping
        return epochs
    return planned_epochs(epochs, spec.scheduler.type, spec.scheduler.max_epochs) or 0


def trial_state(spec: StudySpec, row: dict[str, Any]) -> str:
    """``completed`` (every planned epoch), ``stopped early`` (by ASHA or the time budget), or Tune's state."""
    if row["status"] == "TERMINATED":
        return "completed" if row["epochs"] >= _planned(spec, row) else "stopped early"
    return STATES.get(row["status"], row["status"].lower())


def _best_setting(rows: list[dict[str, Any]], metric: str, mode: str) -> tuple[float, int, dict[str, Any]] | None:
    """(mean over seeds, seeds, config) of the best setting among ``rows``."""
    by_setting: dict[int, list[dict[str, Any]]] = defaultdict(list)
    for row in rows:
        if isinstance(row.get(metric), (int, float)):
            by_setting[int(row["setting"])].append(row)
    best = best_setting({k: [r[metric] for r in group] for k, group in by_setting.items()}, mode)
    if best is None:
        return None
    group = by_setting[best[0]]
    return best[1], len(group), group[0]["config"]


def _best_text(spec: StudySpec, group: list[dict[str, Any]]) -> str:
    """The best setting of a cell: over completed trials, or (marked) over the trials' latest epochs."""
    metric, mode = spec.scheduler.metric, spec.scheduler.mode
    done = [r for r in group if r["state"] == "completed"]
    best = _best_setting(done or group, metric, mode)
    if best is None:
        return ""
    value, seeds, config = best
    where = f"mean of {seeds} completed" if done else "so far, at their latest epoch"
    params = ", ".join(f"{k}={config[k]:.3g}" for k in SHOWN_KEYS
                       if isinstance(config.get(k), float) and ocr_applies(k, config.get("ocr.selection")))
    return f" · best {metric} {metric_text(metric, value)} ({where})" + (f" at {params}" if params else "")


def metric_text(metric: str, value: float) -> str:
    """A metric as the report prints it: IoU, accuracy and OC rates in percent (``61.52 %``), others as
    they are."""
    if any(part in metric for part in PERCENT_METRICS):
        return f"{100 * value:.2f} %"
    return f"{value:.4g}"


def _counts(rows: list[dict[str, Any]]) -> str:
    states: dict[str, int] = defaultdict(int)
    for row in rows:
        states[row["state"]] += 1
    return ", ".join(f"{n} {s}" for s, n in sorted(states.items()))


def format_status(spec: StudySpec, rows: list[dict[str, Any]]) -> str:
    """Per phase (search, then confirm), a line per cell: trials by state, and the best setting (mean over
    its completed seeds)."""
    rows = [{**r, "state": trial_state(spec, r)} for r in rows]
    lines = [f"study {spec.name}: {len(rows)} trials known — {_counts(rows)}"]
    phases = sorted({r.get("phase", "search") for r in rows}, key=lambda p: p != "search")
    for phase in phases:
        mine = [r for r in rows if r.get("phase", "search") == phase]
        cells: dict[str, list[dict[str, Any]]] = defaultdict(list)
        for row in mine:
            cells[row["cell"]].append(row)
        if len(phases) > 1 or spec.confirm is not None:
            lines.append(f" {phase} phase: {len(mine)} trials — {_counts(mine)}")
        for cell, group in sorted(cells.items()):
            lines.append(f"  {cell}: {_counts(group)}{_best_text(spec, group)}")
    failed = [r for r in rows if r["status"] == "ERROR"]
    for row in failed[:MAX_ERRORS]:
        lines.append(f"  failed {row['trial_id']} ({row['cell']}, seed {row['seed']}): {row.get('error') or '?'}")
    if len(failed) > MAX_ERRORS:
        lines.append(f"  ... and {len(failed) - MAX_ERRORS} more failed trials")
    return "\n".join(lines)
