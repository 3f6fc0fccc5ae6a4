"""Paper-shaped tables from a collected study: the ablation table, sensitivity to δ and τ, trial outcomes.

Every figure is computed from completed trials (``stop_reason == "completed"``: trials ASHA stopped, that
failed or still run have no final value comparable to the others) at their last epoch. A :class:`Table`
holds the numbers (``values``, for CSV and tests) and their text (``display``, for Markdown, LaTeX, HTML).
"""

from __future__ import annotations

import functools
import itertools
import math
import re
from collections.abc import Callable

import numpy as np
import pandas as pd

from record import (
    OCR_OFF,
    Phase,
    StopReason,
    best_setting,
    metric_text,
    ocr_applies,
    parse_cell,
    ranked,
    value_text,
)
from results._errors import ResultsError
from results._importance import importance_table
from results._schema import PARAM_PREFIX, Dataset
from results._stats import paired_t_test
from results._table import SYMBOLS, Table

# Two OC rates are logged: the paper's (out-of-candidate share of the pixels predicted foreground, the
# default) and the share of all valid pixels; each is labelled by what it measures.
OC_RATES = {"fg": ("val_oc_rate_fg", "OC rate (% of foreground predictions)"),
            "pixels": ("val_oc_rate", "OC rate (% of valid pixels)")}
# The same, as a table's column header says it (short enough for a printed table; the notes say what it is).
OC_HEADERS = {"val_oc_rate_fg": "OC rate", "val_oc_rate": "OC rate of pixels"}
OC_DEFAULT = "fg"
# An OC rate is bold only among cells whose mean mIoU is at most this many percentage points below the best
# cell's: a low OC rate bought with a collapsed mIoU is no result.
REACH_PP = 1.0
MINUS = "\u2212"  # a number's minus sign (U+2212) as tables show it; LaTeX gets $-$
# (metric, label, better): every metric a table computes (values, CSV); which one is better decides bold.
# Post-processed figures (dense CRF; the last report's final protocol, eval.final_scales): shown beside the
# raw ones when the study logged them, the protocol in the table's notes.
POSTPROCESSED: tuple[tuple[str, str, str], ...] = (
    ("val_miou_crf", "val mIoU + CRF", "max"), ("val_final_miou", "val mIoU, final protocol", "max"),
    ("val_final_miou_crf", "val mIoU, final protocol + CRF", "max"))
METRICS: tuple[tuple[str, str, str], ...] = (
    ("val_miou", "val mIoU", "max"), (*OC_RATES["fg"], "min"), (*OC_RATES["pixels"], "min"),
    ("val_oracle_miou", "oracle-tag mIoU", "max"), *POSTPROCESSED)
SELECTION = f"{PARAM_PREFIX}ocr.selection"
EXACT_LIMIT = 6
BINS = 5


def completed(ds: Dataset) -> pd.DataFrame:
    """The trials that ran every planned epoch."""
    return ds.trials[ds.trials["stop_reason"].astype(str) == StopReason.COMPLETED]


def minus(text: str) -> str:
    """``text`` with each hyphen that stands for a minus sign (before a digit, not inside a word) as the minus
    sign (U+2212), as printed tables write it."""
    return re.sub(r"(?<![\w.-])-(?=\d)", MINUS, text)


def _pct(x: float) -> str:
    return minus(f"{100 * x:.2f}")


def mean_std_text(mean: float, std: float, n: int, show_n: bool = True) -> str:
    """``"45.12 ± 0.83 (n = 3)"`` in percent; no ± with one value; ``"—"`` with none; without ``(n = …)``
    when ``show_n`` is false (the column's header says n)."""
    suffix = f" (n = {n})" if show_n else ""
    if n == 0 or math.isnan(mean):
        return "—" + suffix
    if n == 1 or math.isnan(std):
        return f"{_pct(mean)}{suffix}"
    return f"{_pct(mean)} ± {_pct(std)}{suffix}"


def setting_number(value: float) -> str:
    """A sampled value as tables show it: 2 significant digits, as the MLflow run names (``7.7``, ``0.061``)."""
    return minus(f"{value:.2g}")


def check_oc_rate(definition: str) -> str:
    """``definition`` when it names an OC rate (``fg`` or ``pixels``), else a :class:`ResultsError` saying
    which exist."""
    if definition not in OC_RATES:
        raise ResultsError(f"OC rate definition {definition!r}: use one of {', '.join(OC_RATES)} (fg: share of "
                           "foreground predictions, the paper's; pixels: share of valid pixels)")
    return definition


