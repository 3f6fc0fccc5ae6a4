"""The report's figures (matplotlib, Agg backend): each as a PNG at :data:`DPI` and as a PDF (vector) beside
it, a cell in one colour in every figure (:func:`cell_colours`), legends under their axes and no wider than
them, a caption for each (:func:`plot_caption`).

- ``miou_vs_delta.png``, ``miou_vs_tau.png``: val mIoU against δ and τ (those the study searched), a colour
  per cell: every search trial at the last epoch it reached (hollow: stopped by ASHA, with that epoch),
  every confirm trial, the mean of each cell's completed trials per bin with its n, and the baseline
  cell's mean (its confirm seeds when it has them) as a dashed line;
- ``parallel_coordinates.png``: per cell that searched, each completed trial as a line through its sampled
  values to its final metric (like the Optuna dashboard's and W&B's parallel-coordinates plots);
- ``importance.png``: per cell, the share of the metric's variance each searched parameter explains
  (Optuna's fANOVA importance evaluator);
- ``oc_vs_miou.png``: OC rate (the paper's definition by default) against val mIoU, one point per completed
  trial (search and confirm);
- ``learning_curves.png``: val mIoU per epoch, one panel per cell: every search trial thin (ending where
  ASHA stopped it), the chosen setting (its δ and τ in the legend) thick as the mean ± std over its confirm
  seeds (over its search seeds without a confirm phase);
- ``priors.png``: the prior matrix M[a, k] of the best trial of each prior variant (row: anchor class a,
  column: in-candidate class k, class names on both axes), with its row-wise min-max normalisation beside it
  only where that differs (like the paper's Fig. S2), from the trial's ``prior.csv`` artifact;
- ``asha_budget.png``: the search phase's trial-epochs spent between ASHA's rungs, and trials reaching each
  rung (the confirm phase runs without early stopping and is not counted).
"""

from __future__ import annotations

import itertools
import logging
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

import numpy as np
import pandas as pd

from record import OCR_OFF, PRIOR_FILE, Phase, StopReason, parse_cell
from results._importance import study_importance
from results._schema import PARAM_PREFIX, Dataset
from results._table import SYMBOLS
from results._tables import (
    OC_DEFAULT,
    SELECTION,
    baseline_cell,
    best_settings,
    bin_values,
    cell_order,
    completed,
    oc_metric,
    phase_trials,
    search_only,
    setting_number,
)

log = logging.getLogger(__name__)
DPI = 150  # PNG resolution; every figure is also written as a PDF (vector)
VECTOR = ".pdf"
MAX_PRIORS = 7
DENSE = 300  # an artist of more lines or points than this is rasterized inside the PDF (text and axes stay vector)
MAX_EPOCH_LABELS = 40  # a cell's stopped trials get their epoch written beside them up to this many
PLOTTED_KEYS = ("ocr.delta", "ocr.tau")  # against val mIoU, where the study searched them
ALL_PLOTS = (*(f"miou_vs_{k.rsplit('.', 1)[-1]}.png" for k in PLOTTED_KEYS), "parallel_coordinates.png",
             "importance.png", "oc_vs_miou.png", "learning_curves.png", "priors.png", "asha_budget.png")


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig: Any, path: Path) -> Path:
    """``fig`` as ``path`` (PNG, :data:`DPI`) and as a PDF beside it; legends under the axes stay whole."""
    plt = _pyplot()
    fig.tight_layout()
    fig.savefig(path, dpi=DPI, bbox_inches="tight")
    fig.savefig(path.with_suffix(VECTOR), dpi=DPI, bbox_inches="tight")  # dpi: of the dense artists rasterized
    plt.close(fig)
    return path


