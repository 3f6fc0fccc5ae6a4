"""The record written from both ends of a trial, and the planned-epochs bug of MLflow's stop tag."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from record import StudyDoc, TrialStatus, read_epochs, read_trial, stop_reason, trial_folder
from study.plan import plan, study_record
from study.spec import load_spec
from study.tracking import MLflowTracking
from study.trial_record import RecordCallback, TrialRecorder, error_line, exception_text


def _trial(epoch: int, seg_epochs: int, config: dict[str, Any] | None = None) -> Any:
    return SimpleNamespace(trial_id="t1", config={"seg.epochs": seg_epochs, **(config or {})},
                           last_result={"epoch": epoch}, checkpoint=None, error_file=None)


@pytest.mark.parametrize(("epoch", "tag"), [(6, "completed"), (2, "early_stopped"), (3, "stopped")])
def test_mlflow_stop_tag_counts_asha_max_epochs(epoch: int, tag: str) -> None:
    """The bug: trials run to ASHA's max_epochs (6) under seg.epochs = 10 were tagged as stopped early. The
    tag is the record's stop reason: ASHA stops at a rung (2); an end off the rungs (3) is the time budget."""
    tracking = MLflowTracking("sqlite:///unused.db", "e", "s", "h", scheduler="asha", max_epochs=6, rungs=(1, 2, 4))
    assert tracking.stop_tag(_trial(epoch, 10)) == (tag, epoch)
    assert tag == stop_reason(TrialStatus.TERMINATED, epoch, 6, "asha", (1, 2, 4))[0]  # what the record says
    plain = MLflowTracking("sqlite:///unused.db", "e", "s", "h")
    assert plain.stop_tag(_trial(6, 10)) == ("stopped", 6)  # no scheduler: a short trial ran out of time


def test_a_callback_pickled_before_the_fix_still_tags() -> None:
    tracking = MLflowTracking("sqlite:///unused.db", "e", "s", "h")
    del tracking.__dict__["scheduler"], tracking.__dict__["max_epochs"]
    assert tracking.stop_tag(_trial(4, 4)) == ("completed", 4)


def test_trial_and_driver_write_one_record(tmp_path: Path) -> None:
    config = {"seg.epochs": 8, "seed": 1, "meta.cell": "ocr.selection=oc", "meta.setting": 2, "meta.study": "s",
              "meta.record": str(tmp_path)}
    recorder = TrialRecorder("t1", config, "node-a")
    recorder.epoch({"epoch": 1, "val_miou": 0.4})
    recorder.epoch({"epoch": 2, "val_miou": 0.5})
    folder = trial_folder(tmp_path, "t1")
    started = read_trial(folder)
    assert started is not None and started.status == "RUNNING" and started.node_id == "node-a"
    assert (started.cell, started.setting, started.seed, started.phase) == ("ocr.selection=oc", 2, 1,
                                                                                         "search")
    callback = RecordCallback("asha", 8, (1, 2, 4))
    callback.on_trial_complete(0, [], SimpleNamespace(trial_id="t1", config=config, last_result={"epoch": 2},
                                                      checkpoint=SimpleNamespace(path="/ck")))
    ended = read_trial(folder)
    assert ended is not None
    assert (ended.status, ended.stop_reason, ended.stop_rung, ended.epochs_planned) == (
        "TERMINATED", "early_stopped", 2, 8)
    assert ended.artifacts == "/ck/artifacts" and ended.node_id == "node-a"
    lines = (folder / "epochs.jsonl").read_text().splitlines()
    assert [json.loads(line)["trial_id"] for line in lines] == ["t1", "t1"]


def _result(epoch: int, wall: float) -> dict[str, Any]:
    """A result as Tune hands it to a callback: the worker's line, its node, and Tune's own keys."""
    return {"epoch": epoch, "val_miou": 0.1 * epoch, "trial_wall_s": wall, "node_id": "node-b", "hostname": "b",
            "pid": 7, "training_iteration": epoch, "time_total_s": wall, "timestamp": 1, "done": False,
            "trial_id": "t1", "date": "d", "config": {"seed": 0}, "checkpoint_dir_name": f"checkpoint_{epoch}"}


