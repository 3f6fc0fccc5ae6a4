"""The grid × Optuna × seeds searcher without Ray running: order, counts, telling Optuna, save and restore."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from ray.tune.search import Searcher

from study.plan import CellPlan
from study.searcher import GridCellSearcher
from study.spec import SearchParam


def _searcher(max_trials: int | None = None) -> GridCellSearcher:
    delta = SearchParam("ocr.delta", "uniform", 0.0, 8.0)
    cells = [CellPlan("sel=none", (("ocr.selection", "none"),), (), 1, 2, {"ocr.selection": "none"}),
             CellPlan("sel=oc", (("ocr.selection", "oc"),), (delta,), 3, 6, {"ocr.selection": "oc"})]
    searcher = GridCellSearcher(cells, [0, 1], seed=0, max_trials=max_trials, meta={"study": "unit"})
    searcher.set_search_properties("val_miou", "max", {})
    return searcher


def _drain(searcher: GridCellSearcher, prefix: str, limit: int = 100) -> list[tuple[str, dict[str, Any]]]:
    out = []
    for i in range(limit):
        config = searcher.suggest(f"{prefix}{i}")
        if config is Searcher.FINISHED:
            break
        out.append((f"{prefix}{i}", config))
    return out


def _key(config: dict[str, Any]) -> tuple[Any, ...]:
    return config["meta.cell"], config["meta.setting"], config["seed"], config.get("ocr.delta")


def test_every_setting_runs_once_per_seed() -> None:
    searcher = _searcher()
    suggested = [c for _, c in _drain(searcher, "t")]
    assert searcher.total == len(suggested) == 2 + 3 * 2
    assert Counter(c["meta.cell"] for c in suggested) == {"sel=none": 2, "sel=oc": 6}
    deltas = Counter(c["ocr.delta"] for c in suggested if c["meta.cell"] == "sel=oc")
    assert len(deltas) == 3 and set(deltas.values()) == {2}
    assert all("ocr.delta" not in c for c in suggested if c["meta.cell"] == "sel=none")
    assert {c["meta.study"] for c in suggested} == {"unit"}


def test_max_trials_caps_the_queue() -> None:
    searcher = _searcher(max_trials=3)
    assert len(_drain(searcher, "t")) == searcher.total == 3


def test_optuna_is_told_the_seed_mean_once_every_seed_is_in() -> None:
    searcher = _searcher()
    trials = _drain(searcher, "t")
    oc = [(tid, c) for tid, c in trials if c["meta.cell"] == "sel=oc" and c["meta.setting"] == 0]
    study = searcher._study(1)
    searcher.on_trial_complete(oc[0][0], {"val_miou": 0.4})
    assert not [t for t in study.trials if t.value is not None]
    searcher.on_trial_complete(oc[1][0], {"val_miou": 0.6})
    values = [t.value for t in study.trials if t.value is not None]
    assert values == [pytest.approx(0.5)]


def test_a_setting_whose_seeds_all_failed_is_told_as_failed() -> None:
    searcher = _searcher()
    trials = _drain(searcher, "t")
    for tid, c in trials:
        if c["meta.cell"] == "sel=oc" and c["meta.setting"] == 1:
            searcher.on_trial_complete(tid, error=True)
    states = [t.state.name for t in searcher._study(1).trials]
    assert states.count("FAIL") == 1


def test_restored_searcher_continues_exactly_where_the_saved_one_stopped(tmp_path: Path) -> None:
    reference = [_key(c) for _, c in _drain(_searcher(), "r")]
    first = _searcher()
    head = _drain(first, "t", limit=5)
    first.on_trial_complete(head[2][0], {"val_miou": 0.3})
    first.save(str(tmp_path / "state.json"))

    second = _searcher()
    second.restore(str(tmp_path / "state.json"))
    tail = _drain(second, "u")
    assert [_key(c) for _, c in head + tail] == reference
    assert second.trials[head[2][0]] == first.trials[head[2][0]]
    second.on_trial_complete(head[3][0], {"val_miou": 0.5})  # a trial suggested before the save
    assert second.settings["1/0"].values == {"0": 0.3, "1": 0.5}
