"""Paper-shaped tables from a collected study: the ablation table, sensitivity to δ and τ, trial outcomes.

Every figure is computed from completed trials (``stop_reason == "completed"``: trials ASHA stopped, that
failed or still run have no final value comparable to the others) at their last epoch. A :class:`Table`
holds the numbers (``values``, for CSV and tests) and their text (``display``, for Markdown, LaTeX, HTML).
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

from record import OCR_OFF, best_setting, ocr_applies, parse_cell, value_text
from results._schema import PARAM_PREFIX, Dataset
from results._stats import paired_t_test

METRICS = (("val_miou", "val mIoU"), ("val_oc_rate", "OC rate"), ("val_oracle_miou", "oracle-tag mIoU"))
SYMBOLS = {"ocr.delta": "δ", "ocr.tau": "τ"}
SELECTION = f"{PARAM_PREFIX}ocr.selection"
EXACT_LIMIT = 6
BINS = 5


@dataclass(frozen=True)
class Table:
    """A report table: a file stem, a title, notes saying how it was computed, numbers and their text."""

    name: str
    title: str
    notes: str
    values: pd.DataFrame
    display: pd.DataFrame


def completed(ds: Dataset) -> pd.DataFrame:
    """The trials that ran every planned epoch."""
    return ds.trials[ds.trials["stop_reason"].astype(str) == "completed"]


def _pct(x: float) -> str:
    return f"{100 * x:.2f}"


def mean_std_text(mean: float, std: float, n: int) -> str:
    """``"45.12 ± 0.83 (n = 3)"`` in percent; no ± with one value; ``"—"`` with none."""
    if n == 0 or math.isnan(mean):
        return "— (n = 0)"
    if n == 1 or math.isnan(std):
        return f"{_pct(mean)} (n = {n})"
    return f"{_pct(mean)} ± {_pct(std)} (n = {n})"


def best_settings(ds: Dataset) -> pd.Series:
    """Per cell, the setting with the best mean over seeds of the study's metric (on validation)."""
    done = completed(ds)
    if done.empty:
        return pd.Series(dtype="int64")
    scores = done[f"final_{ds.info.metric}"] if f"final_{ds.info.metric}" in done else done["final_val_miou"]
    by_cell: dict[str, dict[int, list[float]]] = {}
    for (cell, setting), values in scores.groupby([done["cell"].astype(str), done["setting"]], sort=True):
        by_cell.setdefault(str(cell), {})[int(setting)] = values.dropna().tolist()
    chosen = {cell: best_setting(settings, ds.info.mode) for cell, settings in by_cell.items()}
    return pd.Series({cell: pick[0] for cell, pick in chosen.items() if pick is not None}, dtype="int64")


def cell_order(ds: Dataset, cells: list[str]) -> list[str]:
    """Cells in the order of the grid's axes and values (unknown ones last, by name)."""
    axes = ds.info.grid

    def key(cell: str) -> tuple[tuple[int, str], ...]:
        values = parse_cell(cell)
        out = []
        for axis, allowed in axes.items():
            text = [value_text(v) for v in allowed]
            value = values.get(axis, "")
            out.append((text.index(value) if value in text else len(text), value))
        return (*out, (0, cell))

    return sorted(cells, key=key)


def baseline_cell(ds: Dataset, cells: list[str]) -> str:
    """The cell without OCR (``ocr.selection=none``), else the first cell."""
    for cell in cells:
        if parse_cell(cell).get("ocr.selection") == OCR_OFF:
            return cell
    return cells[0]


def _seed_values(ds: Dataset, cell: str, setting: int, metric: str) -> pd.Series:
    done = completed(ds)
    rows = done[(done["cell"].astype(str) == cell) & (done["setting"] == setting)].drop_duplicates("seed", keep="last")
    return rows.set_index(rows["seed"].astype("int64"))[f"final_{metric}"].dropna()