def test_the_driver_records_epochs_a_worker_on_another_host_wrote_elsewhere(tmp_path: Path) -> None:
    config = {"seg.epochs": 3, "seed": 0, "meta.cell": "base", "meta.study": "s", "meta.record": str(tmp_path)}
    callback = RecordCallback("none", 3, ())
    trial = SimpleNamespace(trial_id="t1", config=config)
    for epoch in (1, 2):  # the worker's own writes went to its host's disk: nothing here yet
        callback.on_trial_result(0, [], trial, _result(epoch, 10.0 * epoch))
    folder = trial_folder(tmp_path, "t1")
    started = read_trial(folder)
    assert started is not None and (started.status, started.node_id, started.hostname) == (
        "RUNNING", "node-b", "b")
    assert read_epochs(folder) == [{"trial_id": "t1", "epoch": e, "val_miou": 0.1 * e, "trial_wall_s": 10.0 * e}
                                   for e in (1, 2)]
    assert not callback.reported("t1", config, _result(2, 20.0))  # the same report again: not twice
    assert callback.reported("t1", config, _result(2, 31.0))  # epoch 2 run again after a resume: a new line
    assert [row["epoch"] for row in read_epochs(folder)] == [1, 2, 2]


def test_the_driver_adds_nothing_where_the_worker_wrote_its_line(tmp_path: Path) -> None:
    config = {"seg.epochs": 3, "seed": 0, "meta.cell": "base", "meta.study": "s", "meta.record": str(tmp_path)}
    recorder = TrialRecorder("t1", config, "node-a")
    callback = RecordCallback("none", 3, ())
    for epoch in (1, 2, 3):
        recorder.epoch({"epoch": epoch, "val_miou": 0.1 * epoch, "trial_wall_s": 10.0 * epoch})
    for epoch in (1, 2, 3):  # the driver may hear of an epoch after the worker wrote the next ones
        assert not callback.reported("t1", config, _result(epoch, 10.0 * epoch))
    folder = trial_folder(tmp_path, "t1")
    assert len(read_epochs(folder)) == 3 and getattr(read_trial(folder), "node_id", None) == "node-a"


def test_a_failed_trial_keeps_its_own_error_else_tune_s(tmp_path: Path) -> None:
    config = {"meta.record": str(tmp_path), "seed": 0}
    recorder = TrialRecorder("t1", config, None)
    recorder.failed(ValueError("boom"))
    callback = RecordCallback("none", 4, ())
    callback.on_trial_error(0, [], SimpleNamespace(trial_id="t1", config=config, error_file=None))
    doc = read_trial(trial_folder(tmp_path, "t1"))
    assert doc is not None and (doc.status, doc.stop_reason, doc.error) == ("ERROR", "failed",
                                                                                     "ValueError: boom")
    error_file = tmp_path / "error.txt"
    error_file.write_text("Failure # 1\n\x1b[36mray::X\x1b[39m\nray.exceptions.RayActorError: worker died\n")
    callback.on_trial_error(0, [], SimpleNamespace(trial_id="t2", config=config, error_file=str(error_file)))
    doc = read_trial(trial_folder(tmp_path, "t2"))
    assert doc is not None and doc.error == "ray.exceptions.RayActorError: worker died"


def test_an_error_while_tune_stops_an_ended_trial_does_not_mark_it_failed(tmp_path: Path) -> None:
    config = {"meta.record": str(tmp_path), "seed": 0, "seg.epochs": 4}
    recorder = TrialRecorder("t1", config, None)
    RecordCallback("asha", 4, (1, 2)).ended("t1", config, {"epoch": 2}, None)
    recorder.failed(RuntimeError("stopped"))
    doc = read_trial(trial_folder(tmp_path, "t1"))
    assert doc is not None and (doc.status, doc.stop_reason) == ("TERMINATED", "early_stopped")


def test_a_bare_config_writes_no_record(tmp_path: Path) -> None:
    TrialRecorder("t1", {"seed": 0}, None).epoch({"epoch": 1})
    assert RecordCallback("none", 2, ()).ended("t1", {"seed": 0}, {"epoch": 1}, None) is None
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize(("text", "expected"), [
    ("Failure # 1\n  File x\nValueError: boom\n", "ValueError: boom"),
    ("Failure # 1\nKeyError: 'a'\nFailure # 2\n\x1b[36mray::X\x1b[39m\nmod.NonFiniteLossError: nan\n\n"
     "During handling\nTypeError: pickling\n", "mod.NonFiniteLossError: nan"),
    ("something odd\nlast words\n", "last words"),
])
def test_error_line_takes_the_first_exception_of_the_last_failure(text: str, expected: str) -> None:
    assert error_line(text) == expected