def oc_metric(ds: Dataset, definition: str = OC_DEFAULT) -> tuple[str, str]:
    """(metric, label) of the OC rate to show: ``fg`` (the paper's: share of foreground predictions) or
    ``pixels`` (share of valid pixels); a study that logged only the other one shows that one, labelled."""
    metric, label = OC_RATES[check_oc_rate(definition)]
    if f"final_{metric}" not in ds.trials:
        other = next(v for k, v in OC_RATES.items() if k != definition)
        if f"final_{other[0]}" in ds.trials:
            return other
    return metric, label


def shown_metrics(ds: Dataset, oc: str = OC_DEFAULT) -> list[tuple[str, str, str]]:
    """The metric columns of the ablation tables: val mIoU, the chosen OC rate, oracle-tag mIoU."""
    rate = oc_metric(ds, oc)[0]
    post = {m[0] for m in POSTPROCESSED}
    return [m for m in METRICS if (m[0] == rate or m[0] not in {v[0] for v in OC_RATES.values()})
            and (m[0] not in post or f"final_{m[0]}" in ds.trials or f"final_{_on_split(m[0], 'test')}" in ds.trials)]


def _param(ds: Dataset, key: str, default: str) -> str:
    column = f"{PARAM_PREFIX}{key}"
    values = ds.trials[column].dropna() if column in ds.trials else pd.Series(dtype=object)
    return str(values.iloc[0]) if len(values) else default


def _views(scales: list[float], flip: bool, crf: bool, fusion: str) -> str:
    text = "scales " + "/".join(f"{s:g}" for s in scales) + (", flip" if flip else ", no flip")
    if len(scales) > 1 or flip:
        text += f", {'probabilities' if fusion == 'prob' else 'logits'} averaged"
    return text + (", dense CRF" if crf else "")


def protocol_note(ds: Dataset) -> str:
    """How the figures were evaluated (the trials' ``eval.*`` parameters): every report's protocol and, when
    the study logged it, the last report's final protocol."""
    def true(key: str, default: str) -> bool:
        return _param(ds, key, default).lower() in ("true", "1", "yes")

    low, high = float(_param(ds, "eval.scale_min", "1")), float(_param(ds, "eval.scale_max", "1"))
    step = float(_param(ds, "eval.scale_step", "0.25"))
    scales = [round(low + i * step, 6) for i in range(math.floor((high - low) / step + 1e-9) + 1)]
    fusion = _param(ds, "eval.fusion", "prob")
    text = f"Evaluated at full resolution, every report: {_views(scales, true('eval.flip', 'false'), False, fusion)}"
    if true("eval.crf", "false"):
        text += " (+ CRF columns: dense CRF on those scores)"
    final = [float(v) for v in _param(ds, "eval.final_scales", "").split(",") if v.strip()]
    if final and any(m[0].startswith("val_final") for m in shown_metrics(ds)):
        views = _views(final, true("eval.final_flip", "true"), False, fusion)
        text += (f"; final protocol (the last report only): {views}"
                 + (" (+ CRF: dense CRF on those scores)" if true("eval.final_crf", "false") else ""))
    return text + "."


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
    if f"final_{metric}" not in rows:  # a metric this study never logged
        return pd.Series(dtype="float64")
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
    for metric, _, _ in METRICS:
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
    fate = ", ".join(f"{n} {StopReason(k).text if k in set(StopReason) else k}" for k, n in counts.items())
    row: dict[str, object] = {"cell": cell, **parse_cell(cell), "setting": -1,
                              "incomplete": f"no completed trial ({fate})"}
    for metric, _, _ in METRICS:
        row.update({f"{metric}_mean": np.nan, f"{metric}_std": np.nan, f"{metric}_n": 0})
    if not is_base:
        row.update({"diff_mean": np.nan, "diff_n": 0, "p_value": np.nan, "ci_low": np.nan, "ci_high": np.nan})
    return row


DIFF_LABEL = "Δ val mIoU (pp)"
P_LABEL = "p (paired t)"
WILCOXON_LABEL = "p (Wilcoxon)"


def _diff_text(row: pd.Series, show_n: bool = True) -> str:
    """``"+1.48 [−2.10, +5.06]"``: the mean paired difference in pp and its 95% CI (none for n < 2)."""
    n = int(row["diff_n"]) if not pd.isna(row.get("diff_n")) else 0
    suffix = f" (n = {n})" if show_n else ""
    if n == 0:
        return "—" + suffix
    text = f"{100 * row['diff_mean']:+.2f}"
    if n >= 2:
        text += f" [{100 * row['ci_low']:+.2f}, {100 * row['ci_high']:+.2f}]"
    return minus(text) + suffix


def _p_text(value: object) -> str:
    return "—" if value is None or pd.isna(value) else minus(f"{float(value):.2g}")  # type: ignore[arg-type]


