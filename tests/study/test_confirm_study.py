"""The search → confirm phases end to end on a tiny study (local Ray, 2 CPUs), and a driver killed with
SIGKILL during the confirm phase, then resumed."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from record import Phase, read_epochs, read_study, study_trials
from study.handle import open_study
from study.runner import run_study, trial_table
from study.spec import StudySpec, load_spec
from tests.study.cli_procs import Processes, finish, killed_by_failpoint, mlflow_trial_runs, procs  # noqa: F401
from tests.study.test_tune_study import tiny_doc

pytestmark = pytest.mark.slow
CONFIRM_SEEDS = [3, 4, 5]


def _doc(tmp_path: Path, cache: Path, epochs: int = 4, **extra: Any) -> dict[str, Any]:
    doc = tiny_doc(tmp_path, cache, seeds=[0],
                   scheduler={"type": "asha", "grace_period": 1, "reduction_factor": 2, "max_epochs": epochs},
                   confirm={"seeds": CONFIRM_SEEDS}, **extra)
    doc["trial"]["seg.epochs"] = epochs
    return doc


def _confirm_rows(spec: StudySpec) -> list[dict[str, Any]]:
    return [r for r in trial_table(open_study(spec)) if r["phase"] == "confirm"]


def _chosen(spec: StudySpec) -> dict[str, list[int]]:
    doc = read_study(Path(spec.study_dir))
    phase = doc.phase(Phase.CONFIRM) if doc is not None else None
    assert phase is not None and phase.chosen
    return {c["id"]: c["settings"] for c in phase.cells}


def test_confirm_runs_the_chosen_settings_on_every_confirm_seed_to_the_full_budget(
        local_ray: None, tmp_path: Path, shared_cache: Path) -> None:
    from results import ablation_table, collect_study, load_dataset

    spec = load_spec(_doc(tmp_path, shared_cache, search={
        "samples": 3, "seed": 0, "params": {"ocr.delta": {"type": "uniform", "low": 0.0, "high": 4.0}}}))
    run_study(open_study(spec))
    search = [r for r in trial_table(open_study(spec)) if r["phase"] == "search"]
    assert len(search) == 4  # none × 1 + oc × 3 settings, one seed
    chosen = _chosen(spec)
    assert {cell: len(s) for cell, s in chosen.items()} == {"ocr.selection=none": 1, "ocr.selection=oc": 1}
    rows = _confirm_rows(spec)
    assert Counter((r["cell"], r["setting"]) for r in rows) == {
        (cell, settings[0]): len(CONFIRM_SEEDS) for cell, settings in chosen.items()}
    assert sorted(r["seed"] for r in rows) == sorted(CONFIRM_SEEDS * 2)
    assert {r["epochs"] for r in rows} == {4}  # no early stopping in the confirm phase
    picked = {r["config"]["ocr.delta"] for r in rows if r["cell"] == "ocr.selection=oc"}
    searched = {r["setting"]: r["config"]["ocr.delta"] for r in search if r["cell"] == "ocr.selection=oc"}
    assert picked == {searched[chosen["ocr.selection=oc"][0]]}

    folder = Path(spec.study_dir)
    last = {doc.trial_id: read_epochs(path)[-1] for path, doc in study_trials(folder)}
    assert all("test_miou" in last[r["trial_id"]] for r in rows)  # chosen on val, measured on test
    assert not any("test_miou" in last[r["trial_id"]] for r in search)
    table = ablation_table(load_dataset(collect_study(folder)))
    assert list(table.values["test_miou_n"]) == [len(CONFIRM_SEEDS)] * 2
    assert "confirm" in table.notes and "measured on test" in table.title


def test_a_confirm_seed_the_search_completed_continues_that_trial_with_the_same_figures(
        local_ray: None, tmp_path: Path, shared_cache: Path) -> None:
    """Confirm seed 0 repeats a search trial that ran its whole budget on seed 0: the confirm trial starts from
    that trial's last checkpoint, trains nothing, and adds the test split; seed 1 is trained."""
    spec = load_spec(tiny_doc(tmp_path, shared_cache, seeds=[0], search={"samples": 1, "seed": 0, "params": {
        "ocr.delta": {"type": "uniform", "low": 0.0, "high": 4.0}}}, confirm={"seeds": [0, 1]}))
    run_study(open_study(spec))
    rows = trial_table(open_study(spec))
    search = {r["cell"]: r for r in rows if r["phase"] == "search"}
    assert {r["stop_reason"] for r in search.values()} == {"completed"}
    folder = Path(spec.study_dir)
    epochs = {doc.trial_id: read_epochs(path) for path, doc in study_trials(folder)}
    confirm = [r for r in rows if r["phase"] == "confirm"]
    assert sorted((r["cell"], r["seed"]) for r in confirm) == sorted((c, s) for c in search for s in (0, 1))
    runs = mlflow_trial_runs(spec).set_index("tags.ocr_study.trial_id")
    for row in confirm:
        lines, continues = epochs[row["trial_id"]], runs.loc[row["trial_id"]].get("tags.ocr_study.continues")
        assert row["stop_reason"] == "completed" and "test_miou" in lines[-1]
        if row["seed"] == 1:
            assert [e["epoch"] for e in lines] == [1, 2] and not isinstance(continues, str)
            continue
        original = search[row["cell"]]["trial_id"]
        assert continues == original and [e["epoch"] for e in lines] == [2]  # nothing trained again
        for key in ("val_miou", "val_oc_rate_fg", "train_loss", "best_val_miou"):
            assert lines[-1][key] == pytest.approx(epochs[original][-1][key], rel=1e-6), key
    from results import ablation_table, collect_study, load_dataset

    table = ablation_table(load_dataset(collect_study(folder)))
    assert list(table.values["test_miou_n"]) == [2, 2]  # every row n = 2 on the held-out split


