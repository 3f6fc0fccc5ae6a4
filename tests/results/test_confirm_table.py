"""The ablation table from the confirm phase, on a hand-made dataset: n = confirm seeds in every row, Δ with
the paired tests over the same seeds, a row for a cell whose runs failed, the search phase kept apart."""

from __future__ import annotations

import math

import pandas as pd
import pytest

from results import Dataset, StudyInfo, ablation_table, paired_t_test, report_tables

BASE = [0.40, 0.42, 0.41, 0.43, 0.39]
OC = [0.45, 0.46, 0.44, 0.47, 0.45]


def _row(phase: str, cell: str, setting: int, seed: int, miou: float, reason: str = "completed",
         error: str = "") -> dict[str, object]:
    return {"trial_id": f"{phase}-{cell}-{setting}-{seed}", "phase": phase, "cell": cell, "setting": setting,
            "seed": seed, "stop_reason": reason, "status": "ERROR" if reason == "failed" else "TERMINATED",
            "error": error, "epochs": 4, "final_val_miou": miou, "final_val_oc_rate": 0.1,
            "final_val_oracle_miou": miou + 0.1, "params.ocr.delta": None if "none" in cell else 2.0 + setting}


def _dataset() -> Dataset:
    rows = [_row("search", "ocr.selection=none", 0, 0, 0.9), _row("search", "ocr.selection=oc", 1, 0, 0.9),
            _row("search", "ocr.selection=oc", 0, 0, 0.1, "early_stopped")]
    rows += [_row("confirm", "ocr.selection=none", 0, s, v) for s, v in enumerate(BASE)]
    rows += [_row("confirm", "ocr.selection=oc", 1, s, v) for s, v in enumerate(OC)]
    rows += [_row("confirm", "ocr.selection=all", 0, s, math.nan, "failed", "ValueError: loss is NaN")
             for s in range(3)] + [_row("confirm", "ocr.selection=all", 0, s, 0.3) for s in (3, 4)]
    info = StudyInfo(name="t", grid={"ocr.selection": ["none", "all", "oc"]}, search_keys=("ocr.delta",),
                     confirm={"seeds": list(range(5)), "epochs": 4, "metric": "val_miou", "mode": "max",
                              "cells": [{"id": "ocr.selection=none", "settings": [0], "rule": "completed"},
                                        {"id": "ocr.selection=all", "settings": [0], "rule": "epoch", "epoch": 2},
                                        {"id": "ocr.selection=oc", "settings": [1], "rule": "completed"}]})
    return Dataset(pd.DataFrame(rows), pd.DataFrame(), info, "test")


def test_confirm_rows_have_n_seeds_and_paired_tests_over_the_same_seeds() -> None:
    table = ablation_table(_dataset())
    values = table.values.set_index("cell")
    assert list(values.index) == ["ocr.selection=none", "ocr.selection=all", "ocr.selection=oc"]
    oc = values.loc["ocr.selection=oc"]
    assert oc["val_miou_n"] == 5 and oc["val_miou_mean"] == pytest.approx(sum(OC) / 5)
    expected = paired_t_test([a - b for a, b in zip(OC, BASE, strict=True)])
    assert oc["diff_n"] == 5 and oc["p_value"] == pytest.approx(expected.p)
    assert oc["ci_low"] == pytest.approx(expected.ci_low) and oc["wilcoxon_p"] == pytest.approx(2 / 32)
    assert oc["ocr.delta"] == 3.0  # the chosen setting's value, from the confirm trials
    failed = values.loc["ocr.selection=all"]
    assert failed["val_miou_n"] == 2 and failed["problems"] == "diverged (NaN) in 3 of 5 seeds"
    assert "diverged (NaN) in 3 of 5 seeds" in table.display["notes"].tolist()
    assert "confirm seeds [0, 1, 2, 3, 4]" in table.notes and "at epoch 2" in table.notes


def test_search_tables_stay_apart_from_the_confirm_table() -> None:
    tables = {t.name: t for t in report_tables(_dataset())}
    assert list(tables)[:2] == ["ablation", "search_ablation"]
    search = tables["search_ablation"].values.set_index("cell")
    assert search.loc["ocr.selection=oc", "val_miou_n"] == 1  # only the search trial, no confirm run mixed in


def test_confirm_runs_scored_on_a_test_split_are_reported_on_it() -> None:
    """Issue 10: chosen on val, measured on the held-out test split when the confirm runs scored one."""
    ds = _dataset()
    trials = ds.trials.copy()
    confirm = trials["phase"] == "confirm"
    trials.loc[confirm, "final_test_miou"] = trials.loc[confirm, "final_val_miou"] - 0.1
    trials.loc[confirm, "final_test_oc_rate"] = 0.2
    trials.loc[confirm, "final_test_oracle_miou"] = 0.5
    table = ablation_table(Dataset(trials, ds.curves, ds.info, ds.source))
    oc = table.values.set_index("cell").loc["ocr.selection=oc"]
    assert oc["test_miou_mean"] == pytest.approx(sum(OC) / 5 - 0.1) and oc["test_miou_n"] == 5
    assert oc["test_oc_rate_mean"] == pytest.approx(0.2) and "val_miou_mean" not in table.values
    assert "test mIoU (%)" in table.display and "val mIoU (%)" not in table.display
    assert "Δ test mIoU vs baseline (pp, 95% CI, paired t)" in table.display
    assert "measured on the held-out test split" in table.notes and "on val by val_miou" in table.notes
    assert "measured on test" in table.title
    assert "measured on val" in ablation_table(ds).title  # without test figures: val, as before
