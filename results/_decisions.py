"""What a sequential confirm phase decided: per chosen setting, the seeds it used, the decision against the
baseline, the repeated confidence interval and p-value at its last look; and a plot of the interval narrowing
round by round.

Recomputed from the confirm trials' measured values with :func:`results._sequential.looks`, the function the
searcher decided with, so the table says what the study did (a test holds the two together).
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd

from record import Decision, Phase, SeedRule, parse_cell, reported_scale
from results._plots import _pyplot, _save, cell_colours
from results._schema import Dataset
from results._sequential import Look, looks, rule_text
from results._table import Table
from results._tables import (
    _confirm_cells,
    _confirm_values,
    baseline_cell,
    measured_split,
    minus,
    phase_trials,
)


def seed_rule(ds: Dataset) -> SeedRule | None:
    """The study's seed rule, when its confirm phase was sequential."""
    raw = ds.info.confirm.get("seed_rule")
    return SeedRule.from_json(raw) if isinstance(raw, dict) else None


def setting_looks(ds: Dataset) -> dict[str, list[Look]]:
    """Per chosen setting other than the baseline (``cell``, or ``cell #k`` for the k-th best), its looks."""
    rule = seed_rule(ds)
    confirm = phase_trials(ds, Phase.CONFIRM)
    if rule is None or confirm.empty:
        return {}
    metric, mode = str(ds.info.confirm.get("metric") or ds.info.metric), str(ds.info.confirm.get("mode") or "max")
    pairs = _confirm_cells(ds, confirm)
    base_cell = baseline_cell(ds, [c for c, _ in pairs])
    base_setting = next(s for c, s in pairs if c == base_cell)
    base = _confirm_values(confirm, base_cell, base_setting, metric)
    factor = reported_scale(metric)
    out: dict[str, list[Look]] = {}
    for cell, setting in pairs:
        if (cell, setting) == (base_cell, base_setting) or setting < 0:
            continue
        mine = _confirm_values(confirm, cell, setting, metric)
        if mine.empty:
            continue
        rounds_run = max(rule.round_of(int(s)) for s in mine.index)
        diffs = [[(mine[s] - base[s]) * factor for s in mine.index if s in base.index and rule.round_of(int(s)) <= k]
                 for k in range(1, rounds_run + 1)]
        ranks = [s for c, s in pairs if c == cell]
        label = cell if len(ranks) == 1 else f"{cell} #{ranks.index(setting) + 1}"
        out[label] = looks(diffs, rule, mode)
    return out


def _decision_text(decision: Decision, rule: SeedRule, unit: str) -> str:
    if decision == Decision.EQUIVALENT and rule.margin is not None:
        return f"equivalent within ±{rule.margin:g} {unit}".rstrip()
    return decision.text


def _interval_text(look: Look) -> str:
    if not (math.isfinite(look.low) and math.isfinite(look.high)):
        return "—"
    return f"[{look.low:+.2f}, {look.high:+.2f}]"


def decision_table(ds: Dataset) -> Table | None:
    """The sequential confirm phase's decisions (``None`` when the phase was not sequential)."""
    rule = seed_rule(ds)
    seen = setting_looks(ds)
    if rule is None or not seen:
        return None
    metric = str(ds.info.confirm.get("metric") or ds.info.metric)
    split = measured_split(phase_trials(ds, Phase.CONFIRM))
    unit = "pp" if reported_scale(metric) == 100.0 else ""
    measured = metric.removeprefix("val_").replace("miou", "mIoU")
    rows, display = [], []
    for label, found in seen.items():
        last = found[-1]
        rows.append({"cell": label, **parse_cell(label.split(" #")[0]), "n": last.n, "rounds": len(found),
                     "decision": str(last.decision), "diff_mean": last.mean, "ci_low": last.low, "ci_high": last.high,
                     "level": last.level, "p": last.p, "p_adjusted": last.p_adjusted})
        display.append({"cell": label, "seeds": str(last.n), "rounds": str(len(found)),
                        "decision": _decision_text(last.decision, rule, unit),
                        f"Δ ({unit})": "—" if not math.isfinite(last.mean) else minus(f"{last.mean:+.2f}"),
                        "repeated CI": minus(_interval_text(last)),
                        "CI level": f"{100 * (1 - last.level):.2f}%",
                        "adjusted p": f"{last.p_adjusted:.3g}"})
    values = pd.DataFrame(rows)
    shown = pd.DataFrame(display)
    notes = (f"Seeds until the answer is clear, per setting against the baseline ({_base_label(ds)}), measured on "
             f"{split} ({measured}): {rule_text(rule)}. Δ and its repeated confidence interval "
             "(at the level of the setting's last look) in percentage points; adjusted p: the repeated p-value, the "
             "smallest α at which the design would have decided by that look. seeds: pairs of seeds behind the "
             "last look (a seed whose run failed on either side has no pair). One guarantee per setting: with "
             "several settings, each comparison holds its own α.")
    return Table("decisions", f"Sequential confirm: what the seeds decided (α = {rule.alpha:g})", notes, values,
                 shown, ("seeds", "rounds", f"Δ ({unit})", "adjusted p"))


def _base_label(ds: Dataset) -> str:
    confirm = phase_trials(ds, Phase.CONFIRM)
    pairs = _confirm_cells(ds, confirm)
    return baseline_cell(ds, [c for c, _ in pairs])


def rounds_plot(ds: Dataset, path: Path) -> Path | None:
    """A panel per setting: its Δ against the baseline with the repeated interval at each round's look (the
    interval narrowing as seeds come in), 0 and ±margin marked (PNG and PDF)."""
    rule = seed_rule(ds)
    seen = {label: [look for look in found if math.isfinite(look.low) and math.isfinite(look.high)]
            for label, found in setting_looks(ds).items()}
    seen = {label: shown for label, shown in seen.items() if shown}
    if rule is None or not seen:
        return None
    plt = _pyplot()
    colours = cell_colours(ds)
    columns = min(len(seen), 3)
    rows = math.ceil(len(seen) / columns)
    fig, axes = plt.subplots(rows, columns, figsize=(3.6 * columns, 2.9 * rows), squeeze=False, sharex=True)
    decided = setting_looks(ds)
    for ax, (label, shown) in zip(axes.flat, seen.items(), strict=False):
        means = np.array([look.mean for look in shown])
        lows, highs = np.array([look.low for look in shown]), np.array([look.high for look in shown])
        colour = colours.get(label.split(" #")[0])
        ax.errorbar([look.n for look in shown], means, yerr=[means - lows, highs - means], marker="o", capsize=3,
                    color=colour)
        ax.axhline(0.0, color="black", linewidth=0.8)
        if rule.margin is not None:
            for sign in (-1, 1):
                ax.axhline(sign * rule.margin, color="grey", linestyle="--", linewidth=0.8)
        ax.set_title(f"{label.removeprefix('ocr.selection=')}: {decided[label][-1].decision.text}", fontsize=9,
                     color=colour)
        ax.set_xticks(list(rule.looks))
        ax.set_xlabel("seeds paired with the baseline")
        ax.set_ylabel("Δ vs baseline (pp)")
    for ax in list(axes.flat)[len(seen):]:
        ax.set_visible(False)
    path.parent.mkdir(parents=True, exist_ok=True)
    return _save(fig, path)
