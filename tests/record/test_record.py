"""The study facts and the record files that study/ writes and results/ reads."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest

from record import (
    Phase,
    PhaseDoc,
    StudyDoc,
    TrialDoc,
    TrialStatus,
    append_epoch,
    asha_rungs,
    best_setting,
    cell_id,
    ocr_applies,
    parse_cell,
    planned_epochs,
    read_epochs,
    read_last_epochs,
    read_study,
    read_trial,
    stop_reason,
    trial_folder,
    trial_folders,
    update_trial,
    write_study,
    write_trial,
)


def test_cell_ids_spell_booleans_and_read_back() -> None:
    cell = {"ocr.selection": "oc", "amp": True, "ocr.delta": 2.5}
    assert cell_id(cell) == "ocr.selection=oc,amp=true,ocr.delta=2.5"
    assert parse_cell(cell_id(cell)) == {"ocr.selection": "oc", "amp": "true", "ocr.delta": "2.5"}
    assert cell_id({}) == "base" and parse_cell("base") == {}


@pytest.mark.parametrize(("key", "selection", "applies"), [
    ("ocr.delta", "none", False), ("ocr.prior", "none", False), ("ocr.selection", "none", True),
    ("ocr.delta", "oc", True), ("seg.lr", "none", True), ("ocr.delta", None, True),
])
def test_ocr_keys_apply_only_with_ocr_on(key: str, selection: object, applies: bool) -> None:
    assert ocr_applies(key, selection) is applies


def test_planned_epochs_take_asha_max_epochs_into_account() -> None:
    assert planned_epochs(10, "asha", 6) == 6  # the bug: MLflow used seg.epochs = 10 and said "stopped early"
    assert planned_epochs(4, "asha", 6) == 4
    assert planned_epochs(10, "none", 6) == 10
    assert planned_epochs(None, "asha", 6) == 6


def test_stop_reasons() -> None:
    rungs = asha_rungs(1, 2, 8)
    assert rungs == (1, 2, 4)
    assert stop_reason("TERMINATED", 6, 6, "asha", rungs) == ("completed", None)
    assert stop_reason("TERMINATED", 2, 6, "asha", rungs) == ("early_stopped", 2)
    assert stop_reason("TERMINATED", 3, 6, "asha", rungs) == ("stopped", None)  # not a rung: the time budget
    assert stop_reason("TERMINATED", 3, 6, "unknown") == ("early_stopped", 3)
    assert stop_reason("ERROR", 6, 6, "asha", rungs) == ("failed", None)
    assert stop_reason("RUNNING", 1, 6) == ("running", None)


def test_best_setting_by_mean_over_seeds() -> None:
    scores = {0: [0.5, 0.7], 1: [0.61, 0.61], 2: []}
    assert best_setting(scores, "max") == (1, pytest.approx(0.61))
    assert best_setting(scores, "min") == (0, pytest.approx(0.6))
    assert best_setting({0: [0.5], 1: [0.5]}, "max") == (0, 0.5)  # ties: the first given
    assert best_setting({}, "max") is None


def test_trial_json_is_replaced_whole_and_merged(tmp_path: Path) -> None:
    folder = trial_folder(tmp_path, "abc_00001")
    write_trial(folder, TrialDoc("abc_00001", status=TrialStatus.RUNNING, wall_s=float("nan")))
    doc = update_trial(folder, status="TERMINATED", epochs=3)
    assert doc.status == "TERMINATED" and doc.epochs == 3 and doc.trial_id == "abc_00001"
    assert read_trial(folder) == doc and doc.wall_s is None  # JSON has no NaN
    assert json.loads((folder / "trial.json").read_text())["status"] == "TERMINATED"  # the word, plain
    with pytest.raises(TypeError, match=r"no field \['loss'\]"):  # one shape: a field it lacks is refused
        update_trial(folder, loss=0.5)
    with pytest.raises(ValueError, match="status: 'DONE' is none of"):
        update_trial(folder, status="DONE")
    assert read_trial(folder) == doc  # a refused change leaves the document as it was
    assert [p.name for p in folder.iterdir()] == ["trial.json"]  # no temporary file left
    assert trial_folders(tmp_path) == [folder]
    with pytest.raises(ValueError, match="cannot name a folder"):
        trial_folder(tmp_path, "../x")


def test_epoch_lines_are_appended_and_a_cut_line_is_skipped(tmp_path: Path) -> None:
    folder = tmp_path / "t"
    append_epoch(folder, {"epoch": 1, "val_miou": 0.5})
    append_epoch(folder, {"epoch": 2, "val_miou": float("inf")})
    with open(folder / "epochs.jsonl", "a") as f:
        f.write('{"epoch": 3, "val_')  # a writer killed mid-line
    assert read_epochs(folder) == [{"epoch": 1, "val_miou": 0.5}, {"epoch": 2, "val_miou": None}]
    assert read_epochs(tmp_path / "missing") == [] and read_trial(tmp_path / "missing") is None


def test_appends_from_two_processes_interleave_by_whole_lines(tmp_path: Path) -> None:
    code = ("import sys; from pathlib import Path; from record import append_epoch\n"
            "for i in range(300): append_epoch(Path(sys.argv[1]), {'epoch': i, 'who': sys.argv[2], 'pad': 'x' * 500})")
    import subprocess

    procs = [subprocess.Popen([sys.executable, "-c", code, str(tmp_path), who], cwd=Path(__file__).parents[2],
                              env={**os.environ}) for who in "ab"]
    assert all(p.wait(timeout=60) == 0 for p in procs)
    lines = (tmp_path / "epochs.jsonl").read_text().splitlines()
    rows = [json.loads(line) for line in lines]
    assert len(rows) == 600 and {r["who"] for r in rows} == {"a", "b"}


def test_study_json_round_trip_and_a_bad_file(tmp_path: Path) -> None:
    assert read_study(tmp_path) is None
    doc = StudyDoc("s", planned_trials=6, rungs=(1, 2), phases=(PhaseDoc(Phase.SEARCH, trials=6),
                                                                PhaseDoc(Phase.CONFIRM, trials=3)))
    write_study(tmp_path, doc)
    assert read_study(tmp_path) == doc  # typed back: tuples, the Phase words
    chosen = doc.search_ended().confirm_chosen(PhaseDoc(Phase.CONFIRM, trials=4, configs=({"seed": 5},)))
    assert doc.phase(Phase.SEARCH) == PhaseDoc(Phase.SEARCH, trials=6)  # the document is not changed in place
    assert chosen.phase(Phase.SEARCH).done and chosen.phase(Phase.CONFIRM).chosen and chosen.planned_trials == 10
    with pytest.raises(ValueError, match="'warmup' is not a valid Phase"):
        StudyDoc.from_json({"name": "s", "phases": [{"name": "warmup"}]})
    (tmp_path / "study.json").write_text("{not json")
    with pytest.raises(ValueError, match=r"study\.json cannot be read"):
        read_study(tmp_path)


def test_record_imports_only_the_standard_library() -> None:
    import subprocess

    code = ("import sys, record; bad = sorted({m.split('.')[0] for m in sys.modules} & {'ray', 'torch', 'pandas', "
            "'numpy', 'pyarrow', 'yaml', 'pipelines', 'study', 'results', 'ocr', 'mlflow'}); print(bad); "
            "sys.exit(1 if bad else 0)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                          cwd=Path(__file__).parents[2])
    assert done.returncode == 0, done.stdout + done.stderr


def test_trials_a_killed_driver_left_unsaved_are_abandoned_and_no_longer_count(tmp_path: Path) -> None:
    """Issue 14.1: Tune re-plans a trial it never saved under a new id; the old record must not count."""
    from record import ABANDONED, abandon_trials, study_trials

    for trial_id, phase, status in [("a", "search", "TERMINATED"), ("b", "search", "RUNNING"),
                                    ("c", "search", "RUNNING"), ("d", "confirm", "RUNNING")]:
        write_trial(trial_folder(tmp_path, trial_id), TrialDoc(trial_id, phase=Phase(phase),
                                                                status=TrialStatus(status)))
    assert abandon_trials(tmp_path, "search", {"a", "c"}) == ["b"]
    assert [doc.trial_id for _, doc in study_trials(tmp_path)] == ["a", "c", "d"]  # other phases untouched
    doc = read_trial(trial_folder(tmp_path, "b"))
    assert doc is not None and doc.status == ABANDONED and "killed" in (doc.error or "")
    assert abandon_trials(tmp_path, "search", {"a", "c"}) == []  # once


def test_the_last_epochs_are_read_from_the_tail_without_a_cut_line(tmp_path: Path) -> None:
    for epoch in range(1, 201):
        append_epoch(tmp_path, {"epoch": epoch, "note": "x" * (epoch % 7)})
    assert read_last_epochs(tmp_path, max_bytes=1 << 20) == read_epochs(tmp_path)
    tail = read_last_epochs(tmp_path, max_bytes=300)
    assert 5 <= len(tail) < 15 and [row["epoch"] for row in tail] == list(range(201 - len(tail), 201))
    with open(tmp_path / "epochs.jsonl", "ab") as f:
        f.write(b'{"epoch": 201, "no')  # a line still being written
    assert read_last_epochs(tmp_path, max_bytes=300)[-1]["epoch"] == 200
    assert read_last_epochs(tmp_path / "none") == []
