"""The sequential confirm phase's searcher: rounds of seeds for the settings still open, the baseline on every
seed any setting runs, a finish when nothing is open, and a state that survives a driver's restart."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from record import META, Decision, Phase, SeedRule, StopReason, TrialDoc, append_epoch, trial_folder, write_trial
from study.searcher import SequentialSearcher
from study.sequential import arm, record_values, reference_arm

RULE = SeedRule(min=3, max=6, step=1)
FINISHED = "FINISHED"


def _configs(rule: SeedRule = RULE) -> list[dict[str, Any]]:
    return [{"ocr.selection": cell.split("=")[1], "seed": seed, f"{META}cell": cell, f"{META}rank": 0,
             f"{META}phase": Phase.CONFIRM, f"{META}round": rule.round_of(seed)}
            for cell in ("ocr.selection=none", "ocr.selection=oc", "ocr.selection=all") for seed in rule.seeds]


def _drain(searcher: SequentialSearcher, prefix: str) -> list[tuple[str, dict[str, Any]]]:
    """Every config the searcher suggests before it waits or finishes."""
    out = []
    while True:
        trial_id = f"{prefix}{len(out)}"
        config = searcher.suggest(trial_id)
        if config is None or config == FINISHED:
            return out
        out.append((trial_id, config))


def _value(config: dict[str, Any], effects: dict[str, float], noise: dict[str, float]) -> float:
    """A measured mIoU: 0.5 for the baseline, plus the cell's effect (in pp) and a seed-dependent wobble."""
    cell = config[f"{META}cell"]
    wobble = ((config["seed"] * 7919) % 13 - 6) / 6 * noise.get(cell, 0.0)
    return 0.5 + (effects.get(cell, 0.0) + wobble) / 100


def _run(searcher: SequentialSearcher, effects: dict[str, float], noise: dict[str, float]) -> list[list[str]]:
    """Run rounds to the end; returns the cells of each round's trials."""
    rounds = []
    for r in range(10):
        batch = _drain(searcher, f"r{r}-")
        if not batch:
            break
        rounds.append(sorted(c[f"{META}cell"] for _, c in batch))
        for trial_id, config in batch:
            searcher.on_trial_complete(trial_id, {"val_miou": 0.0, "test_miou": _value(config, effects, noise)})
    assert searcher.suggest("after") == FINISHED
    return rounds


def test_the_first_round_runs_min_seeds_of_every_setting_and_waits_for_them() -> None:
    searcher = SequentialSearcher(_configs(), RULE, "val_miou", "max")
    batch = _drain(searcher, "t")
    assert len(batch) == 3 * RULE.min
    assert {c["seed"] for _, c in batch} == {0, 1, 2}
    assert all(c[f"{META}round"] == 1 for _, c in batch)
    assert searcher.suggest("more") is None  # the round's trials are still running
    for trial_id, _ in batch[:-1]:
        searcher.on_trial_complete(trial_id, {"test_miou": 0.5})
    assert searcher.suggest("more") is None


def test_clear_answers_stop_after_the_first_round() -> None:
    searcher = SequentialSearcher(_configs(), RULE, "val_miou", "max")
    rounds = _run(searcher, effects={"ocr.selection=oc": 5.0, "ocr.selection=all": -40.0},
                  noise={"ocr.selection=oc": 0.01, "ocr.selection=all": 0.01})
    assert len(rounds) == 1
    assert searcher.decided == {"ocr.selection=oc#0": Decision.BETTER, "ocr.selection=all#0": Decision.WORSE}
    assert searcher.measure == "test_miou"  # measured on the held-out split the trials scored


def test_an_open_setting_gets_more_seeds_and_the_baseline_runs_them_too() -> None:
    searcher = SequentialSearcher(_configs(), RULE, "val_miou", "max")
    rounds = _run(searcher, effects={"ocr.selection=oc": 0.3, "ocr.selection=all": -40.0},
                  noise={"ocr.selection=oc": 3.0, "ocr.selection=all": 0.01})
    assert len(rounds) == 1 + (RULE.max - RULE.min)  # oc stays open to the maximum
    for later in rounds[1:]:
        assert later == ["ocr.selection=none", "ocr.selection=oc"]  # all is decided; the baseline pairs with oc
    assert searcher.decided["ocr.selection=oc#0"] == Decision.UNDECIDED
    assert searcher.decided["ocr.selection=all#0"] == Decision.WORSE


