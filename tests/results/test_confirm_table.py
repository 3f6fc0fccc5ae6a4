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
    assert list(tables)[:2] == ["ablation", "search_selection"]
    search = tables["search_selection"].values.set_index(["cell", "setting"])
    assert search.loc[("ocr.selection=oc", 1), "score_n"] == 1  # only the search trial, no confirm run mixed in


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
    assert "Δ test mIoU (pp)" in table.display
    assert "measured on the held-out test split" in table.notes and "on val by val_miou" in table.notes
    assert "measured on test" in table.title
    assert "measured on val" in ablation_table(ds).title  # without test figures: val, as before


def test_columns_without_a_figure_in_any_row_are_dropped() -> None:
    """With n < 5 no Wilcoxon p and, without a problem, no notes: a paper prints no empty column."""
    ds = _dataset()
    trials = ds.trials[~((ds.trials["phase"] == "confirm") & (ds.trials["seed"] >= 3))]
    trials = trials[~((trials["cell"] == "ocr.selection=all") & (trials["phase"] == "confirm"))]
    trials = pd.concat([trials, pd.DataFrame([_row("confirm", "ocr.selection=all", 0, s, 0.3) for s in range(3)])])
    table = ablation_table(Dataset(trials, ds.curves, ds.info, ds.source))
    assert "p (Wilcoxon)" not in table.display and "notes" not in table.display
    assert "p (paired t)" in table.display and "setting" in table.display
    full = ablation_table(ds)  # n = 5 and a failed cell: both columns have something to say
    assert "p (Wilcoxon)" in full.display and "notes" in full.display


def test_a_difference_is_bold_only_where_its_interval_excludes_zero() -> None:
    """oc beats the baseline on every seed (CI above 0): bold; a cell whose differences straddle 0: not bold,
    however large its mean; nor a loss, however sure."""
    noisy = [0.47, 0.37, 0.50, 0.36, 0.45]  # mean difference +1.8 pp, the CI around 0
    ds = _dataset()
    trials = ds.trials[~((ds.trials["cell"] == "ocr.selection=all") & (ds.trials["phase"] == "confirm"))]
    trials = pd.concat([trials, pd.DataFrame([_row("confirm", "ocr.selection=all", 0, s, v)
                                              for s, v in enumerate(noisy)])], ignore_index=True)
    table = ablation_table(Dataset(trials, ds.curves, ds.info, ds.source))
    values = table.values.set_index("cell")
    diff = next(c for c in table.display.columns if c.startswith("Δ"))
    bold = {table.values["cell"].iloc[r] for r, c in table.bold if c == diff}
    assert values.loc["ocr.selection=oc", "ci_low"] > 0 and "ocr.selection=oc" in bold
    assert values.loc["ocr.selection=all", "ci_low"] < 0 < values.loc["ocr.selection=all", "ci_high"]
    assert values.loc["ocr.selection=all", "diff_mean"] > 0 and "ocr.selection=all" not in bold
    assert "a Δ whose 95% confidence interval excludes 0 on the side of a gain" in table.notes
    worse = trials.assign(final_val_miou=trials["final_val_miou"].where(
        ~(trials["phase"].eq("confirm") & trials["cell"].eq("ocr.selection=oc")), trials["final_val_miou"] - 0.2))
    lost = ablation_table(Dataset(worse, ds.curves, ds.info, ds.source))
    assert lost.values.set_index("cell").loc["ocr.selection=oc", "ci_high"] < 0  # a significant loss: not bold
    assert not [r for r, c in lost.bold if c.startswith("Δ")]


def test_the_oc_rate_is_bold_only_among_cells_within_reach_of_the_best_miou() -> None:
    """A collapsed cell with the lowest OC rate is not the bold one: the lowest OC rate among the cells whose
    mIoU is within REACH_PP of the best is."""
    from results._tables import REACH_PP

    ds = _dataset()
    trials = ds.trials.copy()
    confirm = trials["phase"] == "confirm"
    rates = {"ocr.selection=none": 0.30, "ocr.selection=all": 0.01, "ocr.selection=oc": 0.20}
    trials.loc[confirm, "final_val_oc_rate_fg"] = trials.loc[confirm, "cell"].map(rates)
    base = trials["phase"].eq("confirm") & trials["cell"].eq("ocr.selection=none")
    trials.loc[base, "final_val_miou"] = trials.loc[base, "final_val_miou"] + 0.04  # 0.4 pp below oc
    table = ablation_table(Dataset(trials, ds.curves, ds.info, ds.source))
    values = table.values.set_index("cell")
    gap = 100 * (values.loc["ocr.selection=oc", "val_miou_mean"] - values.loc["ocr.selection=none", "val_miou_mean"])
    assert 0 < gap < REACH_PP  # the baseline is within reach, the collapsed `all` cell is not
    oc = next(c for c in table.display.columns if c.startswith("OC rate"))
    bold = [table.values["cell"].iloc[r] for r, c in table.bold if c == oc]
    assert bold == ["ocr.selection=oc"]  # not `all` (lowest rate, collapsed mIoU), not the baseline (higher rate)
    assert f"within {REACH_PP:g} pp of the best cell's" in table.notes


