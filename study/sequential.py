"""The sequential confirm phase's bookkeeping over the study's record (no Ray): which chosen setting a
config belongs to, the baseline, what is measured, the looks of every setting after a round, what a round
decided as ``study.json`` keeps it, and the values of ended trials read back from the record.

The phase's planned configs are every chosen setting × every seed the rule may run, each tagged with the
round its seed belongs to (``meta.round``); :class:`study.searcher.SequentialSearcher` runs them round by
round on Ray Tune. The looks come from :func:`results._sequential.looks`, the one implementation the report
also uses.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from record import (
    META,
    OCR_OFF,
    Phase,
    SeedRule,
    StopReason,
    parse_cell,
    read_epochs,
    reported_scale,
    study_trials,
)
from results._sequential import Look, looks

Values = dict[int, float | None]  # planned config index → the measured value (None: no value, the trial failed)
REFRESH_S = 2.0  # how often a waiting searcher reads the record for values it has not been told


def arm(config: Mapping[str, Any]) -> str:
    """A chosen setting's key: ``cell#rank``."""
    return f"{config.get(f'{META}cell')}#{int(config.get(f'{META}rank', 0) or 0)}"


def reference_arm(configs: list[dict[str, Any]]) -> str:
    """The baseline the others are compared with: the best setting of the cell without OCR, else of the first
    cell (as the report's tables choose it)."""
    cells = list(dict.fromkeys(str(c.get(f"{META}cell")) for c in configs))
    base = next((c for c in cells if parse_cell(c).get("ocr.selection") == OCR_OFF), cells[0])
    return f"{base}#0"


def measure_key(metric: str, result: Mapping[str, Any]) -> str:
    """What the phase measures: the metric on the held-out test split when the trial scored one (the digit
    scenes), else the metric itself (VOC and COCO have none)."""
    test = f"test_{metric[4:]}" if metric.startswith("val_") else metric
    return test if test in result else metric


def arm_looks(configs: list[dict[str, Any]], values: Values, rule: SeedRule, mode: str, through: int,
              metric: str) -> dict[str, list[Look]]:
    """Every non-baseline setting's looks at rounds 1..``through`` (stopping at its decision)."""
    ref = reference_arm(configs)
    by_arm: dict[str, dict[int, tuple[int, float]]] = {}
    for index, config in enumerate(configs):
        value = values.get(index)
        if value is not None and math.isfinite(value):
            by_arm.setdefault(arm(config), {})[int(config["seed"])] = (int(config[f"{META}round"]), value)
    base = by_arm.get(ref, {})
    factor = reported_scale(metric)
    out = {}
    for key in dict.fromkeys(arm(c) for c in configs):
        if key == ref:
            continue
        mine = by_arm.get(key, {})
        rounds = [[(v - base[s][1]) * factor for s, (r, v) in sorted(mine.items()) if s in base and r <= k]
                  for k in range(1, through + 1)]
        out[key] = looks(rounds, rule, mode)
    return out


def round_entry(round_: int, seen: Mapping[str, list[Look]]) -> dict[str, Any]:
    """What a round decided, as ``study.json`` keeps it (``settings``: per setting its last look) and as the
    round's printed line shows it (``lines``)."""
    settings, lines = {}, []
    for key, found in seen.items():
        if not found:
            continue
        last = found[-1]
        settings[key] = {"n": last.n, "mean": _finite(last.mean), "low": _finite(last.low), "high": _finite(last.high),
                         "level": last.level, "p": _finite(last.p), "p_adjusted": last.p_adjusted,
                         "decision": str(last.decision), "round": last.round}
        interval = (f"[{last.low:+.2f}, {last.high:+.2f}]" if math.isfinite(last.low) and math.isfinite(last.high)
                    else "(no interval yet)")
        if last.round < round_:  # decided in an earlier round: no new look
            lines.append(f"{key}: {last.decision.text} (decided in round {last.round})")
            continue
        lines.append(f"{key}: n = {last.n}, Δ {last.mean:+.2f}, {100 * (1 - last.level):.3g}% interval {interval}, "
                     f"{last.decision.text}")
    return {"round": round_, "settings": settings, "lines": lines}


def _finite(value: float) -> float | None:
    return value if math.isfinite(value) else None


def record_values(folder: Path, configs: list[dict[str, Any]], metric: str) -> Values:
    """The values of the confirm trials that ended, from the study's record (a completed trial's last value of
    the measured metric; a failed one's ``None``)."""
    index = {(arm(c), int(c["seed"])): i for i, c in enumerate(configs)}
    out: Values = {}
    for path, doc in study_trials(folder):
        if doc.phase != Phase.CONFIRM or doc.stop_reason not in (StopReason.COMPLETED, StopReason.FAILED):
            continue
        key = (arm(doc.config), int(doc.seed or 0))
        if key not in index:
            continue
        value = None
        if doc.stop_reason == StopReason.COMPLETED:
            last = [e for e in read_epochs(path) if isinstance(e.get("epoch"), (int, float))]
            if last:
                found = last[-1].get(measure_key(metric, last[-1]))
                value = float(found) if isinstance(found, (int, float)) else None
        out[index[key]] = value
    return out
