"""The report's figures as PNG files (matplotlib, Agg backend).

- ``miou_vs_delta.png``, ``miou_vs_tau.png``: val mIoU of every completed trial against δ and τ (those the
  study searched), by selection strategy, with the mean per bin;
- ``oc_vs_miou.png``: OC rate against val mIoU, one point per completed trial;
- ``learning_curves.png``: val mIoU per epoch, one panel per cell (every trial thin, the best setting's
  mean over seeds thick);
- ``priors.png``: the prior matrix of the best trial of each prior variant, raw and min-max normalised
  (like the paper's Fig. S2), from the trial's ``prior.csv`` artifact;
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

from record import OCR_OFF
from results._schema import PARAM_PREFIX, Dataset
from results._tables import SELECTION, SYMBOLS, best_settings, bin_values, cell_order, completed

log = logging.getLogger(__name__)
DPI = 90
MAX_PRIORS = 7
PLOTTED_KEYS = ("ocr.delta", "ocr.tau")  # against val mIoU, where the study searched them
ALL_PLOTS = (*(f"miou_vs_{k.rsplit('.', 1)[-1]}.png" for k in PLOTTED_KEYS), "oc_vs_miou.png", "learning_curves.png",
             "priors.png", "asha_budget.png")


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig: Any, path: Path) -> Path:
    plt = _pyplot()
    fig.tight_layout()
    fig.savefig(path, dpi=DPI)
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
        ax.plot(means["x"], means["y"], marker="o", lw=1.5, label=f"{name} (mean per bin)")
    ax.set_xscale("log" if log_x else "linear")
    ax.set_xlabel(f"{SYMBOLS.get(key, key)} ({key})")
    ax.set_ylabel("val mIoU (%)")
    ax.set_title(f"val mIoU against {SYMBOLS.get(key, key)} (completed trials)")
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))  # outside: never over the data
    return _save(fig, path)


def oc_vs_miou(ds: Dataset, path: Path) -> Path | None:
    """OC rate against val mIoU, one point per completed trial, coloured by cell."""
    done = completed(ds)
    if done.empty or "final_val_oc_rate" not in done:
        return None
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 4))
    for cell in cell_order(ds, sorted(done["cell"].astype(str).unique())):
        part = done[done["cell"].astype(str) == cell]
        ax.scatter(100 * part["final_val_miou"], 100 * part["final_val_oc_rate"], s=16, alpha=0.7, label=cell)
    ax.set_xlabel("val mIoU (%)")
    ax.set_ylabel("OC rate (%)")
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
        if variant in found or folder is None or not (folder / "prior.csv").is_file():
            continue
        found[variant] = pd.read_csv(folder / "prior.csv", index_col=0)
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
            ax.set_xticks(range(len(matrix.columns)), matrix.columns, rotation=90, fontsize=6)
            ax.set_yticks(range(len(matrix.index)), matrix.index, fontsize=6)
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


def report_plots(ds: Dataset, folder: Path) -> list[Path]:
    """Draw every figure that has data into ``folder``; returns the files written."""
    folder.mkdir(parents=True, exist_ok=True)
    searched = ds.info.search_keys or PLOTTED_KEYS
    makers: list[tuple[str, Callable[[Dataset, Path], Path | None]]] = [
        (f"miou_vs_{key.rsplit('.', 1)[-1]}.png", lambda d, p, k=key: metric_vs_param(d, k, p))  # type: ignore[misc]
        for key in PLOTTED_KEYS if key in searched]
    makers += [
        ("oc_vs_miou.png", oc_vs_miou), ("learning_curves.png", learning_curves), ("priors.png", priors),
        ("asha_budget.png", asha_budget)]
    written = [p for p in (maker(ds, folder / name) for name, maker in makers) if p is not None]
    for name in ALL_PLOTS:  # a plot without data this time must not survive from an earlier report
        if folder / name not in written:
            (folder / name).unlink(missing_ok=True)
    return written