def excludes_zero(row: pd.Series, better: str = "max") -> bool:
    """Whether a row's difference to the baseline has a 95% confidence interval (n ≥ 2) wholly on the better
    side of 0 (``better``: ``max``, above; ``min``, below): a gain the seeds bear out."""
    n = row.get("diff_n")
    if n is None or pd.isna(n) or int(n) < 2:
        return False
    low, high = row.get("ci_low"), row.get("ci_high")
    if pd.isna(low) or pd.isna(high):
        return False
    return bool(float(low) > 0) if better == "max" else bool(float(high) < 0)


def within_reach(means: pd.Series, counts: pd.Series, better: str = "max", reach_pp: float = REACH_PP) -> pd.Series:
    """Per row, whether its mean mIoU (a share) is within ``reach_pp`` percentage points of the best row's
    (rows without data: never)."""
    values = 100 * pd.to_numeric(means, errors="coerce").where(counts.fillna(0) > 0)
    if values.notna().sum() == 0:
        return pd.Series(False, index=means.index)
    best = values.max() if better == "max" else values.min()
    gap = best - values if better == "max" else values - best
    return (gap <= reach_pp + 1e-9).fillna(False)


def drop_empty_columns(display: pd.DataFrame, numeric: tuple[str, ...], bold: tuple[tuple[int, str], ...],
                       keep: tuple[str, ...] = ()) -> tuple[pd.DataFrame, tuple[str, ...], tuple[tuple[int, str], ...]]:
    """``display`` without the columns that hold nothing in any row (only ``""``, ``"—"`` or missing), and
    ``numeric``/``bold`` without them; ``keep`` names columns that stay regardless."""
    empty = [c for c in display.columns if str(c) not in keep
             and all(pd.isna(v) or str(v).strip() in ("", "—") for v in display[c])]
    out = display.drop(columns=empty)
    gone = {str(c) for c in empty}
    return out, tuple(c for c in numeric if c not in gone), tuple((r, c) for r, c in bold if c not in gone)


def _setting_text(row: pd.Series, keys: tuple[str, ...]) -> str:
    parts = [f"{SYMBOLS.get(k, k)} = " + (setting_number(row[k]) if isinstance(row[k], float) else str(row[k]))
             for k in keys if k in row and not pd.isna(row[k])]
    return ", ".join(parts) or "—"


def common_n(counts: pd.Series) -> int | None:
    """The one n behind every figure of a column (rows without any ignored), else None."""
    found = {int(n) for n in counts.dropna() if int(n) > 0}
    return found.pop() if len(found) == 1 else None


def header(label: str, n: int | None, unit: str = "%") -> str:
    """A column header stating the unit (and n when one n holds for the whole column):
    ``"val mIoU (%, n = 3)"``; a label that already names its unit keeps its words."""
    text = label if f"({unit}" in label else f"{label} ({unit})"
    return text if n is None else f"{text[:-1]}, n = {n})"


def best_rows(means: pd.Series, counts: pd.Series, better: str, decimals: int = 2) -> list[int]:
    """Positions of the best value (``better``: ``max`` or ``min``) among rows with data, ties at the shown
    precision (``decimals`` in percent) included."""
    shown = (100 * pd.to_numeric(means, errors="coerce")).round(decimals).where(counts.fillna(0) > 0)
    if shown.notna().sum() == 0:
        return []
    target = shown.max() if better == "max" else shown.min()
    return [i for i, v in enumerate(shown.tolist()) if v == target]


def _better(ds: Dataset, metric: str, default: str) -> str:
    return ds.info.mode if metric == ds.info.metric and ds.info.mode in ("max", "min") else default


def ablation_table(ds: Dataset, oc: str = OC_DEFAULT) -> Table:
    """The study's ablation table: from the confirm phase when the study has one (:func:`confirm_table`),
    else from the search phase (:func:`search_ablation_table`)."""
    confirm = confirm_table(ds, oc)
    return confirm if confirm is not None else search_ablation_table(ds, oc)


def search_ablation_table(ds: Dataset, oc: str = OC_DEFAULT) -> Table:
    """Rows per grid cell; val mIoU, OC rate (``oc``: see :func:`oc_metric`) and oracle-tag mIoU as mean ± std
    over seeds at each cell's best setting (chosen on val by the study's metric), and the paired difference
    to the baseline cell; the best value of each metric column in bold."""
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
    return Table("ablation", "Ablation: each cell at its best setting", _ablation_notes(ds, base_cell, oc), values,
                 *_ablation_display(ds, values, oc=oc))