def _cell_row(ds: Dataset, cell: str, setting: int, base: pd.Series | None) -> dict[str, object]:
    row: dict[str, object] = {"cell": cell, **parse_cell(cell), "setting": setting}
    done = completed(ds)
    chosen = done[(done["cell"].astype(str) == cell) & (done["setting"] == setting)]
    selection = parse_cell(cell).get("ocr.selection")
    for key in ds.info.search_keys:
        column = f"{PARAM_PREFIX}{key}"
        if not ocr_applies(key, selection):
            continue  # no effect without OCR (the spec's built-in condition)
        if column in chosen and chosen[column].notna().any():
            row[key] = chosen[column].dropna().iloc[0]
    for metric, _ in METRICS:
        values = _seed_values(ds, cell, setting, metric)
        row.update({f"{metric}_mean": values.mean() if len(values) else np.nan,
                    f"{metric}_std": values.std(ddof=1) if len(values) > 1 else np.nan, f"{metric}_n": len(values)})
    if base is not None:
        mine = _seed_values(ds, cell, setting, "val_miou")
        shared = mine.index.intersection(base.index)
        test = paired_t_test((mine[shared] - base[shared]).tolist())
        row.update({"diff_mean": test.mean, "diff_n": test.n, "p_value": test.p, "ci_low": test.ci_low,
                    "ci_high": test.ci_high})
    return row


def _incomplete_row(ds: Dataset, cell: str, is_base: bool) -> dict[str, object]:
    """The row of a cell without a completed trial: no figures, and what became of its trials."""
    mine = ds.trials[ds.trials["cell"].astype(str) == cell]
    counts = mine["stop_reason"].astype(str).value_counts()
    words = {"early_stopped": "stopped early", "failed": "failed", "running": "running", "pending": "pending"}
    fate = ", ".join(f"{n} {words.get(str(k), str(k))}" for k, n in counts.items())
    row: dict[str, object] = {"cell": cell, **parse_cell(cell), "setting": -1,
                              "incomplete": f"no completed trial ({fate})"}
    for metric, _ in METRICS:
        row.update({f"{metric}_mean": np.nan, f"{metric}_std": np.nan, f"{metric}_n": 0})
    if not is_base:
        row.update({"diff_mean": np.nan, "diff_n": 0, "p_value": np.nan, "ci_low": np.nan, "ci_high": np.nan})
    return row


def _diff_text(row: pd.Series) -> str:
    n = int(row["diff_n"]) if not pd.isna(row.get("diff_n")) else 0
    if n == 0:
        return "— (n = 0)"
    text = f"{100 * row['diff_mean']:+.2f}"
    if n >= 2:
        text += f" [{100 * row['ci_low']:+.2f}, {100 * row['ci_high']:+.2f}], p = {row['p_value']:.3g}"
    return f"{text} (n = {n})"


def _setting_text(row: pd.Series, keys: tuple[str, ...]) -> str:
    parts = [f"{SYMBOLS.get(k, k)} = " + (f"{row[k]:.3g}" if isinstance(row[k], float) else str(row[k]))
             for k in keys if k in row and not pd.isna(row[k])]
    return ", ".join(parts) or "—"


def ablation_table(ds: Dataset) -> Table:
    """The study's ablation table: from the confirm phase when the study has one (:func:`confirm_table`),
    else from the search phase (:func:`search_ablation_table`)."""
    confirm = confirm_table(ds)
    return confirm if confirm is not None else search_ablation_table(ds)


def search_ablation_table(ds: Dataset) -> Table:
    """Rows per grid cell; val mIoU, OC rate and oracle-tag mIoU as mean ± std over seeds at each cell's best
    setting (chosen on val by the study's metric), and the paired difference to the baseline cell."""
    best = best_settings(ds)
    if best.empty:
        empty = pd.DataFrame()
        return Table("ablation", "Ablation", "No completed trial yet.", empty, empty)
    # Every cell gets a row: one whose trials were all stopped early or failed says so instead of vanishing.
    cells = cell_order(ds, sorted({str(c) for c in ds.trials["cell"]} | {str(c) for c in best.index}))
    base_cell = baseline_cell(ds, cells)
    base = (_seed_values(ds, base_cell, int(best[base_cell]), "val_miou") if base_cell in best.index
            else pd.Series(dtype="float64"))
    rows = [_cell_row(ds, c, int(best[c]), None if c == base_cell else base) if c in best.index
            else _incomplete_row(ds, c, c == base_cell) for c in cells]
    values = pd.DataFrame(rows)
    return Table("ablation", "Ablation: each cell at its best setting", _ablation_notes(base_cell), values,
                 _ablation_display(ds, values))