CAPTIONS = {
    "miou_vs_delta": "val mIoU against δ, a colour per cell. Filled circles: search trials that completed every "
                     "epoch; hollow circles: search trials ASHA stopped, at the epoch they reached (e1 = epoch 1, "
                     "written for up to 40 of a cell's; not comparable with final values, shown as the evidence "
                     "the search had); crosses: confirm "
                     "trials (the chosen setting on every confirm seed); line: mean of the cell's completed search "
                     "trials per bin (n = trials); dashed: the baseline's mean (over its confirm seeds when it has "
                     "them).",
    "miou_vs_tau": "val mIoU against τ (log scale where τ was sampled on one), as the δ plot: filled: completed "
                   "search trials; hollow: stopped by ASHA at the epoch shown; crosses: confirm trials; line: "
                   "mean per bin; dashed: the baseline's mean.",
    "parallel_coordinates": "Parallel coordinates per cell that searched: each completed search trial as a line "
                            "through its sampled values (each axis scaled to the range sampled) to its final "
                            "metric, coloured by that metric.",
    "importance": "fANOVA parameter importance per cell: the share of the metric's variance each searched "
                  "parameter explains (Optuna's evaluator), over the cell's completed search trials.",
    "oc_vs_miou": "OC rate against val mIoU, one point per completed trial, a colour per cell (circles: search "
                  "trials; crosses: confirm trials). A low OC rate counts only with an mIoU near the best.",
    "learning_curves": "val mIoU per epoch, a panel per cell in its colour: thin lines, every search trial "
                       "(a hollow end: stopped by ASHA there); thick line and band, the chosen setting (δ and τ in "
                       "the panel's legend): mean ± std over its confirm seeds (its search seeds without a confirm "
                       "phase).",
    "priors": "Prior matrix M[a, k] of the best trial of each prior variant: row a = the anchor class, column k = "
              "an in-candidate class; the OCR loss keeps k when p_a − M[a, k]·p_k < τ. Beside it, its row-wise "
              "min-max normalisation where that differs from the matrix itself (as the paper's Fig. S2).",
    "asha_budget": "The search phase's budget: trial-epochs run between ASHA's rungs (bars) and the trials that "
                   "reached each stretch; the confirm phase runs without early stopping and is not counted.",
    "sequential_rounds": "Sequential confirm, a panel per setting (its decision in the title): Δ against the "
                         "baseline (pp) with its repeated confidence interval at every round's look (x: the seeds "
                         "paired by then), until its decision; solid line at 0, dashed at ±margin. Intervals of "
                         "the first looks are wide because each look spends only its share of α.",
}


def plot_caption(name: str) -> str:
    """The caption of a report figure (its file stem, e.g. ``miou_vs_delta``)."""
    return CAPTIONS.get(name, name.replace("_", " "))


BASELINE_COLOUR = "0.35"


def _groups(frame: pd.DataFrame) -> pd.Series:
    return frame[SELECTION].astype(str) if SELECTION in frame else frame["cell"].astype(str)


def cell_colours(ds: Dataset) -> dict[str, Any]:
    """One colour per cell, the same in every figure: the baseline (no OCR) grey, the others tab10's
    colours in the grid's order (tab20's beyond nine cells)."""
    from matplotlib import colormaps

    cells = cell_order(ds, sorted({str(c) for c in ds.trials["cell"]}
                                  | {str(c.get("id")) for c in ds.info.confirm.get("cells", [])}))
    others = [c for c in cells if parse_cell(c).get("ocr.selection") != OCR_OFF]
    tab10 = [colormaps["tab10"](i) for i in range(10) if i != 7]  # 7 is tab10's grey: the baseline's
    palette = tab10 if len(others) <= len(tab10) else [colormaps["tab20"](i) for i in range(20)]
    out: dict[str, Any] = {c: BASELINE_COLOUR for c in cells if c not in others}
    out.update({c: palette[i % len(palette)] for i, c in enumerate(others)})
    return out


def cell_label(cell: str) -> str:
    """A cell as legends name it: its values (``oc``, ``oc · uniform``), the key only where there is one."""
    values = parse_cell(cell)
    return " · ".join(values.values()) if values else cell


def legend_below(ax: Any, handles: list[Any] | None = None, labels: list[str] | None = None,
                 fontsize: float = 7) -> Any:
    """A legend under ``ax`` in as many columns as fit its width (one column when even that is wider:
    then it stays one column, the widest label deciding)."""
    fig = ax.figure
    if handles is None or labels is None:
        handles, labels = ax.get_legend_handles_labels()
    if not handles:
        return None
    renderer = fig.canvas.get_renderer()
    for ncol in range(min(len(handles), 4), 0, -1):
        legend = ax.legend(handles, labels, fontsize=fontsize, loc="upper center", bbox_to_anchor=(0.5, -0.16),
                           ncol=ncol, frameon=False)
        if ncol == 1 or legend.get_window_extent(renderer).width <= ax.get_window_extent(renderer).width:
            return legend
        legend.remove()
    return None


