"""Choosing each cell's settings for the confirm phase, fairly under early stopping, and planning its trials."""

from __future__ import annotations

from pathlib import Path

import pytest

from record import Phase, StopReason, TrialDoc, append_epoch, trial_folder, write_trial
from study.confirm import SeedRun, choose, continuable, rank_settings, run_order
from study.handle import Study
from study.plan import plan
from study.searcher import PlannedSearcher
from study.spec import load_spec


def _run(values: list[float], completed: bool) -> SeedRun:
    return SeedRun({i + 1: v for i, v in enumerate(values)}, completed, {})


def test_completed_settings_are_ranked_by_their_final_mean() -> None:
    runs = {0: [_run([0.1, 0.2, 0.3], True), _run([0.1, 0.2, 0.5], True)],  # mean 0.4
            1: [_run([0.6], False), _run([0.6], False)],  # stopped early: ahead at epoch 1, not ranked
            2: [_run([0.1, 0.1, 0.35], True), _run([0.1, 0.1, 0.35], True)]}  # mean 0.35
    ranking = rank_settings(runs, "max", 2)
    assert ranking.settings == (0, 2) and ranking.rule == "completed"
    assert rank_settings(runs, "min", 1).settings == (2,)


def test_too_few_completed_ranks_at_the_highest_epoch_every_setting_reached() -> None:
    runs = {0: [_run([0.1, 0.2, 0.9, 0.9], True)],
            1: [_run([0.3, 0.4], False)],
            2: [_run([0.2, 0.5], False)]}
    ranking = rank_settings(runs, "max", 2)
    assert ranking.rule == "epoch" and ranking.epoch == 2
    assert ranking.settings == (2, 1)  # at epoch 2: 0.5, 0.4, 0.2 (not setting 0's final 0.9)


def test_failed_trials_are_left_out_and_a_cell_without_values_chooses_nothing() -> None:
    runs = {0: [_run([], False)], 1: [_run([0.2, 0.3], True)]}
    assert rank_settings(runs, "max", 1).settings == (1,)
    nothing = rank_settings({0: [_run([], False)]}, "max", 1)
    assert nothing.settings == () and nothing.rule == "none"


def _record(folder: Path, trial_id: str, cell: str, setting: int, delta: float, values: list[float],
            checkpoint: Path | None = None) -> None:
    config = {"seed": 0, "seg.epochs": 3, "ocr.selection": cell.split("=")[1], "ocr.delta": delta,
              "meta.cell": cell, "meta.setting": setting, "meta.phase": "search"}
    path = trial_folder(folder, trial_id)
    write_trial(path, TrialDoc(trial_id, phase=Phase.SEARCH, cell=cell, setting=setting, seed=0, config=config,
                               stop_reason=StopReason.COMPLETED if len(values) == 3 else StopReason.EARLY_STOPPED,
                               artifacts=str(checkpoint / "artifacts") if checkpoint else None))
    for epoch, value in enumerate(values, 1):
        append_epoch(path, {"epoch": epoch, "val_miou": value})


def test_choose_plans_the_best_settings_on_every_confirm_seed(tmp_path: Path) -> None:
    spec = load_spec("quick", ["grid.ocr.selection=[none,oc]", "confirm.seeds=[5,6,7]", "confirm.epochs=9"])
    _record(tmp_path, "t0", "ocr.selection=none", 0, 0.0, [0.1, 0.2, 0.3])
    _record(tmp_path, "t1", "ocr.selection=oc", 0, 1.0, [0.1, 0.2, 0.3])
    _record(tmp_path, "t2", "ocr.selection=oc", 1, 2.0, [0.1, 0.2, 0.4])
    _record(tmp_path, "t3", "ocr.selection=oc", 2, 3.0, [0.5])
    phase = choose(Study(spec, plan(spec), str(tmp_path), tmp_path))
    assert [(c["id"], c["settings"], c["rule"]) for c in phase.cells] == [
        ("ocr.selection=none", [0], "completed"), ("ocr.selection=oc", [1], "completed")]
    configs = phase.configs
    assert phase.trials == len(configs) == 6
    assert [(c["meta.cell"], c["ocr.delta"], c["seed"]) for c in configs] == [
        ("ocr.selection=none", 0.0, 5), ("ocr.selection=none", 0.0, 6), ("ocr.selection=none", 0.0, 7),
        ("ocr.selection=oc", 2.0, 5), ("ocr.selection=oc", 2.0, 6), ("ocr.selection=oc", 2.0, 7)]
    assert {c["seg.epochs"] for c in configs} == {9} and {c["meta.phase"] for c in configs} == {"confirm"}