def _ablation_display(ds: Dataset, values: pd.DataFrame, axes: list[str] | None = None,
                      split: str = "val") -> pd.DataFrame:
    shown = [axis for axis in (ds.info.grid if axes is None else axes) if axis in values]
    out = pd.DataFrame({axis.rsplit(".", 1)[-1]: values[axis].astype(object).where(values[axis].notna(), "—")
                        for axis in shown})
    if out.empty:
        out["cell"] = values["cell"]
    out["best setting"] = [r["incomplete"] if isinstance(r.get("incomplete"), str)
                           else _setting_text(r, ds.info.search_keys) for _, r in values.iterrows()]
    for metric, label in METRICS:
        key = _on_split(metric, split)
        out[f"{label.replace('val ', f'{split} ')} (%)"] = [
            mean_std_text(r[f"{key}_mean"], r[f"{key}_std"], int(r[f"{key}_n"])) for _, r in values.iterrows()]
    if "diff_mean" in values:
        out[f"Δ {split} mIoU vs baseline (95% CI, paired t)"] = [
            "baseline" if pd.isna(r.get("diff_n")) else _diff_text(r) for _, r in values.iterrows()]
    return out.reset_index(drop=True)


def _matching_cell(cells: list[str], target: dict[str, str]) -> str | None:
    """The cell agreeing with ``target`` on every key it has (keys it lacks, merged away, match anything)."""
    found = [c for c in cells if all(target.get(k, v) == v for k, v in parse_cell(c).items())]
    return max(found, key=lambda c: len(parse_cell(c))) if found else None


def axis_tables(ds: Dataset) -> list[Table]:
    """With several grid axes, one table per axis: a row per value of it, the other axes at their defaults
    (the spec's trial values), each cell at its best setting; Δ against the same baseline cell."""
    grid = ds.info.grid
    best = best_settings(ds)
    cells = [str(c) for c in best.index]
    if len(grid) < 2 or not cells:
        return []
    base_cell = baseline_cell(ds, cell_order(ds, cells))
    base = _seed_values(ds, base_cell, int(best[base_cell]), "val_miou")
    defaults = {k: value_text(ds.info.defaults.get(k, values[0])) for k, values in grid.items()}
    tables = []
    for axis, axis_values in grid.items():
        chosen = [_matching_cell(cells, {**defaults, axis: value_text(v)}) for v in axis_values]
        rows = [{**_cell_row(ds, c, int(best[c]), None if c == base_cell else base), axis: value_text(v)}
                for v, c in zip(axis_values, chosen, strict=True) if c is not None]
        if len(rows) < 2:
            continue
        values = pd.DataFrame(rows)
        fixed = ", ".join(f"{k}={v}" for k, v in defaults.items() if k != axis)
        tables.append(Table(f"ablation_{axis.rsplit('.', 1)[-1]}", f"Ablation over {axis} ({fixed})",
                            _ablation_notes(base_cell), values, _ablation_display(ds, values, [axis])))
    return tables


def _ablation_notes(base_cell: str) -> str:
    return ("Mean ± sample std over seeds, in %, at the last epoch of completed trials; n = seeds behind each "
            "figure (no std when n = 1). Each cell's setting is the one with the best mean val mIoU (chosen and "
            f"reported on val). Δ: mean per-seed difference to the baseline cell ({base_cell}) over the seeds "
            "both have, with a two-sided paired t-test across seeds (95% t confidence interval and p-value; "
            "none for n < 2).")


def bin_values(values: pd.Series, log: bool = False) -> tuple[pd.Series, list[str]]:
    """Each value's bin label, and the labels in order: exact values when few, else 5 equal-width bins
    (equal in log space when ``log`` and every value is positive)."""
    unique = np.sort(values.dropna().unique())
    if len(unique) <= EXACT_LIMIT:
        labels = [f"{v:.3g}" for v in unique]
        return values.map(dict(zip(unique, labels, strict=True))), labels
    low, high = float(unique[0]), float(unique[-1])
    log = log and low > 0
    edges = np.geomspace(low, high, BINS + 1) if log else np.linspace(low, high, BINS + 1)
    labels = [f"{a:.3g}–{b:.3g}" for a, b in itertools.pairwise(edges)]
    index = np.clip(np.searchsorted(edges, values.to_numpy(dtype="float64"), side="right") - 1, 0, BINS - 1)
    return pd.Series([labels[i] for i in index], index=values.index), labels


