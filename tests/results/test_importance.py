"""Parameter importance per cell: the parameter the metric depends on gets (nearly) all of it."""

from __future__ import annotations

import numpy as np
import pandas as pd

from results import Dataset
from results._importance import importance_table, param_importance


def test_the_param_that_drives_the_metric_is_the_important_one() -> None:
    rng = np.random.default_rng(0)
    delta, tau = rng.uniform(0, 8, 30), rng.uniform(0.05, 0.5, 30)
    trials = pd.DataFrame({"cell": "ocr.selection=oc", "stop_reason": "completed", "params.ocr.delta": delta,
                           "params.ocr.tau": tau, "val_miou": 0.5 + 0.03 * delta})
    base = pd.DataFrame({"cell": ["ocr.selection=none"] * 2, "stop_reason": "completed",
                         "params.ocr.delta": [6.0, 6.0], "params.ocr.tau": [0.2, 0.2], "val_miou": [0.5, 0.6]})
    stopped = trials.iloc[:3].assign(stop_reason="early_stopped", val_miou=0.0)
    table = param_importance(pd.concat([trials, base, stopped], ignore_index=True))
    assert set(table["cell"]) == {"ocr.selection=oc"}  # nothing varies (and too few trials) in the baseline
    found = table.set_index("param")["importance"]
    assert found["ocr.delta"] > 0.9 and found["ocr.tau"] < 0.1
    assert found.sum() == 1.0 or abs(found.sum() - 1.0) < 1e-9
    assert set(table["n"]) == {30}


def test_two_settings_of_a_cell_say_nothing_about_importance(synthetic: Dataset) -> None:
    """The default synthetic study completes 2 settings per OCR cell (3 seeds each): seed noise, no table."""
    assert importance_table(synthetic) is None


def test_the_report_has_an_importance_table(searched: Dataset) -> None:
    table = importance_table(searched)
    assert table is not None and table.name == "importance"
    shares = table.values.drop(columns="cell").sum(axis=1)
    assert ((shares - 1.0).abs() < 1e-9).all()
    assert all("(n = " in c for c in table.display["cell"])


def _cell(values: dict[str, np.ndarray], metric: np.ndarray) -> pd.DataFrame:
    return pd.DataFrame({"cell": "ocr.selection=oc", "stop_reason": "completed",
                         **{f"params.{k}": v for k, v in values.items()}, "val_miou": metric})


def test_a_cell_whose_settings_all_scored_the_same_has_no_importance_and_no_error() -> None:
    """Optuna's fANOVA raises on a metric without variance (every trial predicting background, say): the
    report gets no row for that cell instead of failing."""
    rng = np.random.default_rng(1)
    flat = _cell({"ocr.delta": rng.uniform(0, 8, 6), "ocr.tau": rng.uniform(0.05, 0.5, 6)}, np.full(6, 0.25))
    assert param_importance(flat).empty
    assert param_importance(flat.drop(columns="params.ocr.tau")).empty


def test_one_searched_param_has_all_of_the_importance() -> None:
    rng = np.random.default_rng(2)
    delta = rng.uniform(0, 8, 8)
    table = param_importance(_cell({"ocr.delta": delta}, 0.4 + 0.01 * rng.normal(size=8)))
    assert table.to_dict("records") == [{"cell": "ocr.selection=oc", "param": "ocr.delta", "importance": 1.0,
                                         "n": 8}]
