"""``ocr-study status`` on hand-made trial rows: states, the best setting over completed seeds, errors."""

from __future__ import annotations

from typing import Any

from record import TrialStatus, stop_reason
from study.commands.status import format_status
from study.spec import load_spec

SPEC = load_spec({"name": "s", "trial": {"seg.epochs": 4}, "grid": {"ocr.selection": ["none", "oc"]},
                  "scheduler": {"type": "asha", "grace_period": 1, "reduction_factor": 2}})


def _row(cell: str, setting: int, seed: int, status: str, epochs: int, miou: float | None,
         **config: Any) -> dict[str, Any]:
    reason, _ = stop_reason(TrialStatus(status), epochs, 4, "asha", (1, 2))  # as the driver records it
    return {"trial_id": f"{cell[-2:]}{setting}{seed}", "cell": cell, "setting": setting, "seed": seed,
            "status": status, "stop_reason": reason, "epochs": epochs, "val_miou": miou, "error": "",
            "config": {"seg.epochs": 4, "ocr.selection": cell.split("=")[1], **config}}


def test_states_and_best_over_completed_seeds() -> None:
    rows = [
        _row("ocr.selection=none", 0, 0, "TERMINATED", 4, 0.60, **{"ocr.delta": 6.0}),
        _row("ocr.selection=none", 0, 1, "TERMINATED", 1, 0.30),  # stopped by ASHA: not averaged
        _row("ocr.selection=oc", 0, 0, "TERMINATED", 4, 0.50, **{"ocr.delta": 1.0}),
        _row("ocr.selection=oc", 1, 0, "TERMINATED", 4, 0.70, **{"ocr.delta": 2.5}),
        _row("ocr.selection=oc", 1, 1, "TERMINATED", 4, 0.66, **{"ocr.delta": 2.5}),
        _row("ocr.selection=oc", 2, 0, "RUNNING", 2, 0.90, **{"ocr.delta": 3.0}),
        _row("ocr.selection=oc", 2, 1, "ERROR", 1, None, **{"ocr.delta": 3.0}),
    ]
    rows[-1]["error"] = "NonFiniteLossError: non-finite loss"
    text = format_status(SPEC, rows)
    lines = text.splitlines()
    assert lines[0] == "study s: 7 trials known — 4 completed, 1 stopped early, 1 failed, 1 running"
    assert lines[1] == ("  ocr.selection=none: 1 completed, 1 stopped early · best val_miou 60.00 % "
                        "(mean of 1 completed)")
    assert lines[2] == ("  ocr.selection=oc: 3 completed, 1 failed, 1 running · best val_miou 68.00 % "
                        "(mean of 2 completed) at ocr.delta=2.5")
    assert "failed oc21 (ocr.selection=oc, seed 1): NonFiniteLossError: non-finite loss" in text


def test_a_cell_with_nothing_completed_shows_its_latest_epochs() -> None:
    text = format_status(SPEC, [_row("ocr.selection=oc", 0, 0, "RUNNING", 2, 0.4, **{"ocr.delta": 1.0})])
    assert "best val_miou 40.00 % (so far, at their latest epoch) at ocr.delta=1" in text


def test_status_prints_percent_as_the_report_does() -> None:
    from record import metric_text

    assert [metric_text(m, 0.61523) for m in ("val_miou", "val_oracle_miou", "val_pixel_acc", "val_oc_rate_fg",
                                              "val_oc_rate", "val_oc_image_rate")] == ["61.52 %"] * 6
    assert metric_text("train_loss", 0.61523) == "0.6152"  # a loss is no share of anything


def test_a_sequential_confirm_phase_shows_each_setting_decision_at_its_last_look() -> None:
    from record import Phase, PhaseDoc, SeedRule
    from study.commands.status import format_rounds

    rule = SeedRule(min=3, max=7, step=2)
    phase = PhaseDoc(Phase.CONFIRM, seed_rule=rule)
    assert "round 1 of at most 3 running" in format_rounds(phase)
    look = {"n": 3, "mean": -40.0, "low": -45.0, "high": -35.0, "p": 1e-4, "p_adjusted": 3e-4, "round": 1}
    phase = PhaseDoc(Phase.CONFIRM, seed_rule=rule, rounds=(
        {"round": 1, "settings": {"all#0": {**look, "decision": "worse"},
                                  "oc#0": {**look, "mean": 1.0, "low": -3.0, "high": 5.0, "decision": "open"}}},
        {"round": 2, "settings": {"oc#0": {**look, "n": 5, "mean": 1.2, "low": -1.0, "high": 3.4,
                                           "decision": "open"}}}))
    text = format_rounds(phase)
    assert "2 of at most 3 rounds" in text
    assert "all#0: worse after 3 seeds, Δ -40.00 [-45.00, -35.00]" in text  # decided in round 1, kept
    assert "oc#0: open (more seeds to come) after 5 seeds, Δ +1.20 [-1.00, +3.40]" in text


def test_the_confirm_phase_shows_its_held_out_figure_as_the_report_does() -> None:
    """A confirm phase that measured on test shows test_miou (the ablation table's figure), the search val."""
    search = _row("ocr.selection=oc", 0, 0, "TERMINATED", 4, 0.60, **{"meta.phase": "search"})
    confirm = [{**_row("ocr.selection=oc", 0, seed, "TERMINATED", 4, 0.60), "phase": "confirm",
                "test_miou": 0.50 + 0.02 * seed} for seed in (0, 1, 2)]
    lines = format_status(SPEC, [search, *confirm]).splitlines()
    assert lines[2] == "  ocr.selection=oc: 1 completed · best val_miou 60.00 % (mean of 1 completed)"
    assert lines[4] == "  ocr.selection=oc: 3 completed · best test_miou 52.00 % (mean of 3 completed)"