def _phase(frame: pd.DataFrame) -> pd.Series:
    return frame["phase"].astype(str) if "phase" in frame else pd.Series(Phase.SEARCH, index=frame.index)


def _scatter_trials(ax: Any, trials: pd.DataFrame, x: pd.Series, y: pd.Series, colour: Any) -> None:
    """Search trials filled when completed, hollow when ASHA stopped them (with the epoch they reached);
    confirm trials as crosses."""
    phase, reason = _phase(trials), trials["stop_reason"].astype(str)
    done = (phase != Phase.CONFIRM) & (reason == StopReason.COMPLETED)
    stopped = (phase != Phase.CONFIRM) & (reason == StopReason.EARLY_STOPPED)
    confirm = (phase == Phase.CONFIRM) & (reason == StopReason.COMPLETED)
    dense = len(trials) > DENSE
    ax.scatter(x[done], y[done], s=22, color=colour, alpha=0.8, rasterized=dense)
    ax.scatter(x[stopped], y[stopped], s=22, facecolors="none", edgecolors=[colour], linewidths=1.2, rasterized=dense)
    labelled = trials.index[stopped] if int(stopped.sum()) <= MAX_EPOCH_LABELS else []  # hundreds would hide them
    for i in labelled:
        ax.annotate(f"e{int(trials.at[i, 'epochs'])}", (x[i], y[i]), textcoords="offset points", xytext=(4, -3),
                    fontsize=6, color=colour)
    ax.scatter(x[confirm], y[confirm], s=26, marker="x", color=colour, linewidths=1.2, rasterized=dense)


def _marker_handles() -> tuple[list[Any], list[str]]:
    from matplotlib.lines import Line2D

    black = "0.2"
    return ([Line2D([], [], ls="", marker="o", color=black), Line2D([], [], ls="", marker="o", mfc="none",
                                                                    color=black),
             Line2D([], [], ls="", marker="x", color=black)],
            ["search, completed", "search, stopped by ASHA (e = epoch)", "confirm"])


def metric_vs_param(ds: Dataset, key: str, path: Path) -> Path | None:
    """val mIoU against one parameter, a colour per cell (log x for log-sampled parameters): every search
    trial at the last epoch it reached (hollow: stopped by ASHA), every confirm trial (crosses), each cell's
    mean of completed trials per bin (with n), the baseline's mean as a dashed line."""
    from matplotlib.lines import Line2D

    column = f"{PARAM_PREFIX}{key}"
    trials = ds.trials
    if column not in trials or "final_val_miou" not in trials:
        return None
    reason = trials["stop_reason"].astype(str)
    shown = trials[(_groups(trials) != OCR_OFF) & trials[column].notna() & trials["final_val_miou"].notna()
                   & reason.isin([StopReason.COMPLETED, StopReason.EARLY_STOPPED])]
    if shown.empty:
        return None
    plt = _pyplot()
    colours = cell_colours(ds)
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    x_all = shown[column].astype("float64")
    log_x = bool(key in ds.info.log_keys and x_all.min() > 0)
    handles: list[Any] = []
    labels: list[str] = []
    for cell in cell_order(ds, sorted(shown["cell"].astype(str).unique())):
        part = shown[shown["cell"].astype(str) == cell]
        colour = colours.get(cell, "C0")
        x, y = part[column].astype("float64"), 100 * part["final_val_miou"].astype("float64")
        _scatter_trials(ax, part, x, y, colour)
        done = (part["stop_reason"].astype(str) == StopReason.COMPLETED) & (_phase(part) != Phase.CONFIRM)
        if done.any():  # the search's sweep; the confirm seeds of the one chosen setting stay crosses
            bins, _ = bin_values(x[done], log_x)
            means = pd.DataFrame({"x": x[done], "y": y[done]}).groupby(bins).median().sort_values("x")
            means["y"] = y[done].groupby(bins).mean()
            means["n"] = y[done].groupby(bins).size()
            ax.plot(means["x"], means["y"], lw=1.3, color=colour)
            for _, point in means.iterrows():
                ax.annotate(f"n={int(point['n'])}", (point["x"], point["y"]), textcoords="offset points",
                            xytext=(0, 6), ha="center", fontsize=7, color=colour)
        handles.append(Line2D([], [], ls="", marker="s", color=colour))
        labels.append(cell_label(cell))
    marks, names = _marker_handles()
    handles += [*marks, Line2D([], [], color="0.2", lw=1.3)]
    labels += [*names, "mean per bin of completed search trials (n)"]
    base = baseline_mean(ds)
    if base is not None:
        line = ax.axhline(100 * base[1], color=BASELINE_COLOUR, ls="--", lw=1)
        handles.append(line)
        labels.append(f"baseline {cell_label(base[0])}: {base[3]} mean, n = {base[2]}")
    ax.set_xscale("log" if log_x else "linear")
    if log_x:  # plain numbers, no crowded 2×10⁻¹ minor labels
        from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

        ax.xaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
        ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:.3g}"))
        ax.xaxis.set_minor_formatter(NullFormatter())
    ax.set_xlabel(f"{SYMBOLS.get(key, key)} ({key})")
    ax.set_ylabel("val mIoU (%)")
    ax.set_title(f"val mIoU against {SYMBOLS.get(key, key)}", fontsize=10)
    legend_below(ax, handles, labels)
    return _save(fig, path)