def _ablation_display(ds: Dataset, values: pd.DataFrame, axes: list[str] | None = None, oc: str = OC_DEFAULT,
                      split: str = "val") -> tuple[pd.DataFrame, tuple[str, ...], tuple[tuple[int, str], ...]]:
    """The ablation table's text, its numeric columns and its bold cells (each metric column's best);
    ``split`` names where the figures were measured (``test`` for a confirm phase scored on a test split)."""
    shown = [axis for axis in (ds.info.grid if axes is None else axes) if axis in values]
    out = pd.DataFrame({axis.rsplit(".", 1)[-1]: values[axis].astype(object).where(values[axis].notna(), "—")
                        for axis in shown})
    if out.empty:
        out["cell"] = values["cell"]
    out["best setting"] = [r["incomplete"] if isinstance(r.get("incomplete"), str)
                           else _setting_text(r, ds.info.search_keys) for _, r in values.iterrows()]
    numeric: list[str] = []
    bold: list[tuple[int, str]] = []
    miou = _on_split("val_miou", split)
    reach = within_reach(values[f"{miou}_mean"], values[f"{miou}_n"], _better(ds, "val_miou", "max")) \
        if f"{miou}_mean" in values else pd.Series(True, index=values.index)
    for metric, label, better in shown_metrics(ds, oc):
        key = _on_split(metric, split)
        n = common_n(values[f"{key}_n"])
        short = OC_HEADERS.get(metric, label)
        column = header(short.replace("val ", f"{split} "), n)
        out[column] = [mean_std_text(r[f"{key}_mean"], r[f"{key}_std"], int(r[f"{key}_n"]), n is None)
                       for _, r in values.iterrows()]
        numeric.append(column)
        if metric in OC_HEADERS:  # the lowest OC rate among the cells whose mIoU is within reach of the best
            rows = [int(i) for i in np.flatnonzero(reach.to_numpy())]
            picked = best_rows(values[f"{key}_mean"].iloc[rows].reset_index(drop=True),
                               values[f"{key}_n"].iloc[rows].reset_index(drop=True), _better(ds, metric, better))
            bold += [(rows[i], column) for i in picked]
        else:
            bold += [(i, column) for i in best_rows(values[f"{key}_mean"], values[f"{key}_n"],
                                                    _better(ds, metric, better))]
    if "diff_mean" in values:
        n = common_n(values["diff_n"])
        label = DIFF_LABEL.replace("val ", f"{split} ")
        column = label if n is None else f"{label[:-1]}, n = {n})"
        out[column] = ["baseline" if pd.isna(r.get("diff_n")) else _diff_text(r, n is None)
                       for _, r in values.iterrows()]
        numeric.append(column)
        better = _better(ds, "val_miou", "max")
        bold += [(i, column) for i, (_, r) in enumerate(values.iterrows()) if excludes_zero(r, better)]
        out[P_LABEL] = ["" if pd.isna(r.get("diff_n")) else _p_text(r.get("p_value")) for _, r in values.iterrows()]
        numeric.append(P_LABEL)
    return drop_empty_columns(out.reset_index(drop=True), tuple(numeric), tuple(bold), keep=("best setting",))


BOLD_NOTE = (f"Bold: the best mIoU of each mIoU column; the lowest OC rate among the cells whose mean mIoU is "
             f"within {REACH_PP:g} pp of the best cell's (a low OC rate with a collapsed mIoU is no result); a Δ "
             "whose 95% confidence interval excludes 0 on the side of a gain (a significant loss is not bold).")


def _matching_cell(cells: list[str], target: dict[str, str]) -> str | None:
    """The cell agreeing with ``target`` on every key it has (keys it lacks, merged away, match anything)."""
    found = [c for c in cells if all(target.get(k, v) == v for k, v in parse_cell(c).items())]
    return max(found, key=lambda c: len(parse_cell(c))) if found else None


def axis_tables(ds: Dataset, oc: str = OC_DEFAULT) -> list[Table]:
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
                            _ablation_notes(ds, base_cell, oc), values, *_ablation_display(ds, values, [axis], oc)))
    return tables


def oc_note(ds: Dataset, oc: str = OC_DEFAULT) -> str:
    """What the OC rate shown measures, in words."""
    if oc_metric(ds, oc)[0] == OC_RATES["fg"][0]:
        return ("OC rate: share of the pixels predicted as a foreground class whose class is not among the "
                "image's tags (the paper's definition)")
    return "OC rate: share of all valid pixels whose predicted class is not among the image's tags"