def sensitivity_table(ds: Dataset, key: str) -> Table | None:
    """val mIoU against one searched parameter (exact values, or 5 equal bins, log-spaced for log-sampled ones),
    per selection strategy, over every completed trial where the parameter applies; None without data."""
    column = f"{PARAM_PREFIX}{key}"
    done = completed(ds)
    if column not in done or "final_val_miou" not in done:
        return None
    group = done[SELECTION].astype(str) if SELECTION in done else done["cell"].astype(str)
    rows = done[(group != OCR_OFF) & done[column].notna()]
    if rows.empty:
        return None
    bins, labels = bin_values(rows[column].astype("float64"), key in ds.info.log_keys)
    frame = pd.DataFrame({"bin": bins, "group": group[rows.index], "value": rows["final_val_miou"]})
    stats = frame.groupby(["bin", "group"])["value"].agg(["mean", "std", "count"]).reset_index()
    stats["bin"] = pd.Categorical(stats["bin"], categories=labels, ordered=True)
    stats = stats.sort_values(["bin", "group"]).reset_index(drop=True)
    name = SYMBOLS.get(key, key)
    text = {(str(r["bin"]), str(r["group"])): mean_std_text(r["mean"], r["std"], int(r["count"]))
            for _, r in stats.iterrows()}
    groups = sorted(stats["group"].astype(str).unique())
    display = pd.DataFrame({name: labels, **{g: [text.get((b, g), "—") for b in labels] for g in groups}})
    notes = (f"val mIoU (%) of completed trials by {key} (rows) and selection strategy (columns): mean ± std over "
             "all trials in the bin (every setting and seed), n = trials; other searched parameters vary freely.")
    return Table(f"sensitivity_{key.rsplit('.', 1)[-1]}", f"Sensitivity: val mIoU against {name}", notes,
                 stats.rename(columns={"count": "n"}), display)


def outcome_table(ds: Dataset) -> Table:
    """Trials per cell by why they stopped, with the epochs they ran."""
    trials = ds.trials
    cells = cell_order(ds, sorted(trials["cell"].astype(str).unique()))
    counts = pd.crosstab(trials["cell"].astype(str), trials["stop_reason"].astype(str)).reindex(cells)
    counts["trials"] = counts.sum(axis=1)
    counts["epochs run"] = trials.groupby(trials["cell"].astype(str))["epochs"].sum().reindex(cells).astype("int64")
    values = counts.reset_index().rename(columns={"index": "cell", "row_0": "cell"})
    values.columns.name = None
    notes = ("completed: ran every planned epoch; early_stopped: stopped by ASHA at a rung; stopped: ended early "
             "otherwise (time budget); failed: raised an error; running: still in progress when collected.")
    return Table("outcomes", "Trials by outcome", notes, values, values.astype(str))


def phase_trials(ds: Dataset, phase: str) -> pd.DataFrame:
    """The trials of one phase (a dataset from before phases were recorded is all search)."""
    if "phase" not in ds.trials:
        return ds.trials if phase == "search" else ds.trials.iloc[0:0]
    return ds.trials[ds.trials["phase"].astype(str) == phase]


def search_only(ds: Dataset) -> Dataset:
    """``ds`` with only its search-phase trials."""
    return Dataset(phase_trials(ds, "search"), ds.curves, ds.info, ds.source)


def _confirm_cells(ds: Dataset, confirm: pd.DataFrame) -> list[tuple[str, int]]:
    """(cell, search setting) of every confirm row, best-ranked first; cells with nothing chosen get -1."""
    planned = {str(c["id"]): [int(s) for s in c.get("settings") or []] for c in ds.info.confirm.get("cells", [])}
    for (cell, setting), _ in confirm.groupby([confirm["cell"].astype(str), confirm["setting"]], sort=True):
        if int(setting) not in planned.setdefault(str(cell), []):
            planned[str(cell)].append(int(setting))
    cells = cell_order(ds, sorted(set(planned) | {str(c) for c in ds.trials["cell"]}))
    return [(c, s) for c in cells for s in (planned.get(c) or [-1])]