def baseline_mean(ds: Dataset) -> tuple[str, float, int, str] | None:
    """(cell, mean final val mIoU, n, source) of the baseline cell: over its confirm trials when it has them
    (``source`` = ``"confirm"``; its search run is the same run as confirm seed 0 and is not counted again),
    else over its completed search trials at its best setting (``"search"``); None without any."""
    confirm = phase_trials(ds, Phase.CONFIRM)
    cells = sorted({str(c) for c in ds.trials["cell"]})
    cell = baseline_cell(ds, cell_order(ds, cells)) if cells else None
    if cell is None or parse_cell(cell).get("ocr.selection") != OCR_OFF:
        return None  # no cell without OCR: nothing to refer to
    mine = confirm[(confirm["cell"].astype(str) == cell)
                   & (confirm["stop_reason"].astype(str) == StopReason.COMPLETED)]
    values = mine.drop_duplicates("seed", keep="last")["final_val_miou"].dropna() if len(mine) else mine
    if len(values):
        return cell, float(values.mean()), len(values), "confirm"
    search = search_only(ds)
    best = best_settings(search)
    if cell not in best.index:
        return None
    done = completed(search)
    found = done[(done["cell"].astype(str) == cell) & (done["setting"] == best[cell])]["final_val_miou"].dropna()
    return (cell, float(found.mean()), len(found), "search") if len(found) else None


def parallel_coordinates(ds: Dataset, path: Path) -> Path | None:
    """Per cell that searched, each completed search trial as a line through its sampled values (one axis
    each, scaled to the range sampled, log for log-sampled ones) to its final metric, coloured by the metric
    (the confirm phase's reruns of the chosen setting are no part of the search)."""
    metric, done = ds.info.metric, completed(search_only(ds))
    panels = [(cell, keys) for cell in cell_order(ds, sorted(done["cell"].astype(str).unique()))
              if len(keys := _varying(done[done["cell"].astype(str) == cell], ds.info.search_keys)) > 0]
    if f"final_{metric}" not in done or not panels:
        return None
    plt = _pyplot()
    fig, axes = plt.subplots(len(panels), 1, figsize=(7, 3.2 * len(panels)), squeeze=False)
    for ax, (cell, keys) in zip(axes[:, 0], panels, strict=True):
        _parallel_panel(ds, ax, done[done["cell"].astype(str) == cell], keys, f"final_{metric}")
        colour = cell_colours(ds).get(cell, "black")
        ax.set_title(f"{cell}: {len(done[done['cell'].astype(str) == cell])} completed trials", fontsize=9,
                     color="black" if colour == BASELINE_COLOUR else colour)
    return _save(fig, path)


def _varying(trials: pd.DataFrame, keys: tuple[str, ...]) -> list[str]:
    """The searched keys that take more than one numeric value among ``trials``."""
    out = []
    for key in keys:
        column = pd.to_numeric(trials.get(f"{PARAM_PREFIX}{key}"), errors="coerce") \
            if f"{PARAM_PREFIX}{key}" in trials else pd.Series(dtype="float64")
        if column.notna().all() and column.nunique() > 1:
            out.append(key)
    return out