def _ablation_notes(ds: Dataset, base_cell: str, oc: str = OC_DEFAULT) -> str:
    return ("Mean ± sample std over seeds, in %, at the last epoch of completed trials; n = seeds behind each "
            f"figure (in the header when every row has the same n; no std when n = 1). {BOLD_NOTE} "
            f"{oc_note(ds, oc)}. Each cell's setting is the one with the best mean val mIoU "
            "(chosen and reported on val). Δ: mean per-seed difference to the baseline cell "
            f"({base_cell}) in percentage points (pp) over the seeds both have, with its 95% t confidence "
            "interval in brackets; p: two-sided paired t-test across seeds (none for n < 2). " + protocol_note(ds))


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
    columns = {g: f"{g}: val mIoU (%)" for g in groups}
    display = pd.DataFrame({name: labels, **{columns[g]: [text.get((b, g), "—") for b in labels] for g in groups}})
    bold = []
    for g in groups:
        mine = stats[stats["group"].astype(str) == g].set_index("bin")["mean"].reindex(labels)
        counts = stats[stats["group"].astype(str) == g].set_index("bin")["count"].reindex(labels)
        bold += [(i, columns[g]) for i in best_rows(mine.reset_index(drop=True), counts.reset_index(drop=True),
                                                     _better(ds, "val_miou", "max"))]
    notes = (f"val mIoU (%) of completed trials by {key} (rows) and selection strategy (columns): mean ± std over "
             "all trials in the bin (every setting and seed), n = trials; other searched parameters vary freely; "
             "best bin of each column in bold.")
    return Table(f"sensitivity_{key.rsplit('.', 1)[-1]}", f"Sensitivity: val mIoU against {name}", notes,
                 stats.rename(columns={"count": "n"}), display, (name, *columns.values()), tuple(bold))


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
    display = values.astype(str)
    return Table("outcomes", "Trials by outcome", notes, values, display,
                 tuple(str(c) for c in display.columns if c != "cell"))


def phase_trials(ds: Dataset, phase: str) -> pd.DataFrame:
    """The trials of one phase (a dataset from before phases were recorded is all search)."""
    if "phase" not in ds.trials:
        return ds.trials if phase == Phase.SEARCH else ds.trials.iloc[0:0]
    return ds.trials[ds.trials["phase"].astype(str) == phase]


def search_only(ds: Dataset) -> Dataset:
    """``ds`` with only its search-phase trials."""
    return Dataset(phase_trials(ds, Phase.SEARCH), ds.curves, ds.info, ds.source)


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
    done = mine[mine["stop_reason"].astype(str) == StopReason.COMPLETED].drop_duplicates("seed", keep="last")
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
    nan = int((reasons == StopReason.FAILED).mul(errors.str.contains("NaN|nan|non-finite|diverg", regex=True)).sum())
    if nan:
        parts.append(f"diverged (NaN) in {nan} of {n} seeds")
    if int((reasons == StopReason.FAILED).sum()) - nan:
        parts.append(f"failed in {int((reasons == StopReason.FAILED).sum()) - nan} of {n} seeds")
    if final is not None and int(((reasons == StopReason.COMPLETED) & ~np.isfinite(final)).sum()):
        parts.append(f"no finite {metric} in {int(((reasons == StopReason.COMPLETED) & ~np.isfinite(final)).sum())} "
                     f"of {n}")
    unfinished = int((~reasons.isin([StopReason.COMPLETED, StopReason.FAILED])).sum())
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
    for measure, _, _ in METRICS:
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


def confirm_table(ds: Dataset, oc: str = OC_DEFAULT) -> Table | None:
    """The ablation table from the confirm phase: a row for every cell (each chosen setting of it), val
    mIoU, OC rate and oracle-tag mIoU as mean ± std over the confirm seeds, and Δ against the baseline over
    the same seeds (paired t-test: 95% CI and p; Wilcoxon signed-rank p when n ≥ 5); None without a
    confirm phase."""
    confirm = phase_trials(ds, Phase.CONFIRM)
    if confirm.empty and not ds.info.confirm:
        return None
    pairs = _confirm_cells(ds, confirm)
    base_cell = baseline_cell(ds, [c for c, _ in pairs])
    base_setting = next(s for c, s in pairs if c == base_cell)
    base = _confirm_values(confirm, base_cell, base_setting, ds.info.metric)
    rows = [_confirm_row(ds, confirm, c, s, None if c == base_cell else base) for c, s in pairs]
    values = pd.DataFrame(rows)
    split = measured_split(confirm)
    display, numeric, bold = _ablation_display(ds, values, oc=oc, split=split)
    display["best setting"] = [_setting_text(r, ds.info.search_keys) for _, r in values.iterrows()]
    display = display.rename(columns={"best setting": "setting"})
    if "wilcoxon_p" in values:
        display[WILCOXON_LABEL] = ["" if pd.isna(r.get("diff_n")) else _p_text(r["wilcoxon_p"])
                                  for _, r in values.iterrows()]
        numeric += (WILCOXON_LABEL,)
    display["notes"] = values["problems"].fillna("").astype(str).tolist()
    display, numeric, bold = drop_empty_columns(display, numeric, bold, keep=("setting",))
    return Table("ablation", f"Ablation (confirm phase, measured on {split}): each cell's chosen setting on every "
                 "confirm seed", _confirm_notes(ds, base_cell, oc, split), values, display, numeric, bold)


