"""``ocr-study status``: trials by state and the best setting so far, per cell, from Tune's storage."""

from __future__ import annotations

import statistics
from collections import defaultdict
from typing import Any

from study.spec import StudySpec

SHOWN_KEYS = ("ocr.delta", "ocr.tau")
MAX_ERRORS = 10


def _best_setting(rows: list[dict[str, Any]], metric: str, mode: str) -> tuple[float, dict[str, Any]] | None:
    by_setting: dict[int, list[dict[str, Any]]] = defaultdict(list)
    for row in rows:
        if isinstance(row.get(metric), (int, float)):
            by_setting[int(row["setting"])].append(row)
    if not by_setting:
        return None
    scored = [(statistics.fmean(r[metric] for r in group), group[0]["config"]) for group in by_setting.values()]
    return (max if mode == "max" else min)(scored, key=lambda x: x[0])


def format_status(spec: StudySpec, rows: list[dict[str, Any]]) -> str:
    """A table per cell: trial counts by state, and the best setting (mean over its seeds so far)."""
    metric, mode = spec.scheduler.metric, spec.scheduler.mode
    cells: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for row in rows:
        cells[row["cell"]].append(row)
    states = sorted({r["status"] for r in rows})
    lines = [f"study {spec.name}: {len(rows)} trials known — "
             + ", ".join(f"{sum(r['status'] == s for r in rows)} {s.lower()}" for s in states)]
    for cell, group in sorted(cells.items()):
        counts = ", ".join(f"{sum(r['status'] == s for r in group)} {s.lower()}" for s in states
                           if any(r["status"] == s for r in group))
        best = _best_setting(group, metric, mode)
        shown = ""
        if best is not None:
            params = ", ".join(f"{k}={best[1][k]:.3g}" for k in SHOWN_KEYS if isinstance(best[1].get(k), float))
            shown = f" · best {metric} {best[0]:.4f}" + (f" at {params}" if params else "")
        lines.append(f"  {cell}: {counts}{shown}")
    failed = [r for r in rows if r["status"] == "ERROR"]
    for row in failed[:MAX_ERRORS]:
        lines.append(f"  failed {row['trial_id']} ({row['cell']}, seed {row['seed']}): {row.get('error') or '?'}")
    if len(failed) > MAX_ERRORS:
        lines.append(f"  ... and {len(failed) - MAX_ERRORS} more failed trials")
    return "\n".join(lines)
