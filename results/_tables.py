"""Paper-shaped tables from a collected study: the ablation table, sensitivity to δ and τ, trial outcomes.

Every figure is computed from completed trials (``stop_reason == "completed"``: trials ASHA stopped, that
failed or still run have no final value comparable to the others) at their last epoch. A :class:`Table`
holds the numbers (``values``, for CSV and tests) and their text (``display``, for Markdown, LaTeX, HTML).
"""

from __future__ import annotations

import itertools
import math

import numpy as np
import pandas as pd

from record import OCR_OFF, Phase, StopReason, best_setting, ocr_applies, parse_cell, value_text
from results._errors import ResultsError
from results._importance import importance_table
from results._schema import PARAM_PREFIX, Dataset
from results._stats import paired_t_test
from results._table import SYMBOLS, Table

# Two OC rates are logged: the paper's (out-of-candidate share of the pixels predicted foreground, the
# default) and the share of all valid pixels; each is labelled by what it measures.
OC_RATES = {"fg": ("val_oc_rate_fg", "OC rate (% of foreground predictions)"),
            "pixels": ("val_oc_rate", "OC rate (% of valid pixels)")}
OC_DEFAULT = "fg"
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


def _pct(x: float) -> str:
    return f"{100 * x:.2f}"


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
    return f"{value:.2g}"


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


DIFF_LABEL = "Δ val mIoU vs baseline (pp, 95% CI, paired t)"


def _diff_text(row: pd.Series, show_n: bool = True) -> str:
    n = int(row["diff_n"]) if not pd.isna(row.get("diff_n")) else 0
    suffix = f" (n = {n})" if show_n else ""
    if n == 0:
        return "—" + suffix
    text = f"{100 * row['diff_mean']:+.2f}"
    if n >= 2:
        text += f" [{100 * row['ci_low']:+.2f}, {100 * row['ci_high']:+.2f}], p = {row['p_value']:.3g}"
    return text + suffix


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
    for metric, label, better in shown_metrics(ds, oc):
        key = _on_split(metric, split)
        n = common_n(values[f"{key}_n"])
        column = header(label.replace("val ", f"{split} "), n)
        out[column] = [mean_std_text(r[f"{key}_mean"], r[f"{key}_std"], int(r[f"{key}_n"]), n is None)
                       for _, r in values.iterrows()]
        numeric.append(column)
        bold += [(i, column) for i in best_rows(values[f"{key}_mean"], values[f"{key}_n"],
                                                _better(ds, metric, better))]
    if "diff_mean" in values:
        n = common_n(values["diff_n"])
        label = DIFF_LABEL.replace("val ", f"{split} ")
        column = label if n is None else f"{label[:-1]}, n = {n})"
        out[column] = ["baseline" if pd.isna(r.get("diff_n")) else _diff_text(r, n is None)
                       for _, r in values.iterrows()]
        numeric.append(column)
        bold += [(i, column) for i in best_rows(values["diff_mean"], values["diff_n"],
                                                _better(ds, "val_miou", "max"))]
    return out.reset_index(drop=True), tuple(numeric), tuple(bold)


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
            "figure (in the header when every row has the same n; no std when n = 1); best value of each "
            f"column in bold. {oc_note(ds, oc)}. Each cell's setting is the one with the best mean val mIoU "
            "(chosen and reported on val). Δ: mean per-seed difference to the baseline cell "
            f"({base_cell}) in percentage points (pp) over the seeds both have, with a two-sided paired t-test "
            "across seeds (95% t confidence interval and p-value; none for n < 2). " + protocol_note(ds))


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
    if "wilcoxon_p" in values:
        display["Wilcoxon p"] = ["" if pd.isna(r.get("diff_n")) else
                                 ("—" if pd.isna(r["wilcoxon_p"]) else f"{r['wilcoxon_p']:.3g}")
                                 for _, r in values.iterrows()]
        numeric += ("Wilcoxon p",)
    display["notes"] = values["problems"].fillna("").astype(str).tolist()
    return Table("ablation", f"Ablation (confirm phase, measured on {split}): each cell's chosen setting on every "
                 "confirm seed", _confirm_notes(ds, base_cell, oc, split), values, display, numeric, bold)


def _rule_text(ds: Dataset) -> str:
    rules = {(c.get("rule"), c.get("epoch")) for c in ds.info.confirm.get("cells", []) if c.get("rule") != "none"}
    words = []
    for rule, epoch in sorted(rules, key=str):
        words.append("among search trials that completed every epoch" if rule == "completed"
                     else f"by {ds.info.metric} at epoch {epoch}, the highest rung every ranked setting reached")
    return "; ".join(words) or "no setting was chosen"


def _confirm_notes(ds: Dataset, base_cell: str, oc: str = OC_DEFAULT, split: str = "val") -> str:
    confirm = ds.info.confirm
    seeds = confirm.get("seeds", [])
    return (f"Mean ± sample std over the confirm seeds {seeds} (n = seeds behind each figure, in the header "
            f"when every row has the same n), in %, at the last of {confirm.get('epochs', '?')} epochs, run "
            f"without early stopping; best value of each column in bold. {oc_note(ds, oc)}. Settings chosen "
            f"in the search phase on val by {confirm.get('metric', ds.info.metric)} "
            f"({confirm.get('mode', ds.info.mode)}), {_rule_text(ds)}; measured on {_split_words(split)} in "
            "the confirm phase. "
            f"Δ: mean per-seed difference to the baseline cell ({base_cell}) in percentage points (pp) over "
            "the seeds both have, two-sided paired t-test (95% t confidence interval and p-value; none for "
            "n < 2) and Wilcoxon signed-rank p-value (for n ≥ 5). " + protocol_note(ds))


def _split_words(split: str) -> str:
    return ("the held-out test split (images and glyphs no setting was chosen on)" if split == "test"
            else "val (the split papers report on VOC and COCO)")


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
        first = search_ablation_table(search, oc)
        first = Table("search_ablation", f"Search phase: {first.title} (selection, not measurement)",
                      first.notes, first.values, first.display, first.numeric, first.bold)
        return [confirm, first, *_search_tables(search, oc, importance), outcome_table(ds)]
    return [search_ablation_table(ds, oc), *_search_tables(ds, oc, importance), outcome_table(ds)]


def _search_tables(ds: Dataset, oc: str = OC_DEFAULT, importance_values: pd.DataFrame | None = None
                   ) -> list[Table]:
    tables = [*axis_tables(ds, oc)]
    for key in ds.info.search_keys or tuple(k for k in ("ocr.delta", "ocr.tau") if f"{PARAM_PREFIX}{k}" in ds.trials):
        table = sensitivity_table(ds, key)
        if table is not None:
            tables.append(table)
    importance = importance_table(ds, importance_values)
    return tables if importance is None else [*tables, importance]