def _parallel_panel(ds: Dataset, ax: Any, trials: pd.DataFrame, keys: list[str], metric: str) -> None:
    from matplotlib import colormaps
    from matplotlib.collections import LineCollection
    from matplotlib.colors import Normalize

    columns = [pd.to_numeric(trials[f"{PARAM_PREFIX}{k}"]).astype("float64") for k in keys]
    columns.append(100 * trials[metric].astype("float64"))
    logs = [k in ds.info.log_keys and float(c.min()) > 0 for k, c in zip(keys, columns, strict=False)] + [False]
    scaled = [_unit(np.log10(c) if log else c) for c, log in zip(columns, logs, strict=True)]
    points = np.stack([s.to_numpy() for s in scaled], axis=1)  # (trials, axes)
    xs = np.arange(points.shape[1])
    norm = Normalize(float(columns[-1].min()), float(columns[-1].max()))
    lines = LineCollection([np.column_stack([xs, row]) for row in points], cmap=colormaps["viridis"], norm=norm,
                           linewidths=1.2, alpha=0.8, rasterized=len(points) > DENSE)
    lines.set_array(columns[-1].to_numpy())
    ax.add_collection(lines)
    for x, column in zip(xs, columns, strict=True):
        ax.axvline(x, color="0.4", lw=0.8)
        for y, value in ((0.0, column.min()), (1.0, column.max())):
            ax.annotate(f"{value:.3g}", (x, y), xytext=(3, 0), textcoords="offset points", fontsize=7,
                        va="center")
    names = [f"{SYMBOLS.get(k, k)}" + (" (log)" if log else "") for k, log in zip(keys, logs, strict=False)]
    ax.set_xticks(xs, [*names, f"{ds.info.metric} (%)"], fontsize=8)
    ax.set_xlim(-0.2, xs[-1] + 0.4)
    ax.set_ylim(-0.05, 1.05)
    ax.set_yticks([0, 1], ["min", "max"], fontsize=7)
    ax.figure.colorbar(lines, ax=ax, fraction=0.04, label=f"{ds.info.metric} (%)")


def _unit(values: pd.Series) -> pd.Series:
    span = float(values.max() - values.min())
    return (values - values.min()) / span if span > 0 else values * 0 + 0.5


def importance_plot(ds: Dataset, path: Path, values: pd.DataFrame | None = None) -> Path | None:
    """Per cell, horizontal bars of each searched parameter's share of the metric's variance (fANOVA;
    ``values``: :func:`results._importance.study_importance` when already computed)."""
    table = study_importance(search_only(ds)) if values is None else values
    if table.empty:
        return None
    cells = cell_order(ds, sorted(table["cell"].unique()))
    plt = _pyplot()
    colours = cell_colours(ds)
    fig, axes = plt.subplots(1, len(cells), figsize=(3.6 * len(cells), 2.8), squeeze=False, sharex=True)
    for ax, cell in zip(axes[0], cells, strict=True):
        mine = table[table["cell"] == cell].sort_values("importance")
        ax.barh([SYMBOLS.get(p, p) for p in mine["param"]], 100 * mine["importance"], color=colours.get(cell, "C0"))
        ax.set_title(f"{cell} (n = {int(mine['n'].iloc[0])})", fontsize=8,
                     color="black" if colours.get(cell) == BASELINE_COLOUR else colours.get(cell, "black"))
        ax.set_xlabel(f"% of {ds.info.metric} variance")
        ax.set_xlim(0, 100)
    return _save(fig, path)