def test_trials_that_train_start_before_those_that_continue_a_search_trial() -> None:
    """Longest first: a continuation (an evaluation of a finished checkpoint) fills a core at the end instead of a
    training running alone there; within each group the plan's order stays."""
    cont = "meta.continues_from"
    plan = [{"seed": 0, cont: "/ckpt/a"}, {"seed": 1}, {"seed": 2}, {"seed": 0, cont: "/ckpt/b"}, {"seed": 1, "x": 1},
            {"seed": 0, cont: ""}]
    order = run_order(plan)
    assert order == [{"seed": 1}, {"seed": 2}, {"seed": 1, "x": 1}, {"seed": 0, cont: ""},
                     {"seed": 0, cont: "/ckpt/a"}, {"seed": 0, cont: "/ckpt/b"}]
    assert sorted(map(str, order)) == sorted(map(str, plan))  # the same trials, none lost or repeated


def test_planned_searcher_resumes_where_it_stopped(tmp_path: Path) -> None:
    configs = [{"seed": s} for s in range(3)]
    first = PlannedSearcher(configs)
    assert first.suggest("a") == {"seed": 0} and first.suggest("b") == {"seed": 1}
    first.save(str(tmp_path / "state.json"))
    again = PlannedSearcher([])
    again.restore(str(tmp_path / "state.json"))
    assert again.suggest("c") == {"seed": 2} and again.suggest("d") == PlannedSearcher.FINISHED


def test_confirm_section_is_checked() -> None:
    from study.spec import SpecError

    with pytest.raises(SpecError, match=r"confirm\.seeds\[1\]: seed 0 is given twice"):
        load_spec("quick", ["confirm.seeds=[0,0]"])
    spec = load_spec("quick", ["confirm.seeds=[1]"])
    assert spec.confirm is not None and spec.confirm.epochs == spec.trial.seg.epochs
    assert spec.confirm.metric == spec.scheduler.metric and spec.confirm.top_k == 1


def test_a_seed_rule_plans_every_seed_it_may_run_with_its_round(tmp_path: Path) -> None:
    spec = load_spec("quick", ["grid.ocr.selection=[none,oc]", "confirm.seeds={min: 2, max: 5, step: 2}"])
    assert spec.confirm is not None and spec.confirm.rule is not None and spec.confirm.sequential
    assert spec.confirm.seeds == (0, 1, 2, 3, 4)
    assert load_spec(spec.to_dict()).confirm == spec.confirm  # the rule survives the saved spec.yaml
    _record(tmp_path, "t0", "ocr.selection=none", 0, 0.0, [0.3, 0.4, 0.5])
    _record(tmp_path, "t1", "ocr.selection=oc", 1, 2.0, [0.1, 0.2, 0.6])
    phase = choose(Study(spec, plan(spec), str(tmp_path), tmp_path))
    assert phase.seed_rule == spec.confirm.rule
    assert [(c["meta.cell"], c["seed"], c["meta.round"]) for c in phase.configs][:5] == [
        ("ocr.selection=none", 0, 1), ("ocr.selection=none", 1, 1), ("ocr.selection=none", 2, 2),
        ("ocr.selection=none", 3, 2), ("ocr.selection=none", 4, 3)]


@pytest.mark.parametrize(("override", "message"), [
    ("confirm.seeds={min: 3, maxx: 9}", r"confirm\.seeds\.maxx: is not a key of a seed rule"),
    ("confirm.seeds={min: 1}", r"confirm\.seeds\.min: must be at least 2"),
    ("confirm.seeds={min: 3, max: 9, spending: haybittle}", r"confirm\.seeds\.spending: 'haybittle' is none of"),
    ("confirm.seeds={min: 3, margin: 0}", r"confirm\.seeds\.margin: must be a positive number"),
    ("confirm.seeds.max=9", r"confirm\.seeds is a list here, not a seed rule"),
])
def test_a_bad_seed_rule_names_the_key(override: str, message: str) -> None:
    from study.spec import SpecError

    with pytest.raises(SpecError, match=message):
        load_spec("quick", [override])


