"""Which sampled parameter mattered, per cell: Optuna's fANOVA importance over the cell's completed trials.

Like the Optuna dashboard's and W&B's parameter-importance panels: the trials of a cell are handed to an
Optuna study as finished trials (their sampled values and their final metric) and Optuna's importance
evaluator splits the metric's variance among the parameters. Optuna is imported here only, when called.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import pandas as pd

from record import Phase, StopReason
from results._schema import PARAM_PREFIX
from results._table import SYMBOLS, Table

if TYPE_CHECKING:
    from results._schema import Dataset

MIN_TRIALS = 3  # fewer settings say nothing about importance
MAX_POINTS = 300  # settings per cell handed to fANOVA (a seeded sample beyond): its cost grows faster than n
# fANOVA's forest. On 200 settings Optuna's default (64 trees, depth 64) took 3.4 s, 16 trees of depth 6
# 0.26 s, and the importances agreed within 0.003 (δ 0.971 vs 0.972; measured with a known δ-driven metric).
N_TREES = 16
MAX_DEPTH = 6


def _sampled(group: pd.DataFrame, params: Sequence[str]) -> list[str]:
    """The params that vary (numerically) within the cell."""
    out = []
    for name in params:
        column = pd.to_numeric(group[name], errors="coerce")
        if column.notna().all() and column.nunique() > 1:
            out.append(name)
    return out


def settings_means(group: pd.DataFrame, metric: str, params: list[str], seed: int = 0) -> pd.DataFrame:
    """One row per sampled setting (the seeds of a setting share its values): the params and the mean of
    ``metric`` over its seeds; at most :data:`MAX_POINTS` rows (a sample drawn with ``seed`` beyond)."""
    means = group.groupby(params, sort=True)[metric].mean().reset_index()
    return means if len(means) <= MAX_POINTS else means.sample(MAX_POINTS, random_state=seed)


def cell_importance(group: pd.DataFrame, metric: str, seed: int = 0) -> dict[str, float]:
    """fANOVA importance (summing to 1) of each param that varies among ``group``'s trials, over the mean of
    ``metric`` per setting (seed noise is nobody's importance); empty when fewer than :data:`MIN_TRIALS`
    settings have the metric, no param varies, or every setting scored the same (no variance to split:
    Optuna's fANOVA raises on it)."""
    group = group[group[metric].notna()]
    params = _sampled(group, [c for c in group.columns if c.startswith(PARAM_PREFIX)])
    if not params:
        return {}
    group = settings_means(group.assign(**{p: pd.to_numeric(group[p]).astype(float) for p in params}), metric,
                           params, seed)
    if len(group) < MIN_TRIALS or group[metric].nunique() < 2:  # every setting scored alike: nothing to split
        return {}
    if len(params) == 1:  # the shares sum to 1: one parameter has all of it (fANOVA is not needed to say so)
        return {params[0][len(PARAM_PREFIX):]: 1.0}
    import optuna
    from optuna.distributions import BaseDistribution, FloatDistribution
    from optuna.importance import FanovaImportanceEvaluator, get_param_importances

    values = {p: pd.to_numeric(group[p]).astype(float) for p in params}
    dists: dict[str, BaseDistribution] = {p[len(PARAM_PREFIX):]: FloatDistribution(float(v.min()), float(v.max()))
                                          for p, v in values.items()}
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(direction="maximize")
    for i in range(len(group)):
        sampled = {p[len(PARAM_PREFIX):]: float(values[p].iloc[i]) for p in params}
        study.add_trial(optuna.trial.create_trial(params=sampled, distributions=dists,
                                                  value=float(group[metric].iloc[i])))
    found = get_param_importances(study, evaluator=FanovaImportanceEvaluator(n_trees=N_TREES, max_depth=MAX_DEPTH,
                                                                                  seed=seed))
    return {name: float(v) for name, v in found.items()}


def param_importance(trials: pd.DataFrame, metric: str = "val_miou", keys: Sequence[str] = ()) -> pd.DataFrame:
    """Per cell, the importance of each sampled param over its completed trials (their final ``metric``,
    averaged over the seeds of each setting): columns ``cell``, ``param``, ``importance`` (0–1, summing to 1
    per cell) and ``n`` (trials used).

    Args:
        trials: the collected trials (``params.*`` columns, ``cell``, ``stop_reason``, the metric).
        metric: the metric whose variance is split.
        keys: the searched parameters (the study's ``search_keys``); empty: every param that varies but
            the seed (which no sampler chose).
    """
    rows = []
    wanted = [f"{PARAM_PREFIX}{k}" for k in keys] if keys else \
        [c for c in trials.columns if c.startswith(PARAM_PREFIX) and c != f"{PARAM_PREFIX}seed"]
    trials = trials[[c for c in trials.columns if not c.startswith(PARAM_PREFIX) or c in wanted]]
    metric = f"final_{metric}" if f"final_{metric}" in trials else metric  # the collected trials' column
    done = trials[trials["stop_reason"].astype(str) == StopReason.COMPLETED] if "stop_reason" in trials else trials
    for cell, group in done.groupby("cell", observed=True, sort=True):
        for name, value in cell_importance(group, metric).items():
            rows.append({"cell": str(cell), "param": name, "importance": value,
                         "n": int(group[metric].notna().sum())})
    return pd.DataFrame(rows, columns=["cell", "param", "importance", "n"])


def study_importance(ds: Dataset) -> pd.DataFrame:
    """:func:`param_importance` of a collected study's search phase (the confirm phase samples nothing)."""
    trials = ds.trials
    if "phase" in trials:
        trials = trials[trials["phase"].astype(str) == Phase.SEARCH]
    return param_importance(trials, ds.info.metric, ds.info.search_keys)


def importance_table(ds: Dataset, values: pd.DataFrame | None = None) -> Table | None:
    """The report's table of parameter importance per cell (percent of the metric's variance), or ``None``
    when no cell has enough completed trials with a varying parameter.

    Args:
        ds: the collected study.
        values: its :func:`study_importance`, when already computed (fANOVA takes seconds on large cells).
    """
    values = study_importance(ds) if values is None else values
    if values.empty:
        return None
    wide = values.pivot(index="cell", columns="param", values="importance").reset_index()
    wide.columns.name = None
    n = values.groupby("cell")["n"].first()
    display = pd.DataFrame({"cell": [f"{c} (n = {n[c]})" for c in wide["cell"]]})
    for column in wide.columns[1:]:
        display[f"{SYMBOLS.get(column, column)} (% of variance)"] = wide[column].map(
            lambda x: "—" if pd.isna(x) else f"{100 * x:.0f}")
    notes = (f"Share (%) of the variance of {ds.info.metric} (mean over each setting's seeds) among a cell's "
             "completed search trials explained by each sampled parameter (Optuna's fANOVA importance evaluator, "
             f"{N_TREES} trees of depth {MAX_DEPTH}, seed 0; at most {MAX_POINTS} settings per cell, a seeded "
             "sample beyond); n = trials; with few trials, a rough guide.")
    return Table("importance", "Parameter importance per cell", notes, wide, display,
                 tuple(str(c) for c in display.columns[1:]))
