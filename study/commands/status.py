"""``ocr-study status``: trials by why they stopped and the best setting so far, per cell, from the study's
record (the words of :class:`record.StopReason`, as the run's summary and the report use them)."""

from __future__ import annotations

import argparse
from collections import defaultdict
from typing import Any

from record import (
    PHASES,
    Decision,
    Phase,
    PhaseDoc,
    StopReason,
    TrialStatus,
    best_setting,
    metric_text,
    ocr_applies,
    read_study,
)
from study.handle import load_study
from study.spec import StudySpec

SHOWN_KEYS = ("ocr.delta", "ocr.tau")
MAX_ERRORS = 10


def status(args: argparse.Namespace) -> int:
    """``ocr-study status NAME``."""
    from study.runner import trial_table

    study = load_study(args.name, args.storage)
    print(format_status(study.spec, trial_table(study)))
    doc = read_study(study.folder)
    phase = doc.phase(Phase.CONFIRM) if doc is not None else None
    if phase is not None and phase.seed_rule is not None:
        print(format_rounds(phase))
    return 0


def format_rounds(phase: PhaseDoc) -> str:
    """A sequential confirm phase's rounds so far: per setting, its decision at its last look."""
    assert phase.seed_rule is not None
    rounds = len(phase.seed_rule.looks)
    if not phase.rounds:
        return f" sequential confirm: round 1 of at most {rounds} running (no look yet)"
    lines = [f" sequential confirm: {len(phase.rounds)} of at most {rounds} rounds looked at"]
    settings: dict[str, Any] = {}
    for entry in phase.rounds:  # a setting decided in an early round keeps that round's look
        settings.update(entry.get("settings") or {})
    for key, look in settings.items():
        low, high = look.get("low"), look.get("high")
        interval = f"[{low:+.2f}, {high:+.2f}]" if low is not None and high is not None else "no interval yet"
        mean = look.get("mean")
        lines.append(f"  {key}: {Decision(look['decision']).text} after {look['n']} seeds, Δ "
                     f"{'?' if mean is None else f'{mean:+.2f}'} {interval}, adjusted p {look['p_adjusted']:.3g}")
    return "\n".join(lines)


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


def headline_metric(spec: StudySpec, rows: list[dict[str, Any]]) -> str:
    """The metric a phase's lines show: the study's, or its held-out ``test_*`` twin when the phase's trials
    measured one (a confirm phase on the digit scenes): the report's ablation table shows that one."""
    metric = spec.scheduler.metric
    test = f"test_{metric.removeprefix('val_')}"
    if metric.startswith("val_") and any(isinstance(r.get(test), (int, float)) for r in rows):
        return test
    return metric


def _best_text(spec: StudySpec, group: list[dict[str, Any]], metric: str | None = None) -> str:
    """The best setting of a cell: over completed trials, or (marked) over the trials' latest epochs."""
    metric, mode = metric or spec.scheduler.metric, spec.scheduler.mode
    done = [r for r in group if r["stop_reason"] == StopReason.COMPLETED]
    best = _best_setting(done or group, metric, mode)
    if best is None:
        return ""
    value, seeds, config = best
    where = f"mean of {seeds} completed" if done else "so far, at their latest epoch"
    params = ", ".join(f"{k}={config[k]:.3g}" for k in SHOWN_KEYS
                       if isinstance(config.get(k), float) and ocr_applies(k, config.get("ocr.selection")))
    return f" · best {metric} {metric_text(metric, value)} ({where})" + (f" at {params}" if params else "")


def _counts(rows: list[dict[str, Any]]) -> str:
    """``"4 completed, 1 failed, 1 stopped early"``: the trials by why they stopped (the record's words)."""
    reasons: dict[StopReason, int] = defaultdict(int)
    for row in rows:
        reasons[StopReason(row["stop_reason"])] += 1
    return ", ".join(f"{n} {r.text}" for r, n in sorted(reasons.items(), key=lambda item: item[0].rank))


def format_status(spec: StudySpec, rows: list[dict[str, Any]]) -> str:
    """Per phase (search, then confirm), a line per cell: trials by state, and the best setting (mean over
    its completed seeds)."""
    lines = [f"study {spec.name}: {len(rows)} trials known — {_counts(rows)}"]
    phases = [p for p in PHASES if any(r.get("phase", Phase.SEARCH) == p for r in rows)]
    for phase in phases:
        mine = [r for r in rows if r.get("phase", Phase.SEARCH) == phase]
        cells: dict[str, list[dict[str, Any]]] = defaultdict(list)
        for row in mine:
            cells[row["cell"]].append(row)
        if len(phases) > 1 or spec.confirm is not None:
            lines.append(f" {phase} phase: {len(mine)} trials — {_counts(mine)}")
        metric = headline_metric(spec, mine)
        for cell, group in sorted(cells.items()):
            lines.append(f"  {cell}: {_counts(group)}{_best_text(spec, group, metric)}")
    failed = [r for r in rows if r["status"] == TrialStatus.ERROR]
    for row in failed[:MAX_ERRORS]:
        lines.append(f"  failed {row['trial_id']} ({row['cell']}, seed {row['seed']}): {row.get('error') or '?'}")
    if len(failed) > MAX_ERRORS:
        lines.append(f"  ... and {len(failed) - MAX_ERRORS} more failed trials")
    return "\n".join(lines)