def rule_words(rule: object, epoch: object, metric: str) -> str:
    """How the confirm phase ranked a cell's settings (``study.json``'s ``rule`` and ``epoch``), in words."""
    if rule == "completed":
        return "final values of the settings that completed every seed"
    if rule == "epoch":
        return f"{metric} at epoch {epoch}, the highest ASHA rung every ranked setting reached on every seed"
    return "nothing: no search trial reported a value"


def _rule_text(ds: Dataset) -> str:
    metric = ds.info.confirm.get("metric", ds.info.metric)
    words = [f"{c.get('id')}: {rule_words(c.get('rule'), c.get('epoch'), metric)}"
             for c in ds.info.confirm.get("cells", [])]
    return "ranked per cell by " + "; ".join(words) if words else "no setting was chosen"


def _confirm_notes(ds: Dataset, base_cell: str, oc: str = OC_DEFAULT, split: str = "val") -> str:
    confirm = ds.info.confirm
    seeds = confirm.get("seeds", [])
    lead = ""
    if confirm.get("seed_rule"):
        lead = ("Seeds added until the answer was clear (a sequential confirm phase, up to all of the seeds "
                "below): each row's n is what its rule gave it, and the 95% intervals and p-values here ignore the "
                "repeated looks; the decisions table holds the adjusted ones. ")
    return lead + (f"Mean ± sample std over the confirm seeds {seeds} (n = seeds behind each figure, in the header "
            f"when every row has the same n), in %, at the last of {confirm.get('epochs', '?')} epochs, run "
            f"without early stopping. {BOLD_NOTE} {oc_note(ds, oc)}. Settings chosen "
            f"in the search phase on val by {confirm.get('metric', ds.info.metric)} "
            f"({confirm.get('mode', ds.info.mode)}), {_rule_text(ds)} (the search-phase "
            f"selection table shows every score); measured on {_split_words(split)} in "
            "the confirm phase. "
            f"Δ: mean per-seed difference to the baseline cell ({base_cell}) in percentage points (pp) over "
            "the seeds both have, with its 95% t confidence interval in brackets; p: two-sided paired t-test "
            "(none for n < 2) and, for n ≥ 5, Wilcoxon signed-rank test. " + protocol_note(ds))


def _split_words(split: str) -> str:
    return ("the held-out test split (images and glyphs no setting was chosen on)" if split == "test"
            else "val (the split papers report on VOC and COCO)")


def _in_percent(metric: str) -> bool:
    return metric_text(metric, 0.5).endswith("%")


def _metric_value(metric: str, value: float) -> str:
    """A metric's value as a table cell: in percent (the header says so) for shares, else as it is."""
    return _pct(value) if _in_percent(metric) else minus(f"{value:.4g}")


REASONS = frozenset(StopReason)


def _trial_text(reason: str, value: object, epochs: object, seed: object, metric: str, several_seeds: bool) -> str:
    """One search trial at the last epoch it reached: ``"40.09 (e3)"``, ``"31.52 (e1, stopped)"``."""
    words = StopReason(reason).text if reason in REASONS else reason
    ran = 0 if epochs is None or pd.isna(epochs) else int(epochs)  # type: ignore[call-overload]
    if value is None or pd.isna(value) or ran == 0:
        text = words
    else:
        fate = "" if reason == StopReason.COMPLETED else (", stopped" if reason == StopReason.EARLY_STOPPED
                                                          else f", {words}")
        text = f"{_metric_value(metric, float(value))} (e{ran}{fate})"  # type: ignore[arg-type]
    return f"s{seed}: {text}" if several_seeds else text


def _trials_texts(search: pd.DataFrame, metric: str, several_seeds: bool) -> dict[tuple[str, int], str]:
    """Per (cell, setting), its search trials in seed order (:func:`_trial_text`), ``"; "`` between them."""
    ordered = search.sort_values("seed", kind="stable")
    values = ordered[f"final_{metric}"] if f"final_{metric}" in ordered else pd.Series(np.nan, index=ordered.index)
    texts = pd.Series([_trial_text(str(r), v, e, s, metric, several_seeds) for r, v, e, s in zip(
        ordered["stop_reason"].astype(str), values, ordered["epochs"], ordered["seed"], strict=True)],
        index=ordered.index, dtype=object)
    joined = texts.groupby([ordered["cell"].astype(str), ordered["setting"].astype("int64")], sort=False).agg("; ".join)
    return {(str(c), int(k)): str(v) for (c, k), v in joined.items()}