def test_negative_numbers_carry_a_minus_sign_not_a_hyphen() -> None:
    """A paper prints −3.1, not -3.1: every figure's sign is U+2212 (the LaTeX writer makes it $-$)."""
    from results._tables import MINUS, minus

    assert minus("-3.10 [-4.00, -2.20], x-1, e-2") == f"{MINUS}3.10 [{MINUS}4.00, {MINUS}2.20], x-1, e-2"
    ds = _dataset()
    trials = ds.trials.copy()
    worse = trials["phase"].eq("confirm") & trials["cell"].eq("ocr.selection=oc")
    trials.loc[worse, "final_val_miou"] = trials.loc[worse, "final_val_miou"] - 0.2
    table = ablation_table(Dataset(trials, ds.curves, ds.info, ds.source))
    diff = next(c for c in table.display.columns if c.startswith("Δ"))
    text = table.display[diff].iloc[2]
    assert text.startswith(MINUS) and "-" not in text and text.count(MINUS) == 3  # the mean and both CI ends


def test_the_selection_table_shows_every_search_trial_the_rule_and_the_scores_that_chose() -> None:
    """Issue 21: a cell ranked at an ASHA rung shows its stopped trials with the epoch they reached and the
    values at that epoch that ranked them; a cell ranked by completed trials leaves the stopped setting unranked."""
    ds = _dataset()
    rows = [_row("search", "ocr.selection=all", 0, 0, 0.30, "early_stopped") | {"epochs": 2},
            _row("search", "ocr.selection=all", 1, 0, 0.25, "early_stopped") | {"epochs": 3}]
    trials = pd.concat([ds.trials, pd.DataFrame(rows)], ignore_index=True)
    curves = pd.DataFrame({"trial_id": ["search-ocr.selection=all-0-0"] * 2 + ["search-ocr.selection=all-1-0"] * 3,
                           "epoch": [1, 2, 1, 2, 3], "val_miou": [0.2, 0.30, 0.1, 0.22, 0.25]})
    tables = {t.name: t for t in report_tables(Dataset(trials, curves, ds.info, ds.source))}
    table = tables["search_selection"]
    values = table.values.set_index(["cell", "setting"])
    assert values.loc[("ocr.selection=all", 0), "score_mean"] == pytest.approx(0.30)  # at epoch 2, its rung
    assert values.loc[("ocr.selection=all", 1), "score_mean"] == pytest.approx(0.22)  # at epoch 2, not its last
    assert values.loc[("ocr.selection=all", 0), "rank"] == 1 and values.loc[("ocr.selection=all", 0), "chosen"]
    assert values.loc[("ocr.selection=oc", 1), "rank"] == 1 and pd.isna(values.loc[("ocr.selection=oc", 0), "rank"])
    display = table.display
    trial_column = next(c for c in display.columns if c.startswith("trials: "))
    texts = dict(zip(zip(table.values["cell"], table.values["setting"], strict=True), display[trial_column],
                     strict=True))
    assert texts[("ocr.selection=all", 1)] == "25.00 (e3, stopped)"
    assert texts[("ocr.selection=oc", 0)] == "10.00 (e4, stopped)" and texts[("ocr.selection=oc", 1)] == "90.00 (e4)"
    ranked_by = dict(zip(table.values["cell"], display["ranked by"], strict=False))
    assert display["ranked by"].tolist().count("epoch 2") == 1 and "completed" in display["ranked by"].tolist()
    assert ranked_by["ocr.selection=none"] == "completed"
    ranks = dict(zip(zip(table.values["cell"], table.values["setting"], strict=True), display["rank"], strict=True))
    assert ranks[("ocr.selection=all", 0)] == "1 (chosen)" and ranks[("ocr.selection=oc", 0)] == ""
    score = next(c for c in display.columns if c.startswith("score"))
    chosen = [(int(table.values["setting"].iloc[r]), str(table.values["cell"].iloc[r])) for r, c in table.bold
              if c == score]
    assert sorted(chosen) == [(0, "ocr.selection=all"), (0, "ocr.selection=none"), (1, "ocr.selection=oc")]
    assert "ocr.selection=all: val_miou at epoch 2" in tables["ablation"].notes