def test_one_key_of_a_seed_rule_can_be_overridden() -> None:
    spec = load_spec("quick", ["confirm.seeds={min: 3, max: 6}", "confirm.seeds.max=8"])
    assert spec.confirm is not None and spec.confirm.rule is not None and spec.confirm.rule.max == 8


def test_the_dry_run_prints_the_rule_the_trial_range_and_the_seed_plan() -> None:
    from study.plan import format_plan

    spec = load_spec("quick", ["confirm.seeds={min: 3, max: 9, step: 2, margin: 1.0, detect: 2.0}"])
    text = format_plan(plan(spec))
    assert "seeds added until the answer is clear" in text
    assert "trials: 9 to 27" in text  # three cells' best settings × 3 seeds, up to × 9
    assert "seeds to detect Δ = 2 with power 0.8" in text and "(if σ = 4)" in text


def _checkpoint(folder: Path, name: str) -> Path:
    (folder / name / "artifacts").mkdir(parents=True)
    return folder / name


def test_a_confirm_seed_the_search_completed_continues_that_trial(tmp_path: Path) -> None:
    spec = load_spec("quick", ["grid.ocr.selection=[none,oc]", "confirm.seeds=[0,1]"])
    _record(tmp_path, "t0", "ocr.selection=none", 0, 0.0, [0.1, 0.2, 0.3], _checkpoint(tmp_path, "c0"))
    _record(tmp_path, "t1", "ocr.selection=oc", 0, 1.0, [0.1, 0.2, 0.4], _checkpoint(tmp_path, "c1"))
    _record(tmp_path, "t2", "ocr.selection=oc", 1, 2.0, [0.5])  # stopped early: not chosen, not continuable
    phase = choose(Study(spec, plan(spec), str(tmp_path), tmp_path))
    planned = [(c["meta.cell"], c["seed"], c.get("meta.continues"), c.get("meta.continues_from"))
               for c in phase.configs]
    assert planned == [("ocr.selection=none", 0, "t0", str(tmp_path / "c0")), ("ocr.selection=none", 1, None, None),
                       ("ocr.selection=oc", 0, "t1", str(tmp_path / "c1")), ("ocr.selection=oc", 1, None, None)]
    assert all(c["eval.test"] is True for c in phase.configs)  # continued or not, it is scored on test


@pytest.mark.parametrize("change", ["budget", "gone", "stopped"])
def test_a_search_trial_is_continued_only_when_it_is_the_same_finished_run_and_here(tmp_path: Path,
                                                                                   change: str) -> None:
    spec = load_spec("quick", ["grid.ocr.selection=[none,oc]", "confirm.seeds=[0]",
                               *(["confirm.epochs=4"] if change == "budget" else [])])
    checkpoint = tmp_path / "c0" if change == "gone" else _checkpoint(tmp_path, "c0")
    _record(tmp_path, "t0", "ocr.selection=none", 0, 0.0, [0.1, 0.2, 0.3][: 2 if change == "stopped" else 3],
            checkpoint)
    (config,) = choose(Study(spec, plan(spec), str(tmp_path), tmp_path)).configs
    assert "meta.continues" not in config and "meta.continues_from" not in config


def test_continuable_compares_every_key_but_the_test_split_and_meta() -> None:
    run = SeedRun({3: 0.5}, True, {"seed": 0, "seg.epochs": 3, "ocr.delta": 2.0, "meta.phase": "search"}, 0, "t0",
                  "/")
    same = {"seed": 0, "seg.epochs": 3, "ocr.delta": 2.0, "eval.test": True, "meta.phase": "confirm"}
    assert continuable(run, same)
    assert not continuable(run, {**same, "ocr.delta": 2.5}) and not continuable(run, {**same, "seed": 1})
    assert not continuable(SeedRun(run.values, False, run.config, 0, "t0", "/"), same)