def measured_split(confirm: pd.DataFrame) -> str:
    """Where the confirm phase measured: ``test`` when its trials scored a held-out test split (the digit
    scenes), else ``val`` (VOC and COCO, as papers report)."""
    column = "final_test_miou"
    return "test" if column in confirm and confirm[column].notna().any() else "val"


def _on_split(metric: str, split: str) -> str:
    """``val_miou`` → ``test_miou`` when measuring on test; other names unchanged."""
    return f"{split}_{metric[4:]}" if metric.startswith("val_") else metric


def _confirm_values(confirm: pd.DataFrame, cell: str, setting: int, metric: str) -> pd.Series:
    mine = confirm[(confirm["cell"].astype(str) == cell) & (confirm["setting"] == setting)]
    done = mine[mine["stop_reason"].astype(str) == "completed"].drop_duplicates("seed", keep="last")
    column = f"final_{_on_split(metric, measured_split(confirm))}"
    if column not in done:
        return pd.Series(dtype="float64")
    values = done.set_index(done["seed"].astype("int64"))[column].astype("float64")
    return values[np.isfinite(values)]


def _confirm_problems(confirm: pd.DataFrame, cell: str, setting: int, metric: str) -> str:
    """What went wrong in a cell's confirm runs, in words ("failed in 2 of 5 seeds; diverged (NaN) in 1")."""
    mine = confirm[(confirm["cell"].astype(str) == cell) & (confirm["setting"] == setting)]
    if mine.empty:
        return "no confirm run (no search trial of this cell reported a value)"
    n = len(mine)
    reasons = mine["stop_reason"].astype(str)
    errors = mine["error"].astype(str) if "error" in mine else pd.Series("", index=mine.index)
    final = pd.to_numeric(mine.get(f"final_{metric}"), errors="coerce") if f"final_{metric}" in mine else None
    parts = []
    nan = int((reasons == "failed").mul(errors.str.contains("NaN|nan|non-finite|diverg", regex=True)).sum())
    if nan:
        parts.append(f"diverged (NaN) in {nan} of {n} seeds")
    if int((reasons == "failed").sum()) - nan:
        parts.append(f"failed in {int((reasons == 'failed').sum()) - nan} of {n} seeds")
    if final is not None and int(((reasons == "completed") & ~np.isfinite(final)).sum()):
        parts.append(f"no finite {metric} in {int(((reasons == 'completed') & ~np.isfinite(final)).sum())} of {n}")
    unfinished = int((~reasons.isin(["completed", "failed"])).sum())
    if unfinished:
        parts.append(f"{unfinished} of {n} not finished")
    return "; ".join(parts)


def _confirm_row(ds: Dataset, confirm: pd.DataFrame, cell: str, setting: int, base: pd.Series | None
                 ) -> dict[str, object]:
    metric = ds.info.metric
    row: dict[str, object] = {"cell": cell, **parse_cell(cell), "setting": setting}
    chosen = confirm[(confirm["cell"].astype(str) == cell) & (confirm["setting"] == setting)]
    selection = parse_cell(cell).get("ocr.selection")
    for key in ds.info.search_keys:
        column = f"{PARAM_PREFIX}{key}"
        if ocr_applies(key, selection) and column in chosen and chosen[column].notna().any():
            row[key] = chosen[column].dropna().iloc[0]
    split = measured_split(confirm)
    for measure, _ in METRICS:
        values = _confirm_values(confirm, cell, setting, measure)
        name = _on_split(measure, split)  # the key says where it was measured
        row.update({f"{name}_mean": values.mean() if len(values) else np.nan,
                    f"{name}_std": values.std(ddof=1) if len(values) > 1 else np.nan, f"{name}_n": len(values)})
    row["problems"] = _confirm_problems(confirm, cell, setting, metric)
    if base is not None:
        mine = _confirm_values(confirm, cell, setting, metric)
        shared = mine.index.intersection(base.index)
        test = paired_t_test((mine[shared] - base[shared]).tolist())
        row.update({"diff_mean": test.mean, "diff_n": test.n, "p_value": test.p, "ci_low": test.ci_low,
                    "ci_high": test.ci_high, "wilcoxon_p": test.wilcoxon_p})
    return row


