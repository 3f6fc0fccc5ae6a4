"""Every table figure on the synthetic study, checked against a direct pandas computation."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from results import Dataset, ablation_table, collect_study, load_dataset, paired_t_test, sensitivity_table
from results._plots import budget_by_rung
from results._tables import DIFF_LABEL, axis_tables, outcome_table
from tests.results.conftest import make_study


def _completed(ds: Dataset) -> pd.DataFrame:
    trials = ds.trials.copy()
    trials["cell"] = trials["cell"].astype(str)
    return trials[trials["stop_reason"].astype(str) == "completed"]


def _best(done: pd.DataFrame, cell: str) -> pd.DataFrame:
    rows = done[done["cell"] == cell]
    setting = rows.groupby("setting")["final_val_miou"].mean().idxmax()
    return rows[rows["setting"] == setting].set_index("seed")


def test_ablation_figures_match_pandas(synthetic: Dataset) -> None:
    table = ablation_table(synthetic)
    done = _completed(synthetic)
    values = table.values.set_index("cell")
    assert list(values.index) == ["ocr.selection=none", "ocr.selection=all", "ocr.selection=oc"]
    base = _best(done, "ocr.selection=none")
    for cell, row in values.iterrows():
        chosen = _best(done, str(cell))
        assert row["setting"] == chosen["setting"].iloc[0]
        for metric in ("val_miou", "val_oc_rate", "val_oracle_miou"):
            column = chosen[f"final_{metric}"]
            assert row[f"{metric}_n"] == len(column)
            assert row[f"{metric}_mean"] == pytest.approx(column.mean())
            assert row[f"{metric}_std"] == pytest.approx(column.std(ddof=1))
        if cell == "ocr.selection=none":
            assert pd.isna(row["diff_mean"])
            continue
        shared = chosen.index.intersection(base.index)
        diff = chosen.loc[shared, "final_val_miou"] - base.loc[shared, "final_val_miou"]
        assert row["diff_n"] == len(shared) >= 2
        assert row["diff_mean"] == pytest.approx(diff.mean())
        assert row["p_value"] == pytest.approx(paired_t_test(diff.tolist()).p)
        assert row["ci_low"] < row["diff_mean"] < row["ci_high"]


def test_ablation_text_shows_mean_std_and_n_in_percent(synthetic: Dataset) -> None:
    table = ablation_table(synthetic)
    row = table.values.iloc[2]
    text = table.display["val mIoU (%)"].iloc[2]
    assert text == f"{100 * row['val_miou_mean']:.2f} ± {100 * row['val_miou_std']:.2f} (n = {row['val_miou_n']})"
    assert table.display["best setting"].iloc[0] == "—"  # δ and τ do nothing without OCR
    assert table.display["best setting"].iloc[2].startswith("δ = ")
    diff = next(c for c in table.display.columns if c.startswith("Δ val mIoU (pp"))
    assert table.display[diff].iloc[0] == "baseline" and table.display["p (paired t)"].iloc[0] == ""
    assert re.fullmatch(r"[+−]\d+\.\d\d \[[+−]\d+\.\d\d, [+−]\d+\.\d\d\]( \(n = \d\))?", table.display[diff].iloc[2])
    assert float(table.display["p (paired t)"].iloc[2]) == pytest.approx(row["p_value"], rel=0.05)


def test_a_cell_with_one_seed_shows_no_std_and_says_n_1_once_in_the_header(tmp_path: Path) -> None:
    ds = load_dataset(collect_study(make_study(tmp_path, seeds=(0,), failed=0, asha=False)))
    table = ablation_table(ds)
    assert (table.values["val_miou_n"] == 1).all()
    assert table.values["val_miou_std"].isna().all()
    for text in table.display["val mIoU (%, n = 1)"]:  # the same n in every row: said once, in the header
        assert "±" not in text and "n =" not in text and float(text) > 0
    assert table.display.columns[-1] == "Δ val mIoU (pp, n = 1)"  # no p with n = 1: its empty column dropped
    assert "[" not in table.display.iloc[1, -1] and "n =" not in table.display.iloc[1, -1]
    assert "p (paired t)" not in table.display
    assert not [c for _, c in table.bold if c.startswith("Δ")]  # no interval, so none that excludes 0


@pytest.mark.parametrize("key", ["ocr.delta", "ocr.tau"])
def test_sensitivity_figures_match_pandas(synthetic: Dataset, key: str) -> None:
    table = sensitivity_table(synthetic, key)
    assert table is not None
    done = _completed(synthetic)
    done = done[done["params.ocr.selection"].astype(str) != "none"]
    for _, row in table.values.iterrows():
        value = float(row["bin"])  # few distinct values: one row per value
        part = done[(np.isclose(done[f"params.{key}"].astype(float).round(12), value, rtol=5e-3))
                    & (done["params.ocr.selection"].astype(str) == row["group"])]
        assert row["n"] == len(part)
        assert row["mean"] == pytest.approx(part["final_val_miou"].mean())
    assert table.values["n"].sum() == len(done)
    assert set(table.display.columns[1:]) == {"all: val mIoU (%)", "oc: val mIoU (%)"}
    assert set(table.numeric) == set(table.display.columns)  # the bins and the figures: right-aligned
    for group in ("all", "oc"):  # the bin with the highest mean of each column is the bold one
        mine = table.values[table.values["group"] == group].reset_index(drop=True)
        best = table.display.index[table.display.iloc[:, 0] == str(mine.loc[mine["mean"].idxmax(), "bin"])][0]
        assert [(r, c) for r, c in table.bold if c.startswith(group)] == [(best, f"{group}: val mIoU (%)")]


def test_sensitivity_bins_wide_ranges(tmp_path: Path) -> None:
    ds = load_dataset(collect_study(make_study(tmp_path, settings=12, seeds=(0,), asha=False, failed=0)))
    table = sensitivity_table(ds, "ocr.tau")
    assert table is not None
    assert table.values["bin"].nunique() <= 5 and "–" in str(table.values["bin"].iloc[0])
    assert table.values["n"].sum() == 24  # every OCR trial lands in one bin
    edges = [[float(x) for x in str(b).split("–")] for b in table.values["bin"].cat.categories]
    ratios = [high / low for low, high in edges]
    assert max(ratios) == pytest.approx(min(ratios), rel=0.02)  # τ is log-sampled: equal widths in log space
    delta = sensitivity_table(ds, "ocr.delta")
    assert delta is not None
    widths = [high - low for low, high in ([float(x) for x in str(b).split("–")]
                                           for b in delta.values["bin"].cat.categories)]
    assert max(widths) == pytest.approx(min(widths), rel=0.02)  # δ is uniform: equal widths


def test_outcome_table_counts(synthetic: Dataset) -> None:
    values = outcome_table(synthetic).values.set_index("cell")
    expected = pd.crosstab(synthetic.trials["cell"].astype(str), synthetic.trials["stop_reason"].astype(str))
    for cell, row in expected.iterrows():
        for reason, n in row.items():
            assert values.loc[cell, reason] == n
    assert values["trials"].sum() == len(synthetic.trials)
    assert values["epochs run"].sum() == synthetic.trials["epochs"].sum() == len(synthetic.curves)


def test_budget_by_rung_adds_up(synthetic: Dataset) -> None:
    budget = budget_by_rung(synthetic)
    assert budget["epochs"].tolist() == ["1", "2", "3–4", "5–8"]
    assert budget["trial_epochs"].sum() == synthetic.trials["epochs"].sum()
    epochs = synthetic.trials["epochs"]
    assert budget["trials"].tolist() == [int((epochs > low).sum()) for low in (0, 1, 2, 4)]
    assert budget["trial_epochs"].iloc[3] == int((epochs.clip(upper=8) - 4).clip(lower=0).sum())


def test_one_table_per_grid_axis_with_the_other_axes_at_their_defaults(tmp_path: Path) -> None:
    ds = load_dataset(collect_study(make_study(tmp_path, priors=("cooc_minmax", "uniform", "identity"), asha=False,
                                               failed=0)))
    assert list(ds.info.grid) == ["ocr.selection", "ocr.prior"]
    cells = ablation_table(ds).values["cell"].tolist()
    assert len(cells) == 7 and cells[0] == "ocr.selection=none"  # the no-OCR cell is merged, and first
    tables = {t.name: t for t in axis_tables(ds)}
    assert set(tables) == {"ablation_selection", "ablation_prior"}
    selection = tables["ablation_selection"].values
    assert selection["cell"].tolist() == ["ocr.selection=none", "ocr.selection=all,ocr.prior=cooc_minmax",
                                          "ocr.selection=oc,ocr.prior=cooc_minmax"]
    prior = tables["ablation_prior"].values
    assert prior["cell"].tolist() == [f"ocr.selection=oc,ocr.prior={p}" for p in ("cooc_minmax", "uniform", "identity")]
    whole = ablation_table(ds).values.set_index("cell")
    for _, row in prior.iterrows():  # the same figures as the full table's row for that cell
        assert row["val_miou_mean"] == whole.loc[row["cell"], "val_miou_mean"]
        assert row["diff_mean"] == pytest.approx(whole.loc[row["cell"], "diff_mean"])
    assert list(tables["ablation_prior"].display.columns[:2]) == ["prior", "best setting"]


def test_a_cell_without_a_completed_trial_keeps_its_row_and_says_why(synthetic: Dataset) -> None:
    import dataclasses

    trials = synthetic.trials.copy()
    stopped = trials["cell"].astype(str) == "ocr.selection=all"
    trials["stop_reason"] = trials["stop_reason"].astype(object).where(~stopped, "early_stopped")
    table = ablation_table(dataclasses.replace(synthetic, trials=trials))
    cells = list(table.values["cell"])
    assert cells == ["ocr.selection=none", "ocr.selection=all", "ocr.selection=oc"]
    row = table.display.iloc[cells.index("ocr.selection=all")]
    assert row["best setting"] == f"no completed trial ({int(stopped.sum())} stopped early)"
    assert row["val mIoU (%)"] == "— (n = 0)"  # n differs between rows: each cell says its own
    diff = next(c for c in table.display.columns if c.startswith(DIFF_LABEL[:-1]))
    assert diff.startswith(DIFF_LABEL[:-1]) and row[diff] in ("— (n = 0)", "—")  # "—" when the header says n
    assert all(r != cells.index("ocr.selection=all") for r, _ in table.bold)  # no figure, never the best
    other = table.values.set_index("cell").loc["ocr.selection=oc"]
    assert other["val_miou_n"] > 0 and other["diff_n"] >= 2  # the other cells are untouched


def test_the_oc_rate_is_the_papers_by_default_labelled_by_what_it_measures(synthetic: Dataset) -> None:
    """The paper's OC rate (share of foreground predictions) by default; the share of valid pixels on asking;
    both in the numbers (CSV) either way."""
    import dataclasses

    paper = ablation_table(synthetic)
    assert "OC rate (%)" in paper.display.columns  # short: the notes say what it measures
    assert not any("pixels" in c for c in paper.display.columns)
    assert "foreground class whose class is not among the image's tags (the paper's definition)" in paper.notes
    done = _completed(synthetic)
    oc = _best(done, "ocr.selection=oc")["final_val_oc_rate_fg"]
    row = paper.values.set_index("cell").loc["ocr.selection=oc"]
    assert row["val_oc_rate_fg_mean"] == pytest.approx(oc.mean()) and not pd.isna(row["val_oc_rate_mean"])
    pixels = ablation_table(synthetic, oc="pixels")
    assert "OC rate of pixels (%)" in pixels.display.columns and "of all valid pixels" in pixels.notes
    old = dataclasses.replace(synthetic, trials=synthetic.trials.drop(columns=["final_val_oc_rate_fg"]))
    assert "OC rate of pixels (%)" in ablation_table(old).display.columns  # an old study: what it logged
    with pytest.raises(ValueError, match="use one of fg, pixels"):
        ablation_table(synthetic, oc="all")


def test_post_processed_figures_stand_beside_the_raw_ones_with_the_protocol_in_the_notes(synthetic: Dataset) -> None:
    raw = ablation_table(synthetic)
    assert not any("final protocol" in str(c) or "CRF" in str(c) for c in raw.display.columns)
    assert "every report: scales 1, no flip." in raw.notes
    trials = synthetic.trials.copy()
    trials["final_val_final_miou"] = trials["final_val_miou"] + 0.05
    trials["params.eval.final_scales"] = "0.5,1,1.5"
    trials["params.eval.final_flip"] = "True"
    table = ablation_table(dataclasses.replace(synthetic, trials=trials))
    columns = [str(c) for c in table.display.columns]
    raw_at = next(i for i, c in enumerate(columns) if c.startswith("val mIoU ("))
    final_at = next(i for i, c in enumerate(columns) if c.startswith("val mIoU, final protocol"))
    assert raw_at < final_at
    assert "final protocol (the last report only): scales 0.5/1/1.5, flip, probabilities averaged" in table.notes
    values = table.values.set_index("cell")
    assert values["val_final_miou_mean"].to_numpy() == pytest.approx(values["val_miou_mean"].to_numpy() + 0.05)


def test_the_report_summary_names_the_training_recipe(synthetic: Dataset) -> None:
    from results._report import _summary

    assert "training recipe" not in _summary(synthetic)
    trials = synthetic.trials.copy()
    trials["params.preset"] = "ocr-authors-voc-aug"
    text = _summary(dataclasses.replace(synthetic, trials=trials))
    assert "; training recipe ocr-authors-voc-aug (pipelines/presets);" in text


def test_a_budget_in_iterations_plans_its_reports_not_seg_epochs() -> None:
    """Without ASHA, a trial of ``seg.iterations`` 300 reporting every 150 plans 2 reports (not the unused
    ``seg.epochs``): after 2 it is completed, after 1 stopped."""
    from results._study_info import StudyInfo
    from results._summary import build_trials

    info = StudyInfo(name="s", scheduler="none", max_epochs=2)
    config = {"seg.epochs": 10, "seg.iterations": 300, "seg.report_every": 150, "seed": 0}
    base = pd.DataFrame({"trial_id": ["a", "b"], "config": [config, config], "status": ["TERMINATED"] * 2,
                         "error": [None] * 2, "node_id": [None] * 2, "hostname": [None] * 2,
                         "git_commit": [None] * 2, "artifacts": [None] * 2, "wall_s": [1.0, 1.0]})
    curves = pd.DataFrame({"trial_id": ["a", "a", "b"], "epoch": [1, 2, 1], "val_miou": [0.1, 0.2, 0.1]})
    trials = build_trials(base, curves, info).set_index("trial_id")
    assert trials.loc["a", "epochs_planned"] == 2 and trials.loc["a", "stop_reason"] == "completed"
    assert trials.loc["b", "stop_reason"] == "stopped"
