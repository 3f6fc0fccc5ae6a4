"""The study plan: cells, trial counts with conditions, the ASHA budget estimate, caps, shipped specs."""

from __future__ import annotations

import subprocess
import sys
from typing import Any

import pytest

from pipelines.config import from_flat
from study.plan import (
    asha_epochs_per_trial,
    asha_rungs,
    cell_config,
    format_plan,
    plan,
)
from study.spec import load_spec, shipped_specs

QUICKISH: dict[str, Any] = {
    "name": "plan",
    "trial": {"seg.epochs": 6, "data.digits.train_size": 100},
    "grid": {"ocr.selection": ["none", "all", "oc"], "ocr.prior": ["cooc_minmax", "uniform"]},
    "search": {
        "samples": 3,
        "params": {
            "ocr.delta": {"type": "uniform", "low": 0.0, "high": 8.0},
            "ocr.tau": {"type": "loguniform", "low": 0.05, "high": 0.5},
        },
        "conditions": {"ocr.tau": {"ocr.prior": ["uniform"]}},
    },
    "seeds": [0, 1],
    "scheduler": {"type": "asha", "grace_period": 1, "reduction_factor": 2},
    "max_concurrent": 4,
    "resources": {"cpus": 1.5, "gpus": 0.25},
}


def counts(doc: dict[str, Any]) -> dict[str, tuple[int, int]]:
    return {c.id: (c.settings, c.trials) for c in plan(load_spec(doc)).cells}


def test_trial_counts_per_cell_with_conditions() -> None:
    assert counts(QUICKISH) == {
        "ocr.selection=none": (1, 2),  # nothing applies: one setting per seed, the prior axis merged away
        "ocr.selection=all,ocr.prior=cooc_minmax": (3, 6),
        "ocr.selection=all,ocr.prior=uniform": (3, 6),
        "ocr.selection=oc,ocr.prior=cooc_minmax": (3, 6),
        "ocr.selection=oc,ocr.prior=uniform": (3, 6),
    }
    study = plan(load_spec(QUICKISH))
    assert study.requested_trials == study.trials == 26 and not study.capped
    params = {c.id: c.params for c in study.cells}
    assert params["ocr.selection=oc,ocr.prior=uniform"] == ("ocr.delta", "ocr.tau")
    assert params["ocr.selection=oc,ocr.prior=cooc_minmax"] == ("ocr.delta",)
    assert params["ocr.selection=none"] == ()


def test_a_non_ocr_param_is_sampled_in_the_none_cell_too() -> None:
    doc = {**QUICKISH, "search": {"samples": 2, "params": {"seg.lr": {"type": "loguniform", "low": 1e-4,
                                                                      "high": 1e-2}}}}
    assert counts(doc)["ocr.selection=none"] == (2, 4)


def test_without_grid_or_search_there_is_one_cell_run_once_per_seed() -> None:
    study = plan(load_spec({"name": "one", "seeds": [3, 4, 5]}))
    assert [(c.id, c.settings, c.trials) for c in study.cells] == [("base", 1, 3)]


@pytest.mark.parametrize(("grace", "rf", "max_epochs", "rungs", "epochs"), [
    (1, 2, 6, (1, 2, 4), 1 + 1 / 2 + 2 / 4 + 2 / 8),   # 2.25
    (2, 3, 20, (2, 6, 18), 2 + 4 / 3 + 12 / 9 + 2 / 27),
    (1, 2, 4, (1, 2), 1 + 1 / 2 + 2 / 4),                # a rung at max_epochs saves nothing
    (3, 2, 3, (), 3.0),                                  # grace = max: no early stopping
])
def test_asha_estimate_by_hand(grace: int, rf: int, max_epochs: int, rungs: tuple[int, ...],
                               epochs: float) -> None:
    assert asha_rungs(grace, rf, max_epochs) == rungs
    assert asha_epochs_per_trial(grace, rf, max_epochs) == pytest.approx(epochs)


def test_plan_epoch_budgets() -> None:
    study = plan(load_spec(QUICKISH))
    assert (study.max_epochs, study.rungs) == (6, (1, 2, 4))
    assert study.epochs_full == 26 * 6
    assert study.epochs_expected == pytest.approx(26 * 2.25)
    fifo = plan(load_spec({**QUICKISH, "scheduler": {"type": "none"}}))
    assert fifo.rungs == () and fifo.epochs_expected == fifo.epochs_full == 26 * 6