def oc_vs_miou(ds: Dataset, path: Path, oc: str = OC_DEFAULT) -> Path | None:
    """OC rate (``oc``: the paper's share of foreground predictions, or of valid pixels) against val mIoU,
    one point per completed trial, a colour per cell (circles: search; crosses: confirm)."""
    from matplotlib.lines import Line2D

    done = completed(ds)
    metric, label = oc_metric(ds, oc)
    if done.empty or f"final_{metric}" not in done:
        return None
    plt = _pyplot()
    colours = cell_colours(ds)
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    handles: list[Any] = []
    labels: list[str] = []
    for cell in cell_order(ds, sorted(done["cell"].astype(str).unique())):
        part = done[done["cell"].astype(str) == cell]
        colour = colours.get(cell, "C0")
        _scatter_trials(ax, part, 100 * part["final_val_miou"], 100 * part[f"final_{metric}"], colour)
        handles.append(Line2D([], [], ls="", marker="s", color=colour))
        labels.append(cell_label(cell))
    handles += [Line2D([], [], ls="", marker="o", color="0.2"), Line2D([], [], ls="", marker="x", color="0.2")]
    labels += ["search", "confirm"]
    ax.set_xlabel("val mIoU (%)")
    ax.set_ylabel(label)
    ax.set_title("OC rate against val mIoU (completed trials)", fontsize=10)
    legend_below(ax, handles, labels)
    return _save(fig, path)


def _chosen_settings(ds: Dataset) -> dict[str, int]:
    """Per cell, the setting the report measures: the confirm phase's first choice, else the best mean of
    completed search trials."""
    chosen = {str(c.get("id")): int(c["settings"][0]) for c in ds.info.confirm.get("cells", []) if c.get("settings")}
    if chosen:
        return chosen
    return {str(c): int(v) for c, v in best_settings(search_only(ds)).items()}


def _setting_words(ds: Dataset, cell: str, setting: int) -> str:
    """``"δ = 7.7, τ = 0.06"``: a cell's setting by its searched values (``"no searched parameter"``)."""
    trials = ds.trials[(ds.trials["cell"].astype(str) == cell) & (ds.trials["setting"] == setting)]
    parts = []
    for key in ds.info.search_keys:
        column = f"{PARAM_PREFIX}{key}"
        if column in trials and parse_cell(cell).get("ocr.selection") != OCR_OFF and trials[column].notna().any():
            value = trials[column].dropna().iloc[0]
            parts.append(f"{SYMBOLS.get(key, key)} = "
                         f"{setting_number(float(value)) if isinstance(value, (int, float)) else value}")
    return ", ".join(parts) or "no searched parameter"


def learning_curves(ds: Dataset, path: Path) -> Path | None:
    """val mIoU per epoch, a panel per cell in its colour: every search trial thin (a hollow end where ASHA
    stopped it), the chosen setting thick: mean ± std over its confirm seeds (search seeds without a confirm
    phase), labelled by its δ and τ."""
    from matplotlib.lines import Line2D

    if ds.curves.empty or "val_miou" not in ds.curves:
        return None
    cells = cell_order(ds, sorted(ds.trials["cell"].astype(str).unique()))
    chosen = _chosen_settings(ds)
    colours = cell_colours(ds)
    has_confirm = not phase_trials(ds, Phase.CONFIRM).empty
    cols = min(3, len(cells))
    rows = math.ceil(len(cells) / cols)
    plt = _pyplot()
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.6 * rows), squeeze=False, sharey=True)
    from matplotlib.ticker import MaxNLocator

    frame = ds.trials[["trial_id", "cell", "setting", "stop_reason"]].astype({"cell": str, "stop_reason": str})
    frame["phase"] = _phase(ds.trials).to_numpy()
    curves = ds.curves.merge(frame, on="trial_id")
    for ax, cell in zip(axes.flat, cells, strict=False):
        colour = colours.get(cell, "C0")
        mine = curves[curves["cell"] == cell]
        search = mine[mine["phase"] != Phase.CONFIRM]
        _cell_curves(ax, search, colour)
        setting = chosen.get(cell)
        handles = [Line2D([], [], color=colour, lw=0.8, alpha=0.6)]
        labels = ["search trials (hollow end: stopped by ASHA)"]
        if setting is not None:
            phase = Phase.CONFIRM if has_confirm else Phase.SEARCH
            picked = mine[(mine["phase"] == phase) & (mine["setting"] == setting)]
            if not picked.empty:
                stats = picked.groupby("epoch")["val_miou"].agg(["mean", "std", "count"])
                ax.plot(stats.index, 100 * stats["mean"], color=colour, lw=2.4)
                ax.fill_between(stats.index, 100 * (stats["mean"] - stats["std"].fillna(0)),
                                100 * (stats["mean"] + stats["std"].fillna(0)), color=colour, alpha=0.2)
                seeds = picked["trial_id"].nunique()
                handles.append(Line2D([], [], color=colour, lw=2.4))
                labels.append(f"chosen: {_setting_words(ds, cell, setting)}\n(mean ± std, {seeds} "
                              f"{phase} seed{'s' if seeds != 1 else ''})")
        ax.set_title(cell_label(cell), fontsize=10, color=colour if colour != BASELINE_COLOUR else "black")
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        legend_below(ax, handles, labels, fontsize=7)
    for ax in axes[:, 0]:
        ax.set_ylabel("val mIoU (%)")
    for ax in list(axes.flat)[len(cells):]:
        ax.set_visible(False)
    return _save(fig, path)


