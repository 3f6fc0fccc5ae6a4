"""Which sampled parameter mattered, per cell: Optuna's fANOVA importance over the cell's completed trials.

Like the Optuna dashboard's and W&B's parameter-importance panels: the trials of a cell are handed to an
Optuna study as finished trials (their sampled values and their final metric) and Optuna's importance
evaluator splits the metric's variance among the parameters. Optuna is imported here only, when called.
"""

from __future__ import annotations

from collections.abc import Sequence

import pandas as pd

from results._schema import PARAM_PREFIX

MIN_TRIALS = 3  # fewer trials say nothing about importance


def _sampled(group: pd.DataFrame, params: Sequence[str]) -> list[str]:
    """The params that vary (numerically) within the cell."""
    out = []
    for name in params:
        column = pd.to_numeric(group[name], errors="coerce")
        if column.notna().all() and column.nunique() > 1:
            out.append(name)
    return out


def cell_importance(group: pd.DataFrame, metric: str, seed: int = 0) -> dict[str, float]:
    """fANOVA importance (summing to 1) of each param that varies among ``group``'s trials; empty when fewer
    than :data:`MIN_TRIALS` trials have the metric or no param varies."""
    import optuna
    from optuna.distributions import BaseDistribution, FloatDistribution
    from optuna.importance import FanovaImportanceEvaluator, get_param_importances

    group = group[group[metric].notna()]
    params = _sampled(group, [c for c in group.columns if c.startswith(PARAM_PREFIX)])
    if len(group) < MIN_TRIALS or not params:
        return {}
    values = {p: pd.to_numeric(group[p]).astype(float) for p in params}
    dists: dict[str, BaseDistribution] = {p[len(PARAM_PREFIX):]: FloatDistribution(float(v.min()), float(v.max()))
                                          for p, v in values.items()}
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(direction="maximize")
    for i in range(len(group)):
        sampled = {p[len(PARAM_PREFIX):]: float(values[p].iloc[i]) for p in params}
        study.add_trial(optuna.trial.create_trial(params=sampled, distributions=dists,
                                                  value=float(group[metric].iloc[i])))
    found = get_param_importances(study, evaluator=FanovaImportanceEvaluator(seed=seed))
    return {name: float(v) for name, v in found.items()}


def param_importance(trials: pd.DataFrame, metric: str = "val_miou") -> pd.DataFrame:
    """Per cell, the importance of each sampled param over its completed trials: columns ``cell``,
    ``param``, ``importance`` (0–1, summing to 1 per cell) and ``n`` (trials used)."""
    rows = []
    done = trials[trials["stop_reason"].astype(str) == "completed"] if "stop_reason" in trials else trials
    for cell, group in done.groupby("cell", observed=True, sort=True):
        for name, value in cell_importance(group, metric).items():
            rows.append({"cell": str(cell), "param": name, "importance": value,
                         "n": int(group[metric].notna().sum())})
    return pd.DataFrame(rows, columns=["cell", "param", "importance", "n"])