def test_max_trials_caps_the_total_and_says_so() -> None:
    study = plan(load_spec({**QUICKISH, "budget": {"max_trials": 10}}))
    assert (study.requested_trials, study.trials, study.capped) == (26, 10, True)
    assert study.epochs_full == 60
    assert "capped by budget.max_trials from 26" in format_plan(study)
    assert not plan(load_spec({**QUICKISH, "budget": {"max_trials": 26}})).capped


def test_resources_at_max_concurrent() -> None:
    study = plan(load_spec(QUICKISH))
    assert (study.concurrency, study.cpus_at_once, study.gpus_at_once) == (4, 6.0, 1.0)
    small = plan(load_spec({"name": "s", "max_concurrent": 8, "seeds": [0, 1]}))
    assert small.concurrency == 2  # fewer trials than max_concurrent


def test_cell_config_is_the_base_with_the_grid_values() -> None:
    spec = load_spec(QUICKISH)
    cell = plan(spec).cells[-1]
    flat = cell_config(cell, seed=1)
    assert flat["ocr.selection"] == "oc" and flat["ocr.prior"] == "uniform"
    assert flat["seg.epochs"] == 6 and flat["data.digits.train_size"] == 100 and flat["seed"] == 1
    assert from_flat(flat).ocr.prior == "uniform"
    assert cell_config(cell) == {**flat, "seed": 0} and cell.base["seed"] == 0  # a copy: the plan is untouched
    assert cell.params == ("ocr.delta", "ocr.tau")
    none_cell = plan(spec).cells[0]
    assert cell_config(none_cell)["ocr.selection"] == "none" and none_cell.search == ()


def test_format_plan_lists_cells_totals_budgets_and_resources() -> None:
    text = format_plan(plan(load_spec(QUICKISH)))
    for cell in plan(load_spec(QUICKISH)).cells:
        assert cell.id in text
    for part in ("total", "trials: 26", "156 without early stopping", "about 58 with ASHA", "estimate",
                 "1.5 CPU, 0.25 GPU per trial", "6 CPU, 1 GPU with 4 at once", "rungs at epochs 1, 2, 4"):
        assert part in text, part


@pytest.mark.parametrize("name", sorted(shipped_specs()))
def test_shipped_specs_load_and_plan(name: str) -> None:
    spec = load_spec(name)
    study = plan(spec)
    assert spec.name == name and study.trials > 0 and format_plan(study)
    selections = {c.grid_values.get("ocr.selection") for c in study.cells}
    assert selections == {"none", "all", "oc"}


def test_quick_spec_fits_a_laptop() -> None:
    spec = load_spec("quick")
    study = plan(spec)
    assert spec.scheduler.type == "asha" and study.rungs  # the search phase may stop trials early
    assert spec.confirm is not None and len(spec.confirm.seeds) >= 3  # every ablation row n >= 3
    assert study.confirm_trials == len(spec.cells) * len(spec.confirm.seeds)
    assert (spec.max_concurrent, spec.resources.cpus, spec.resources.gpus) == (2, 1.0, 0.0)
    assert spec.trial.device == "cpu" and spec.trial.data.name == "digits"


def test_paper_and_voc_specs() -> None:
    paper, voc = load_spec("paper"), load_spec("voc")
    assert paper.seeds == (0, 1, 2, 3, 4) and paper.resources.gpus == 0.5
    assert voc.trial.data.name == "voc" and voc.trial.data.root and voc.trial.cam.ink_threshold == 0
    assert voc.resources.gpus == 1
    for spec in (paper, voc):
        sizes = {a.key: len(a.values) for a in spec.grid}
        assert sizes == {"ocr.selection": 3, "ocr.prior": 7, "ocr.group": 3}
        assert spec.search is not None and {p.key for p in spec.search.params} == {"ocr.delta", "ocr.tau"}
        assert len(spec.cells) == 1 + 2 * 7 * 3  # the none cells are one baseline


def test_plan_imports_neither_ray_nor_torch() -> None:
    code = "import sys, study.plan; print(sorted({'ray', 'torch'} & set(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