def _cell_curves(ax: Any, curves: pd.DataFrame, colour: Any) -> None:
    """Every trial's curve thin in ``colour``; a hollow marker at the last epoch of those ASHA stopped."""
    from matplotlib.collections import LineCollection

    ordered = curves.sort_values(["trial_id", "epoch"], kind="stable")
    if ordered.empty:
        return
    points = np.column_stack([ordered["epoch"].to_numpy(dtype="float64"),
                              100 * ordered["val_miou"].to_numpy(dtype="float64")])
    starts = np.flatnonzero(ordered["trial_id"].ne(ordered["trial_id"].shift()).to_numpy())
    lines = [line for line in np.split(points, starts[1:]) if len(line)]
    ax.add_collection(LineCollection(lines, colors=[colour], linewidths=0.8, alpha=0.6,  # one artist for all
                                     rasterized=len(lines) > DENSE))
    last = ordered.groupby("trial_id").tail(1)
    stopped = last[last["stop_reason"] == StopReason.EARLY_STOPPED]
    ax.scatter(stopped["epoch"], 100 * stopped["val_miou"], s=18, facecolors="white", edgecolors=[colour],
               linewidths=1.0, zorder=3)
    ax.autoscale_view()


def artifact_folder(location: object) -> Path | None:
    """A trial's artifacts as a local folder (a path or a ``file:`` URI), else None."""
    if not isinstance(location, str) or not location:
        return None
    if location.startswith("file:"):
        return Path(unquote(urlparse(location).path))
    return None if "://" in location or location.startswith("mlflow-artifacts:") else Path(location)


def prior_matrices(ds: Dataset) -> dict[str, pd.DataFrame]:
    """Per prior variant, the prior matrix of its best completed OCR trial that left a ``prior.csv``."""
    done = completed(ds)
    if done.empty or "final_val_miou" not in done:
        return {}
    done = done[_groups(done) != OCR_OFF].sort_values("final_val_miou", ascending=False)
    prior = f"{PARAM_PREFIX}ocr.prior"
    variants = done[prior].astype(str) if prior in done else pd.Series("prior", index=done.index)
    found: dict[str, pd.DataFrame] = {}
    for variant, location in zip(variants, done["artifacts"], strict=True):
        folder = artifact_folder(location)
        if variant in found or folder is None or not (folder / PRIOR_FILE).is_file():
            continue
        found[variant] = pd.read_csv(folder / PRIOR_FILE, index_col=0)
        if len(found) == MAX_PRIORS:
            break
    return found


def _row_minmax(m: np.ndarray) -> np.ndarray:
    low, high = m.min(axis=1, keepdims=True), m.max(axis=1, keepdims=True)
    span = np.where(high > low, high - low, 1.0)
    return np.where(high > low, (m - low) / span, 0.0)


def priors(ds: Dataset, path: Path) -> Path | None:
    """Each prior variant's matrix M[a, k] (row: anchor class a; column: in-candidate class k; class names
    on both axes) and, beside it where it differs, its row-wise min-max normalisation (Fig. S2)."""
    matrices = prior_matrices(ds)
    if not matrices:
        return None
    panels = []
    for variant, matrix in matrices.items():
        m = matrix.to_numpy(dtype="float64")
        shown = [(m, f"prior {variant}: M as the loss used it")]
        normalised = _row_minmax(m)
        if not np.allclose(normalised, m):
            shown.append((normalised, f"prior {variant}: each row min-max normalised"))
        panels.append((matrix, shown))
    cols = max(len(shown) for _, shown in panels)
    plt = _pyplot()
    fig, axes = plt.subplots(len(panels), cols, figsize=(5.2 * cols, 4.6 * len(panels)), squeeze=False)
    for row, (matrix, shown) in zip(axes, panels, strict=True):
        for ax, (values, title) in zip(row, shown, strict=False):
            image = ax.imshow(values, cmap="viridis")
            ax.set_xticks(range(len(matrix.columns)), [str(c) for c in matrix.columns], rotation=90, fontsize=7)
            ax.set_yticks(range(len(matrix.index)), [str(c) for c in matrix.index], fontsize=7)
            ax.set_xlabel("in-candidate class k (column)", fontsize=8)
            ax.set_ylabel("anchor class a (row)", fontsize=8)
            ax.set_title(title, fontsize=9)
            fig.colorbar(image, ax=ax, fraction=0.046, label="M[a, k]")
        for ax in row[len(shown):]:
            ax.set_visible(False)
    return _save(fig, path)


