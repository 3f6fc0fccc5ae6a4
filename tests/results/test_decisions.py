"""The sequential confirm phase's decisions table and plot, recomputed from the trials: the same decisions as
the searcher that ran the phase made on the same values."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

from record import META, Decision, Phase, SeedRule
from results import Dataset, StudyInfo
from results._decisions import decision_table, rounds_plot, setting_looks
from study.searcher import SequentialSearcher

RULE = SeedRule(min=3, max=7, step=2, margin=1.0)
CELLS = ("ocr.selection=none", "ocr.selection=oc", "ocr.selection=all")
# test mIoU per cell and seed: oc a little better but noisy, all far worse; seeds beyond what ran are unused
VALUES = {"ocr.selection=none": [0.50, 0.52, 0.51, 0.49, 0.50, 0.53, 0.48],
          "ocr.selection=oc": [0.52, 0.51, 0.55, 0.50, 0.53, 0.52, 0.51],
          "ocr.selection=all": [0.10, 0.12, 0.11, 0.10, 0.12, 0.10, 0.11]}


def _configs() -> list[dict[str, Any]]:
    return [{"seed": seed, f"{META}cell": cell, f"{META}rank": 0, f"{META}phase": Phase.CONFIRM,
             f"{META}round": RULE.round_of(seed)} for cell in CELLS for seed in RULE.seeds]


def _searched() -> tuple[SequentialSearcher, list[dict[str, Any]]]:
    """Run the searcher over VALUES; returns it and the configs it ran."""
    searcher = SequentialSearcher(_configs(), RULE, "val_miou", "max")
    ran = []
    for step in range(10):
        batch = []
        while (config := searcher.suggest(f"{step}-{len(batch)}")) not in (None, "FINISHED"):
            batch.append((f"{step}-{len(batch)}", config))
        if not batch:
            break
        for trial_id, config in batch:
            value = VALUES[config[f"{META}cell"]][config["seed"]]
            searcher.on_trial_complete(trial_id, {"test_miou": value})
            ran.append(config)
    return searcher, ran


def _dataset(ran: list[dict[str, Any]]) -> Dataset:
    rows = [{"trial_id": f"c{i}", "phase": "confirm", "cell": c[f"{META}cell"], "setting": 0, "seed": c["seed"],
             "stop_reason": "completed", "status": "TERMINATED", "error": "", "epochs": 3,
             "final_val_miou": 0.4, "final_test_miou": VALUES[c[f"{META}cell"]][c["seed"]], "artifacts": None}
            for i, c in enumerate(ran)]
    info = StudyInfo(name="t", grid={"ocr.selection": ["none", "oc", "all"]},
                     confirm={"seeds": list(RULE.seeds), "epochs": 3, "metric": "val_miou", "mode": "max",
                              "seed_rule": RULE.to_json(),
                              "cells": [{"id": c, "settings": [0], "rule": "completed"} for c in CELLS]})
    return Dataset(pd.DataFrame(rows), pd.DataFrame(), info, "test")


def test_the_table_says_what_the_searcher_decided() -> None:
    searcher, ran = _searched()
    assert searcher.decided == {"ocr.selection=all#0": Decision.WORSE, "ocr.selection=oc#0": Decision.UNDECIDED}
    table = decision_table(_dataset(ran))
    assert table is not None
    values = table.values.set_index("cell")
    assert values.loc["ocr.selection=all", "decision"] == Decision.WORSE
    assert values.loc["ocr.selection=all", "n"] == RULE.min  # decided in the first round: no more seeds spent
    assert values.loc["ocr.selection=oc", "decision"] == Decision.UNDECIDED
    assert values.loc["ocr.selection=oc", "n"] == RULE.max and values.loc["ocr.selection=oc", "rounds"] == 3
    oc = values.loc["ocr.selection=oc"]
    assert oc["ci_low"] < 0 < oc["ci_high"] and oc["p_adjusted"] >= oc["p"]
    assert "undecided at the maximum" in table.display["decision"].tolist()
    assert "Pocock-type" in table.notes and "test" in table.notes


def test_the_baseline_ran_every_seed_any_setting_ran() -> None:
    _, ran = _searched()
    seeds = {cell: {c["seed"] for c in ran if c[f"{META}cell"] == cell} for cell in CELLS}
    assert seeds["ocr.selection=none"] == seeds["ocr.selection=oc"] == set(RULE.seeds)
    assert seeds["ocr.selection=all"] == {0, 1, 2}


def test_the_plot_draws_one_interval_per_round(tmp_path: Path) -> None:
    _, ran = _searched()
    ds = _dataset(ran)
    assert [look.n for look in setting_looks(ds)["ocr.selection=oc"]] == [3, 5, 7]
    path = rounds_plot(ds, tmp_path / "rounds.png")
    assert path is not None and path.stat().st_size > 1000


def test_a_fixed_confirm_phase_has_no_decisions_table() -> None:
    _, ran = _searched()
    ds = _dataset(ran)
    fixed = Dataset(ds.trials, ds.curves, StudyInfo(name="t", confirm={k: v for k, v in ds.info.confirm.items()
                                                                     if k != "seed_rule"}), "test")
    assert decision_table(fixed) is None and rounds_plot(fixed, Path("unused.png")) is None


def test_a_failed_baseline_seed_is_a_missing_pair() -> None:
    _, ran = _searched()
    ds = _dataset(ran)
    trials = ds.trials.copy()
    lost = (trials["cell"] == "ocr.selection=none") & (trials["seed"] == 1)
    trials.loc[lost, "stop_reason"] = "failed"
    table = decision_table(Dataset(trials, ds.curves, ds.info, ds.source))
    assert table is not None
    assert table.values.set_index("cell").loc["ocr.selection=oc", "n"] == RULE.max - 1


def test_the_report_has_the_decisions_after_the_ablation_and_the_rounds_figure(tmp_path: Path) -> None:
    from results._report import write_report
    from results._tables import report_tables

    _, ran = _searched()
    ds = _dataset(ran)
    ablation = report_tables(ds)[0]
    assert "sequential confirm phase" in ablation.notes and "ignore the repeated looks" in ablation.notes
    files = write_report(ds, tmp_path / "report", formats=("md", "csv", "html"))
    markdown = files["md"].read_text(encoding="utf-8")
    assert markdown.index("what the seeds decided") > markdown.index("Ablation")
    assert (files["csv"] / "decisions.csv").exists()
    assert (tmp_path / "report" / "plots" / "sequential_rounds.png").exists()
    assert (tmp_path / "report" / "plots" / "sequential_rounds.pdf").exists()
    html = files["html"].read_text(encoding="utf-8")
    assert "with its repeated confidence interval at every round" in html  # the figure's caption
