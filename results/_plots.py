"""The report's figures as PNG files (matplotlib, Agg backend).

- ``miou_vs_delta.png``, ``miou_vs_tau.png``: val mIoU of every completed trial against δ and τ (those the
  study searched), by selection strategy, with the mean per bin and its n, and the baseline cell's mean as a
  horizontal reference line;
- ``parallel_coordinates.png``: per cell that searched, each completed trial as a line through its sampled
  values to its final metric (like the Optuna dashboard's and W&B's parallel-coordinates plots);
- ``importance.png``: per cell, the share of the metric's variance each searched parameter explains
  (Optuna's fANOVA importance evaluator);
- ``oc_vs_miou.png``: OC rate (the paper's definition by default) against val mIoU, one point per completed
  trial;
- ``learning_curves.png``: val mIoU per epoch, one panel per cell (every trial thin, the best setting's
  mean over seeds thick);
- ``priors.png``: the prior matrix of the best trial of each prior variant, raw and min-max normalised
  (like the paper's Fig. S2), from the trial's ``prior.csv`` artifact, class names on both axes;
- ``asha_budget.png``: trial-epochs spent between ASHA's rungs, and trials reaching each rung.
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

from record import OCR_OFF, PRIOR_FILE, parse_cell
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
)

log = logging.getLogger(__name__)
DPI = 90
MAX_PRIORS = 7
PLOTTED_KEYS = ("ocr.delta", "ocr.tau")  # against val mIoU, where the study searched them
ALL_PLOTS = (*(f"miou_vs_{k.rsplit('.', 1)[-1]}.png" for k in PLOTTED_KEYS), "parallel_coordinates.png",
             "importance.png", "oc_vs_miou.png", "learning_curves.png", "priors.png", "asha_budget.png")


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig: Any, path: Path) -> Path:
    plt = _pyplot()
    fig.tight_layout()
    fig.savefig(path, dpi=DPI, bbox_inches="tight")  # legends placed outside the axes stay whole
    plt.close(fig)
    return path


def _groups(frame: pd.DataFrame) -> pd.Series:
    return frame[SELECTION].astype(str) if SELECTION in frame else frame["cell"].astype(str)


def metric_vs_param(ds: Dataset, key: str, path: Path) -> Path | None:
    """val mIoU against one parameter, per selection strategy (log x for log-sampled parameters)."""
    column, done = f"{PARAM_PREFIX}{key}", completed(ds)
    if column not in done or "final_val_miou" not in done:
        return None
    groups = _groups(done)
    rows = done[(groups != OCR_OFF) & done[column].notna()]
    if rows.empty:
        return None
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 4))
    x_all = rows[column].astype("float64")
    log_x = bool(key in ds.info.log_keys and x_all.min() > 0)
    for name, part in rows.groupby(groups[rows.index]):
        x, y = part[column].astype("float64"), 100 * part["final_val_miou"]
        ax.scatter(x, y, s=14, alpha=0.5, label=f"{name} (trials)")
        bins, _ = bin_values(x, log_x)
        means = pd.DataFrame({"x": x, "y": y}).groupby(bins).median().sort_values("x")
        means["y"] = y.groupby(bins).mean()
        means["n"] = y.groupby(bins).size()
        line = ax.plot(means["x"], means["y"], marker="o", lw=1.5, label=f"{name} (mean per bin, n = trials)")[0]
        for _, point in means.iterrows():
            ax.annotate(f"n={int(point['n'])}", (point["x"], point["y"]), textcoords="offset points",
                        xytext=(0, 6), ha="center", fontsize=7, color=line.get_color())
    base = baseline_mean(ds)
    if base is not None:
        ax.axhline(100 * base[1], color="0.3", ls="--", lw=1,
                   label=f"baseline {base[0]} (mean, n = {base[2]})")
    ax.set_xscale("log" if log_x else "linear")
    if log_x:  # plain numbers, no crowded 2×10⁻¹ minor labels
        from matplotlib.ticker import FuncFormatter, NullFormatter

        ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:.3g}"))
        ax.xaxis.set_minor_formatter(NullFormatter())
    ax.set_xlabel(f"{SYMBOLS.get(key, key)} ({key})")
    ax.set_ylabel("val mIoU (%)")
    ax.set_title(f"val mIoU against {SYMBOLS.get(key, key)} (completed trials)")
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))  # outside: never over the data
    return _save(fig, path)


def baseline_mean(ds: Dataset) -> tuple[str, float, int] | None:
    """(cell, mean final val mIoU, n) of the baseline cell's completed trials at its best setting; None
    without any."""
    best = best_settings(ds)
    if best.empty:
        return None
    cell = baseline_cell(ds, cell_order(ds, [str(c) for c in best.index]))
    if parse_cell(cell).get("ocr.selection") != OCR_OFF:
        return None  # no cell without OCR: nothing to refer to
    done = completed(ds)
    mine = done[(done["cell"].astype(str) == cell) & (done["setting"] == best[cell])]["final_val_miou"].dropna()
    return (cell, float(mine.mean()), len(mine)) if len(mine) else None


def parallel_coordinates(ds: Dataset, path: Path) -> Path | None:
    """Per cell that searched, each completed trial as a line through its sampled values (one axis each,
    scaled to the range sampled, log for log-sampled ones) to its final metric, coloured by the metric."""
    metric, done = ds.info.metric, completed(ds)
    panels = [(cell, keys) for cell in cell_order(ds, sorted(done["cell"].astype(str).unique()))
              if len(keys := _varying(done[done["cell"].astype(str) == cell], ds.info.search_keys)) > 0]
    if f"final_{metric}" not in done or not panels:
        return None
    plt = _pyplot()
    fig, axes = plt.subplots(len(panels), 1, figsize=(7, 3.2 * len(panels)), squeeze=False)
    for ax, (cell, keys) in zip(axes[:, 0], panels, strict=True):
        _parallel_panel(ds, ax, done[done["cell"].astype(str) == cell], keys, f"final_{metric}")
        ax.set_title(f"{cell}: {len(done[done['cell'].astype(str) == cell])} completed trials", fontsize=9)
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
                           linewidths=1.2, alpha=0.8)
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
    table = study_importance(ds) if values is None else values
    if table.empty:
        return None
    cells = cell_order(ds, sorted(table["cell"].unique()))
    plt = _pyplot()
    fig, axes = plt.subplots(1, len(cells), figsize=(3.6 * len(cells), 2.8), squeeze=False, sharex=True)
    for ax, cell in zip(axes[0], cells, strict=True):
        mine = table[table["cell"] == cell].sort_values("importance")
        ax.barh([SYMBOLS.get(p, p) for p in mine["param"]], 100 * mine["importance"], color="C0")
        ax.set_title(f"{cell} (n = {int(mine['n'].iloc[0])})", fontsize=8)
        ax.set_xlabel(f"% of {ds.info.metric} variance")
        ax.set_xlim(0, 100)
    return _save(fig, path)


def oc_vs_miou(ds: Dataset, path: Path, oc: str = OC_DEFAULT) -> Path | None:
    """OC rate (``oc``: the paper's share of foreground predictions, or of valid pixels) against val mIoU,
    one point per completed trial, coloured by cell."""
    done = completed(ds)
    metric, label = oc_metric(ds, oc)
    if done.empty or f"final_{metric}" not in done:
        return None
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 4))
    for cell in cell_order(ds, sorted(done["cell"].astype(str).unique())):
        part = done[done["cell"].astype(str) == cell]
        ax.scatter(100 * part["final_val_miou"], 100 * part[f"final_{metric}"], s=16, alpha=0.7, label=cell)
    ax.set_xlabel("val mIoU (%)")
    ax.set_ylabel(label)
    ax.set_title("OC rate against val mIoU (one point per trial)")
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    return _save(fig, path)


def learning_curves(ds: Dataset, path: Path) -> Path | None:
    """val mIoU per epoch, a panel per cell: all trials thin, the best setting's mean over seeds thick."""
    if ds.curves.empty or "val_miou" not in ds.curves:
        return None
    cells = cell_order(ds, sorted(ds.trials["cell"].astype(str).unique()))
    best = best_settings(ds)
    cols = min(4, len(cells))
    rows = math.ceil(len(cells) / cols)
    plt = _pyplot()
    fig, axes = plt.subplots(rows, cols, figsize=(4 * cols, 3 * rows), squeeze=False,
                             sharey=True)
    curves = ds.curves.merge(ds.trials[["trial_id", "cell", "setting"]].astype({"cell": str}), on="trial_id")
    for ax, cell in zip(axes.flat, cells, strict=False):
        setting = best.get(cell)
        _cell_curves(ax, curves[curves["cell"] == cell], setting)
        ax.set_title(cell + ("" if setting is None else f"\nred: best setting #{setting}, mean ± std over seeds"),
                     fontsize=8)
        ax.set_xlabel("epoch")
    for ax in axes[:, 0]:
        ax.set_ylabel("val mIoU (%)")
    for ax in list(axes.flat)[len(cells):]:
        ax.set_visible(False)
    return _save(fig, path)


def _cell_curves(ax: Any, curves: pd.DataFrame, setting: object) -> None:
    from matplotlib.collections import LineCollection

    ordered = curves.sort_values(["trial_id", "epoch"], kind="stable")
    points = np.column_stack([ordered["epoch"].to_numpy(dtype="float64"),
                              100 * ordered["val_miou"].to_numpy(dtype="float64")])
    starts = np.flatnonzero(ordered["trial_id"].ne(ordered["trial_id"].shift()).to_numpy())
    lines = [line for line in np.split(points, starts[1:]) if len(line)]
    ax.add_collection(LineCollection(lines, colors="0.6", linewidths=0.6, alpha=0.5))  # one artist for all trials
    ax.autoscale_view()
    if setting is None or pd.isna(setting):
        return
    chosen = curves[curves["setting"] == setting]
    mean = chosen.groupby("epoch")["val_miou"].agg(["mean", "std"])
    ax.plot(mean.index, 100 * mean["mean"], color="C3", lw=2)
    ax.fill_between(mean.index, 100 * (mean["mean"] - mean["std"].fillna(0)),
                    100 * (mean["mean"] + mean["std"].fillna(0)), color="C3", alpha=0.2)


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


def priors(ds: Dataset, path: Path) -> Path | None:
    """Each prior variant's matrix, raw and min-max normalised (Fig. S2)."""
    matrices = prior_matrices(ds)
    if not matrices:
        return None
    plt = _pyplot()
    fig, axes = plt.subplots(len(matrices), 2, figsize=(10, 4.4 * len(matrices)),
                             squeeze=False)
    for row, (variant, matrix) in zip(axes, matrices.items(), strict=True):
        m = matrix.to_numpy(dtype="float64")
        span = m.max() - m.min()
        normalised = (m - m.min()) / span if span > 0 else np.zeros_like(m)
        for ax, values, kind in ((row[0], m, "raw"), (row[1], normalised, "min-max normalised")):
            image = ax.imshow(values, cmap="viridis")
            ax.set_xticks(range(len(matrix.columns)), [str(c) for c in matrix.columns], rotation=90, fontsize=7)
            ax.set_yticks(range(len(matrix.index)), [str(c) for c in matrix.index], fontsize=7)
            ax.set_xlabel("class j", fontsize=8)
            ax.set_ylabel("class i", fontsize=8)
            ax.set_title(f"prior {variant}: {kind}", fontsize=9)
            fig.colorbar(image, ax=ax, fraction=0.046)
    return _save(fig, path)


def budget_by_rung(ds: Dataset) -> pd.DataFrame:
    """Trial-epochs spent in each stretch between ASHA rungs, and how many trials reached its start."""
    epochs = ds.trials["epochs"].astype("int64")
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
    if ds.trials.empty:
        return None
    table = budget_by_rung(ds)
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 4))
    bars = ax.bar(table["epochs"], table["trial_epochs"], color="C0")
    for bar, n in zip(bars, table["trials"], strict=True):
        ax.annotate(f"{n} trials", (bar.get_x() + bar.get_width() / 2, bar.get_height()), ha="center",
                    va="bottom", fontsize=8)
    planned = ds.trials["epochs_planned"].astype("float64").fillna(0).sum()
    ax.set_xlabel("epochs (between ASHA rungs)" if ds.info.rungs else "epochs")
    ax.set_ylabel("trial-epochs")
    ax.set_title(f"Budget: {int(table['trial_epochs'].sum())} trial-epochs run of {int(planned)} planned")
    return _save(fig, path)


def report_plots(ds: Dataset, folder: Path, oc: str = OC_DEFAULT, importance: pd.DataFrame | None = None
                 ) -> list[Path]:
    """Draw every figure that has data into ``folder`` (``oc``: the OC rate's definition, see
    :func:`results._tables.oc_metric`; ``importance``: the study's parameter importance when already
    computed); returns the files written."""
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
    return written