def test_exception_text_names_the_module() -> None:
    from pipelines.engine import NonFiniteLossError

    assert exception_text(KeyError("a")) == "KeyError: 'a'"
    err = NonFiniteLossError(stage="seg", epoch=2, part="ocr", value=float("nan"))
    assert exception_text(err).startswith("pipelines.engine.NonFiniteLossError: ")


def test_study_json_holds_phases_cells_and_planned_epochs(tmp_path: Path) -> None:
    spec = load_spec({"name": "s", "trial": {"seg.epochs": 10}, "grid": {"ocr.selection": ["none", "oc"]},
                      "search": {"samples": 3, "params": {"ocr.delta": {"type": "uniform", "low": 0, "high": 4}}},
                      "seeds": [0, 1], "scheduler": {"type": "asha", "max_epochs": 6},
                      "storage": str(tmp_path)})
    record = study_record(plan(spec))
    doc = record.to_json()
    assert doc["planned_trials"] == 8 and doc["epochs_planned"] == 6 and doc["rungs"] == [1, 2, 4]
    assert [c["id"] for c in doc["phases"][0]["cells"]] == ["ocr.selection=none", "ocr.selection=oc"]
    assert [c["trials"] for c in doc["phases"][0]["cells"]] == [2, 6]
    assert doc["grid"] == {"ocr.selection": ["none", "oc"]} and doc["search_keys"] == ["ocr.delta"]
    assert json.loads(json.dumps(doc)) == doc and StudyDoc.from_json(doc) == record  # plain data, read back whole


def test_the_driver_records_a_trials_start_and_knows_whether_tune_saved_it(
        tmp_path: Path, failpoints: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """``trial.json`` says RUNNING as soon as Tune starts a trial; the failpoint ``driver.trial-started`` is
    told whether any experiment state Tune saved holds the trial (Tune asks its callbacks at each save)."""
    from record import FAILPOINT_DIR_ENV, fired
    from study.trial_record import RECORD_KEY

    monkeypatch.setenv(FAILPOINT_DIR_ENV, str(tmp_path / "fired"))
    failpoints("driver.trial-started=*sleep(0)")
    callback = RecordCallback("none", 2, ())
    config = {RECORD_KEY: str(tmp_path), "meta.phase": "search", "seed": 0}
    trials = [SimpleNamespace(trial_id="a", config=config)]
    callback.on_step_begin(0, trials)
    assert callback.get_state() is None  # a save: holds "a"
    trials.append(SimpleNamespace(trial_id="b", config=config))  # Tune adds "b" after that save
    for trial in trials:
        callback.on_trial_start(0, trials, trial)
    assert getattr(read_trial(trial_folder(tmp_path, "b")), "status", None) == "RUNNING"
    assert [(f["context"]["trial_id"], f["context"]["started"], f["context"]["unsaved"])
            for f in fired(tmp_path / "fired")] == [("a", 1, False), ("b", 2, True)]
    callback.get_state()  # the next save holds both
    callback.on_trial_start(0, trials, trials[1])
    assert fired(tmp_path / "fired")[-1]["context"]["unsaved"] is False
    assert "_trials" not in callback.__getstate__()  # plain data when Tune pickles it


def test_the_study_s_mlflow_callback_knows_asha_s_rungs(tmp_path: Path) -> None:
    """The real study's MLflow tag said ``stopped`` where its record said ``early_stopped``: the callback was
    built without the rungs, so an ASHA stop looked like the time budget's."""
    from study.handle import open_study
    from study.runner import _tracking

    spec = load_spec({"name": "s", "trial": {"seg.epochs": 4}, "storage": str(tmp_path),
                      "scheduler": {"type": "asha", "grace_period": 1, "reduction_factor": 2}})
    study = open_study(spec)
    search, confirm = _tracking(study), _tracking(study, "none", 4, ())
    assert study.plan.rungs == (1, 2) and search.rungs == study.plan.rungs and confirm.rungs == ()
    assert search.stop_tag(_trial(1, 4))[0] == stop_reason(TrialStatus.TERMINATED, 1, 4, "asha", (1, 2))[0] \
        == "early_stopped"