def test_stage1_is_built_ahead_once_per_missing_entry(local_ray: None, tmp_path: Path,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    """Issue 10: the distinct stage-1 entries a phase needs are built at once, as Ray tasks, before trials."""
    from pipelines.config import from_flat
    from pipelines.stage1_key import stage1_ready
    from study.stage1_prep import missing_stage1, prebuild_stage1
    from tests.conftest import TINY

    configs = [{**TINY, "cache_dir": str(tmp_path), "seed": seed, "ocr.delta": delta, "meta.cell": "x"}
               for seed in (0, 1) for delta in (1.0, 2.0)]  # OCR values on seg only: one entry per seed
    assert [cfg.seed for cfg in missing_stage1(configs)] == [0, 1]
    import ray

    threads = max(1, int(ray.cluster_resources()["CPU"] // 2))  # the CPUs shared by the two entries
    assert prebuild_stage1(configs) == 2
    assert f"building 2 cache entries (seeds [0, 1]), {threads} thread" in capsys.readouterr().out
    assert all(stage1_ready(from_flat({k: v for k, v in c.items() if k != "meta.cell"})) for c in configs)
    assert missing_stage1(configs) == [] and prebuild_stage1(configs) == 0


def test_driver_killed_during_confirm_then_resume_runs_exactly_the_planned_trials(
        procs: Callable[..., Processes], tmp_path: Path, shared_cache: Path) -> None:  # noqa: F811
    """The driver dies (SIGKILL) at the first confirm trial's second result (failpoint
    ``driver.trial-result``): resume keeps the search, continues the confirm phase to its planned trials."""
    doc = _doc(tmp_path, shared_cache, epochs=4)
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(doc))
    spec = load_spec(doc)
    p = procs("driver.trial-result[phase=confirm,epoch=2]=kill")
    killed_by_failpoint(p.start("run", str(path)), p, "driver.trial-result")
    assert _confirm_rows(spec), "the driver was killed before any confirm trial was recorded"
    search_before = sorted(r["trial_id"] for r in trial_table(open_study(spec)) if r["phase"] == "search")

    out = finish(p.start("resume", spec.name, "--storage", spec.storage, armed=False))
    rows = trial_table(open_study(spec))
    assert sorted(r["trial_id"] for r in rows if r["phase"] == "search") == search_before  # not rerun
    confirm = _confirm_rows(spec)
    chosen = _chosen(spec)
    assert Counter((r["cell"], r["setting"], r["seed"]) for r in confirm) == Counter(
        (cell, s[0], seed) for cell, s in chosen.items() for seed in CONFIRM_SEEDS)
    assert {r["status"] for r in confirm} == {"TERMINATED"} and {r["epochs"] for r in confirm} == {4}
    runs = mlflow_trial_runs(spec)
    assert sorted(runs["tags.ocr_study.trial_id"]) == sorted(r["trial_id"] for r in rows)  # one run each
    assert Counter(runs["tags.ocr_study.phase"]) == {"search": len(search_before), "confirm": len(confirm)}
    import pandas as pd

    trials = pd.read_parquet(Path(spec.study_dir) / "results" / "trials.parquet")
    assert len(trials) == len(rows), out


def test_sequential_confirm_killed_in_its_second_round_resumes_to_the_same_decisions(
        procs: Callable[..., Processes], tmp_path: Path, shared_cache: Path) -> None:  # noqa: F811
    """Issue 24: a sequential confirm phase on Ray Tune, its driver killed (SIGKILL) in round 2, resumed: every
    round's seeds run once, the baseline on every seed the cell ran, the rounds in the record, MLflow and
    Parquet, and the decisions in study.json are those the report computes from the trials."""
    import pandas as pd

    from record import SeedRule
    from results import collect_study, load_dataset
    from results._decisions import decision_table

    rule = {"min": 2, "max": 4, "step": 1, "alpha": 1e-9}  # an α no tiny study can meet: every round runs
    doc = _doc(tmp_path, shared_cache, epochs=2)
    doc["confirm"] = {"seeds": rule}
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(doc))
    spec = load_spec(doc)
    p = procs("driver.trial-result[phase=confirm,round=2,epoch=1]=kill")
    killed_by_failpoint(p.start("run", str(path)), p, "driver.trial-result")
    out = finish(p.start("resume", spec.name, "--storage", spec.storage, armed=False))

    confirm = _confirm_rows(spec)
    pairs = Counter((r["cell"], r["seed"]) for r in confirm)
    assert set(pairs.values()) == {1}, pairs  # no seed run twice across the kill
    seeds = {cell: {s for c, s in pairs if c == cell} for cell in {c for c, _ in pairs}}
    assert seeds["ocr.selection=oc"] <= seeds["ocr.selection=none"]  # the baseline ran every seed oc ran
    assert seeds["ocr.selection=none"] >= {0, 1, 2}  # round 2 ran (the kill was in it)
    record = read_study(Path(spec.study_dir))
    phase = record.phase(Phase.CONFIRM) if record is not None else None
    assert phase is not None and phase.seed_rule == SeedRule(**rule)  # type: ignore[arg-type]
    rounds = {r["round"]: r["settings"]["ocr.selection=oc#0"] for r in phase.rounds}
    assert 1 in rounds and max(rounds) == max(SeedRule(**rule).round_of(s) for s in seeds["ocr.selection=oc"])  # type: ignore[arg-type]

    folder = Path(spec.study_dir)
    trials = pd.read_parquet(folder / "results" / "trials.parquet")
    mine = trials[trials["phase"] == "confirm"]
    assert sorted(mine["round"].tolist()) == sorted(SeedRule(**rule).round_of(int(s)) for s in mine["seed"])  # type: ignore[arg-type]
    runs = mlflow_trial_runs(spec)
    confirm_runs = runs[runs["tags.ocr_study.phase"] == "confirm"]
    assert sorted(confirm_runs["tags.ocr_study.round"].astype(int)) == sorted(mine["round"].tolist())
    table = decision_table(load_dataset(collect_study(folder)))
    assert table is not None, out
    last = rounds[max(rounds)]
    row = table.values.set_index("cell").loc["ocr.selection=oc"]
    assert row["decision"] == last["decision"] and row["n"] == last["n"]