def test_a_failed_trial_is_a_missing_pair_not_a_wait() -> None:
    searcher = SequentialSearcher(_configs(), RULE, "val_miou", "max")
    batch = _drain(searcher, "t")
    for trial_id, config in batch:
        failed = config[f"{META}cell"] == "ocr.selection=oc" and config["seed"] == 0
        searcher.on_trial_complete(trial_id, None if failed else {"test_miou": 0.5}, error=failed)
    assert _drain(searcher, "u")  # the next round starts


def test_the_state_survives_a_restart_mid_round(tmp_path: Path) -> None:
    searcher = SequentialSearcher(_configs(), RULE, "val_miou", "max")
    batch = _drain(searcher, "t")
    for trial_id, _ in batch[:4]:
        searcher.on_trial_complete(trial_id, {"test_miou": 0.5})
    searcher.save(str(tmp_path / "state.json"))
    again = SequentialSearcher(_configs(), RULE, "val_miou", "max")
    again.restore(str(tmp_path / "state.json"))
    assert again.get_state() == searcher.get_state()
    assert again.suggest("x") is None  # still waiting for the round's other trials, none suggested twice


def _record(folder: Path, trial_id: str, config: dict[str, Any], value: float | None) -> None:
    path = trial_folder(folder, trial_id)
    reason = StopReason.COMPLETED if value is not None else StopReason.FAILED
    write_trial(path, TrialDoc(trial_id, phase=Phase.CONFIRM, cell=config[f"{META}cell"], seed=config["seed"],
                               config=config, stop_reason=reason))
    if value is not None:
        append_epoch(path, {"epoch": 3, "val_miou": 0.4, "test_miou": value})


def test_a_resumed_searcher_reads_the_values_it_missed_from_the_record(tmp_path: Path) -> None:
    configs = _configs()
    searcher = SequentialSearcher(configs, RULE, "val_miou", "max",
                                  record=lambda: record_values(tmp_path, configs, "val_miou"), refresh_s=0.0)
    batch = _drain(searcher, "t")
    for trial_id, config in batch:  # the trials ended and were recorded, but the searcher was never told
        _record(tmp_path, trial_id, config, None if config["seed"] == 1 else 0.5)
    assert searcher.suggest("next") is not None  # it read the record and went on to round 2
    values = record_values(tmp_path, configs, "val_miou")
    assert sum(v is None for v in values.values()) == 3 and len(values) == 9


def test_the_baseline_is_the_cell_without_ocr() -> None:
    configs = _configs()
    assert reference_arm(configs) == "ocr.selection=none#0"
    assert arm(configs[-1]) == "ocr.selection=all#0"


def test_the_last_round_is_looked_at_when_its_last_trial_ends() -> None:
    """Tune asks for no trial once it has suggested them all, so the look cannot wait for ``suggest``."""
    looked: list[int] = []
    searcher = SequentialSearcher(_configs(), RULE, "val_miou", "max", on_round=lambda r, _: looked.append(r))
    suggested = 0
    for r in range(10):
        if suggested == searcher.total:  # as Tune does at num_samples
            break
        batch = _drain(searcher, f"r{r}-")
        suggested += len(batch)
        for trial_id, config in batch:
            searcher.on_trial_complete(trial_id, {"test_miou": _value(config, {"ocr.selection=oc": 0.3},
                                                                          {"ocr.selection=oc": 3.0})})
    assert looked == list(range(1, len(RULE.looks) + 1))  # every round, the last one included
    assert searcher.decided["ocr.selection=oc#0"] == Decision.UNDECIDED


def test_a_round_prints_new_looks_and_names_the_round_of_earlier_decisions() -> None:
    from results._sequential import looks
    from study.sequential import round_entry

    rule = SeedRule(min=3, max=5)
    decided = looks([[-40.0, -41.0, -39.5]], rule, "max")  # worse at once
    still = looks([[1.0, -1.0, 0.5], [1.0, -1.0, 0.5, 0.2]], rule, "max")
    entry = round_entry(2, {"all#0": decided, "oc#0": still})
    assert entry["settings"]["all#0"]["decision"] == "worse" and entry["settings"]["oc#0"]["n"] == 4
    assert entry["lines"][0] == "all#0: worse (decided in round 1)"
    assert entry["lines"][1].startswith("oc#0: n = 4, Δ +0.17")