def _values_at(curves: pd.DataFrame, epoch: int, metric: str) -> dict[str, float]:
    """Per trial, its ``metric`` at ``epoch`` (trials without a value there are left out)."""
    if metric not in curves or curves.empty:
        return {}
    rows = curves[(curves["epoch"] == epoch) & curves[metric].notna()].drop_duplicates("trial_id", keep="last")
    return dict(zip(rows["trial_id"].astype(str), rows[metric].astype("float64"), strict=True))


SEARCH_RULE = "completed trials"  # without a confirm phase: the best mean of each setting's completed trials


def _selection_scores(trials: pd.DataFrame, at_epoch: Callable[[int], dict[str, float]], rule: object,
                      epoch: object, metric: str) -> dict[int, list[float]]:
    """Per setting of one cell, the scores its rule ranked it by: final values where every seed completed
    (``completed``), final values of its completed trials (:data:`SEARCH_RULE`), the values at ``epoch``
    (``epoch``); settings the rule leaves out have none."""
    settings = trials["setting"].astype("int64")
    done = trials["stop_reason"].astype(str) == StopReason.COMPLETED
    finals = trials[f"final_{metric}"].astype("float64") if f"final_{metric}" in trials else pd.Series(
        np.nan, index=trials.index)
    if rule in ("completed", SEARCH_RULE):
        picked = finals.where(done)
        if rule == "completed":
            every = done.groupby(settings).transform("all")
            picked = picked.where(every)
    elif rule == "epoch" and isinstance(epoch, (int, float)) and not pd.isna(epoch):
        values_at = at_epoch(int(epoch))
        picked = pd.Series([values_at.get(str(t), np.nan) for t in trials["trial_id"]], index=trials.index,
                           dtype="float64")
    else:
        picked = pd.Series(np.nan, index=trials.index)
    lists = picked.groupby(settings).agg(lambda v: [float(x) for x in v if not np.isnan(x)])
    return {int(k): list(v) for k, v in lists.items()}