def budget_by_rung(ds: Dataset) -> pd.DataFrame:
    """The search phase's trial-epochs spent in each stretch between ASHA rungs, and how many trials reached
    its start (confirm trials run without early stopping: not counted)."""
    epochs = phase_trials(ds, Phase.SEARCH)["epochs"].astype("int64")
    top = int(ds.info.max_epochs or (epochs.max() if len(epochs) else 0))
    edges = [0, *[r for r in ds.info.rungs if r < top], top]
    rows = []
    for low, high in itertools.pairwise(edges):
        spent = (epochs.clip(upper=high) - low).clip(lower=0)
        rows.append({"epochs": f"{low + 1}–{high}" if high > low + 1 else f"{high}", "trial_epochs": int(spent.sum()),
                     "trials": int((epochs > low).sum())})
    return pd.DataFrame(rows)


def asha_budget(ds: Dataset, path: Path) -> Path | None:
    """Bars of trial-epochs per stretch between rungs; the full budget without early stopping as a line."""
    search = phase_trials(ds, Phase.SEARCH)
    if search.empty:
        return None
    table = budget_by_rung(ds)
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 4))
    bars = ax.bar(table["epochs"], table["trial_epochs"], color="C0")
    for bar, n in zip(bars, table["trials"], strict=True):
        ax.annotate(f"{n} trials", (bar.get_x() + bar.get_width() / 2, bar.get_height()), ha="center",
                    va="bottom", fontsize=8)
    planned = search["epochs_planned"].astype("float64").fillna(0).sum()
    ax.set_xlabel("epochs (between ASHA rungs)" if ds.info.rungs else "epochs")
    ax.set_ylabel("trial-epochs (search phase)")
    ax.set_title(f"Search budget: {int(table['trial_epochs'].sum())} trial-epochs run of {int(planned)} planned",
                 fontsize=10)
    return _save(fig, path)


def report_plots(ds: Dataset, folder: Path, oc: str = OC_DEFAULT, importance: pd.DataFrame | None = None
                 ) -> list[Path]:
    """Draw every figure that has data into ``folder``, each as PNG and PDF (``oc``: the OC rate's
    definition, see :func:`results._tables.oc_metric`; ``importance``: the study's parameter importance when
    already computed); returns the PNG files written (each with its PDF beside it)."""
    folder.mkdir(parents=True, exist_ok=True)
    searched = ds.info.search_keys or PLOTTED_KEYS
    makers: list[tuple[str, Callable[[Dataset, Path], Path | None]]] = [
        (f"miou_vs_{key.rsplit('.', 1)[-1]}.png", lambda d, p, k=key: metric_vs_param(d, k, p))  # type: ignore[misc]
        for key in PLOTTED_KEYS if key in searched]
    makers += [
        ("parallel_coordinates.png", parallel_coordinates),
        ("importance.png", lambda d, p: importance_plot(d, p, importance)),
        ("oc_vs_miou.png", lambda d, p: oc_vs_miou(d, p, oc)), ("learning_curves.png", learning_curves),
        ("priors.png", priors), ("asha_budget.png", asha_budget)]
    written = [p for p in (maker(ds, folder / name) for name, maker in makers) if p is not None]
    for name in ALL_PLOTS:  # a plot without data this time must not survive from an earlier report
        if folder / name not in written:
            (folder / name).unlink(missing_ok=True)
            (folder / name).with_suffix(VECTOR).unlink(missing_ok=True)
    return written