def confirm_table(ds: Dataset) -> Table | None:
    """The ablation table from the confirm phase: a row for every cell (each chosen setting of it), val
    mIoU, OC rate and oracle-tag mIoU as mean ± std over the confirm seeds, and Δ against the baseline over
    the same seeds (paired t-test: 95% CI and p; Wilcoxon signed-rank p when n ≥ 5); None without a
    confirm phase."""
    confirm = phase_trials(ds, "confirm")
    if confirm.empty and not ds.info.confirm:
        return None
    pairs = _confirm_cells(ds, confirm)
    base_cell = baseline_cell(ds, [c for c, _ in pairs])
    base_setting = next(s for c, s in pairs if c == base_cell)
    base = _confirm_values(confirm, base_cell, base_setting, ds.info.metric)
    rows = [_confirm_row(ds, confirm, c, s, None if c == base_cell else base) for c, s in pairs]
    values = pd.DataFrame(rows)
    split = measured_split(confirm)
    display = _ablation_display(ds, values, split=split)
    display["best setting"] = [_setting_text(r, ds.info.search_keys) for _, r in values.iterrows()]
    if "wilcoxon_p" in values:
        display["Wilcoxon p"] = ["" if pd.isna(r.get("diff_n")) else
                                 ("—" if pd.isna(r["wilcoxon_p"]) else f"{r['wilcoxon_p']:.3g}")
                                 for _, r in values.iterrows()]
    display["notes"] = values["problems"].fillna("").astype(str).tolist()
    return Table("ablation", f"Ablation (confirm phase, measured on {split}): each cell's chosen setting on every "
                 "confirm seed", _confirm_notes(ds, base_cell, split), values, display)


def _rule_text(ds: Dataset) -> str:
    rules = {(c.get("rule"), c.get("epoch")) for c in ds.info.confirm.get("cells", []) if c.get("rule") != "none"}
    words = []
    for rule, epoch in sorted(rules, key=str):
        words.append("among search trials that completed every epoch" if rule == "completed"
                     else f"by {ds.info.metric} at epoch {epoch}, the highest rung every ranked setting reached")
    return "; ".join(words) or "no setting was chosen"


def _confirm_notes(ds: Dataset, base_cell: str, split: str = "val") -> str:
    confirm = ds.info.confirm
    seeds = confirm.get("seeds", [])
    return (f"Mean ± sample std over the confirm seeds {seeds} (n = seeds behind each figure), in %, at the last "
            f"of {confirm.get('epochs', '?')} epochs, run without early stopping. Settings chosen in the search "
            f"phase on val by {confirm.get('metric', ds.info.metric)} ({confirm.get('mode', ds.info.mode)}), "
            f"{_rule_text(ds)}; measured on {_split_words(split)} in the confirm phase. Δ: mean per-seed difference "
            f"to the baseline cell ({base_cell}) over the seeds both have, two-sided paired t-test (95% t confidence "
            "interval and p-value; none for n < 2) and Wilcoxon signed-rank p-value (for n ≥ 5).")


def _split_words(split: str) -> str:
    return ("the held-out test split (images and glyphs no setting was chosen on)" if split == "test"
            else "val (the split papers report on VOC and COCO)")


def report_tables(ds: Dataset) -> list[Table]:
    """The tables of a report: with a confirm phase, its ablation table first, then the search phase's
    tables as sensitivity and budget sections; ablation (per cell, then per grid axis), sensitivity to each
    searched parameter, outcomes."""
    confirm = confirm_table(ds)
    if confirm is not None:
        search = search_only(ds)
        first = search_ablation_table(search)
        first = Table("search_ablation", f"Search phase: {first.title} (selection, not measurement)",
                      first.notes, first.values, first.display)
        return [confirm, first, *_search_tables(search), outcome_table(ds)]
    return [search_ablation_table(ds), *_search_tables(ds), outcome_table(ds)]


def _search_tables(ds: Dataset) -> list[Table]:
    tables = [*axis_tables(ds)]
    for key in ds.info.search_keys or tuple(k for k in ("ocr.delta", "ocr.tau") if f"{PARAM_PREFIX}{k}" in ds.trials):
        table = sensitivity_table(ds, key)
        if table is not None:
            tables.append(table)
    return tables