def selection_table(ds: Dataset) -> Table | None:
    """How the search phase chose each cell's setting: a row per setting of every cell with each of its
    search trials at the last epoch it reached (stopped ones marked), the rule its cell was ranked by
    (``study.json``'s confirm phase, else the best mean of completed trials), the score that ranked it
    (mean ± std over seeds), its rank and whether it was chosen; None without search trials."""
    search = phase_trials(ds, Phase.SEARCH)
    if search.empty:
        return None
    confirm = ds.info.confirm
    metric = str(confirm.get("metric") or ds.info.metric)
    mode = str(confirm.get("mode") or ds.info.mode)
    recorded = {str(c.get("id")): c for c in confirm.get("cells", [])}
    fallback = best_settings(search_only(ds)) if not recorded else pd.Series(dtype="int64")
    several = search["seed"].nunique() > 1
    rows: list[dict[str, object]] = []
    texts: list[dict[str, str]] = []
    cells = cell_order(ds, sorted({str(c) for c in search["cell"]} | set(recorded)))
    at_epoch = functools.cache(lambda epoch: _values_at(ds.curves, epoch, metric))
    trial_texts = _trials_texts(search, metric, several)
    columns = [f"{PARAM_PREFIX}{k}" for k in ds.info.search_keys if f"{PARAM_PREFIX}{k}" in search]
    params = search.groupby([search["cell"].astype(str), search["setting"].astype("int64")])[columns].first() \
        if columns else pd.DataFrame()
    by_cell = {str(c): frame for c, frame in search.groupby(search["cell"].astype(str), sort=False)}
    for cell in cells:
        mine = by_cell.get(cell, search.iloc[0:0])
        plan = recorded.get(cell, {"rule": SEARCH_RULE, "epoch": None,
                                   "settings": [int(fallback[cell])] if cell in fallback.index else []})
        rule, epoch = plan.get("rule"), plan.get("epoch")
        scores = _selection_scores(mine, at_epoch, rule, epoch, metric)
        rank = {s: i + 1 for i, (s, _) in enumerate(ranked(scores, mode))}
        chosen = {int(s) for s in plan.get("settings") or []}
        values_of = parse_cell(cell)
        selection = values_of.get("ocr.selection")
        for i, setting in enumerate(sorted(int(s) for s in mine["setting"].unique())):
            row: dict[str, object] = {"cell": cell, **values_of, "setting": setting, "rule": rule, "epoch": epoch}
            for key in ds.info.search_keys:
                column = f"{PARAM_PREFIX}{key}"
                if ocr_applies(key, selection) and column in params and not pd.isna(params.at[(cell, setting), column]):
                    row[key] = params.at[(cell, setting), column]
            values = np.asarray(scores.get(setting, []), dtype="float64")
            mean = float(values.mean()) if len(values) else np.nan
            std = float(values.std(ddof=1)) if len(values) > 1 else np.nan
            row.update({"score_mean": mean, "score_std": std, "score_n": len(values),
                        "rank": rank.get(setting, np.nan), "chosen": setting in chosen})
            rows.append(row)
            score = ("not ranked" if not len(values) else
                     mean_std_text(mean, std, len(values)).replace(" (n = 1)", "") if _in_percent(metric) else
                     minus(f"{mean:.4g}"))
            texts.append({"ranked by": _rule_short(rule, epoch) if i == 0 else "",
                          "search trials": trial_texts.get((cell, setting), ""),
                          "score": score,
                          "rank": "" if setting not in rank else
                          f"{rank[setting]}" + (" (chosen)" if setting in chosen else "")})
    values = pd.DataFrame(rows)
    shown = [axis for axis in ds.info.grid if axis in values]
    display = pd.DataFrame({axis.rsplit(".", 1)[-1]: values[axis].astype(object).where(values[axis].notna(), "—")
                            for axis in shown})
    if display.empty:
        display["cell"] = values["cell"]
    display["setting"] = [_setting_text(r, ds.info.search_keys) for _, r in values.iterrows()]
    unit = " (%)" if _in_percent(metric) else ""
    name = metric.replace("val_miou", "val mIoU")
    trial_column = f"trials: {name}{unit}"
    score_column = f"score{unit}"
    display[trial_column] = [t["search trials"] for t in texts]
    display["ranked by"] = [t["ranked by"] for t in texts]
    display[score_column] = [t["score"] for t in texts]
    display["rank"] = [t["rank"] for t in texts]
    bold = tuple((i, score_column) for i, chosen in enumerate(values["chosen"]) if chosen)
    notes = (f"Trials: every search trial of every setting, its {metric} at the last epoch it reached (e = epoch; "
             f"stopped: ASHA stopped it at that rung; s = seed); ranked by: how its cell's settings were ranked "
             f"on val by {metric} ({mode}): "
             "completed = the final values of the settings that completed every seed (the others not ranked); "
             "completed trials (a study without a confirm phase) = the final values of each setting's completed "
             "trials; "
             "epoch N = the values at epoch N, the highest ASHA rung that every ranked setting reached on every "
             "seed. Score: mean ± sample std over seeds of those values (no std for one seed); rank 1 is the "
             "best; the chosen settings' scores in bold" + (", each measured again in the confirm phase."
                                                            if recorded else "."))
    return Table("search_selection", "Search phase: how each cell's setting was chosen (selection, not "
                 "measurement)", notes, values, display, (trial_column, score_column, "rank"), bold)


def _rule_short(rule: object, epoch: object) -> str:
    if rule in ("completed", SEARCH_RULE):
        return str(rule)
    if rule == "epoch":
        return f"epoch {epoch}"
    return "—"


def report_tables(ds: Dataset, oc: str = OC_DEFAULT, importance: pd.DataFrame | None = None) -> list[Table]:
    """The tables of a report: with a confirm phase, its ablation table first, then the search phase's
    tables as sensitivity and budget sections; ablation (per cell, then per grid axis), sensitivity to each
    searched parameter, parameter importance per cell (when a cell has enough trials), outcomes.

    Args:
        ds: the collected study.
        oc: which OC rate the ablation tables show (:func:`oc_metric`: ``fg``, the paper's, or ``pixels``).
        importance: the study's parameter importance when already computed
            (:func:`results._importance.study_importance`).
    """
    confirm = confirm_table(ds, oc)
    if confirm is not None:
        search = search_only(ds)
        selection = selection_table(ds)
        return [confirm, *([selection] if selection is not None else []), *_search_tables(search, oc, importance),
                outcome_table(ds)]
    selection = selection_table(ds)
    return [search_ablation_table(ds, oc), *([selection] if selection is not None else []),
            *_search_tables(ds, oc, importance), outcome_table(ds)]


def _search_tables(ds: Dataset, oc: str = OC_DEFAULT, importance_values: pd.DataFrame | None = None
                   ) -> list[Table]:
    tables = [*axis_tables(ds, oc)]
    for key in ds.info.search_keys or tuple(k for k in ("ocr.delta", "ocr.tau") if f"{PARAM_PREFIX}{k}" in ds.trials):
        table = sensitivity_table(ds, key)
        if table is not None:
            tables.append(table)
    importance = importance_table(ds, importance_values)
    return tables if importance is None else [*tables, importance]
