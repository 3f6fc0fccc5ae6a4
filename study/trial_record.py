"""The study's own record, written from both ends of a trial (see :mod:`record` for the layout).

In the trial's worker, :class:`TrialRecorder` (used by the reporter) writes ``trial.json`` when the trial
starts or resumes, one line of ``epochs.jsonl`` per epoch before Tune hears of it, and the error when the
trial raises. In the driver, :class:`RecordCallback` writes how the trial ended (Tune stops early-stopped
trials without returning from the trainable, and a killed worker cannot write): the status, the stop
reason with the planned epochs, the artifacts folder, and the error of a trial whose worker died.

A worker on another host writes into its own disk, not the driver's study folder (the study's mirror when
it lives on an object store). So the driver also checks each result Tune hands it against the record and
writes the epoch (and ``trial.json``) itself when the worker's line is not there; a line the worker wrote
is recognised by its epoch and ``trial_wall_s`` and not written twice.
"""

from __future__ import annotations

import logging
import re
import socket
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from ray.tune import Callback

from record import (
    META,
    TRIAL_FILE,
    Phase,
    StopReason,
    TrialDoc,
    TrialStatus,
    abandon_trials,
    append_epoch,
    config_reports,
    failpoint,
    planned_epochs,
    read_last_epochs,
    read_trial,
    stop_reason,
    trial_folder,
    update_trial,
)
from study.processes import record_again

log = logging.getLogger(__name__)
RUNNING = {"status": TrialStatus.RUNNING, "stop_reason": StopReason.RUNNING}  # a trial.json while the trial runs
RECORD_KEY = f"{META}record"  # the config key holding the study folder the record is written into
ANSI = re.compile(r"\x1b\[[0-9;]*m")
EXCEPTION_LINE = re.compile(r"^[A-Za-z_][\w.]*(Error|Exception|Interrupt|Exit|Failure)\b.*")
REPORT_EXTRAS = ("node_id",)  # what the trial's reporter adds to a report beyond its record line
# What Tune adds to every result (ray.tune.result's auto-filled keys): not part of the record's line.
TUNE_RESULT_KEYS = frozenset({
    "training_iteration", "time_total_s", "time_this_iter_s", "time_since_restore", "timestamp", "date",
    "pid", "hostname", "node_ip", "config", "checkpoint_dir_name", "done", "trial_id", "experiment_tag",
    "iterations_since_restore", "timesteps_total", "timesteps_since_restore", "timesteps_this_iter",
    "episodes_total", "episodes_this_iter", "should_checkpoint", "experiment_id",
})


def identity(trial_id: str, config: Mapping[str, Any]) -> dict[str, Any]:
    """The fields of ``trial.json`` that say which trial it is (from its flat config and ``meta.*`` keys)."""
    return {"trial_id": trial_id, "study": config.get(f"{META}study"),
            "phase": config.get(f"{META}phase", Phase.SEARCH), "cell": config.get(f"{META}cell"),
            "setting": config.get(f"{META}setting"), "seed": config.get("seed"), "config": dict(config)}


def record_folder(trial_id: str, config: Mapping[str, Any]) -> Path | None:
    """The trial's record folder, or ``None`` for a config that names no study folder (a bare trial)."""
    root = config.get(RECORD_KEY)
    return trial_folder(Path(str(root)), trial_id) if root else None


def exception_text(err: BaseException) -> str:
    """``module.Type: message``, the way ``trial.json`` names a trial's error."""
    kind = type(err)
    name = kind.__qualname__ if kind.__module__ == "builtins" else f"{kind.__module__}.{kind.__qualname__}"
    return f"{name}: {err}"[:4000]


class TrialRecorder:
    """Writes one trial's record from inside the trial (a no-op without a record folder)."""

    def __init__(self, trial_id: str, config: Mapping[str, Any], node_id: str | None) -> None:
        self.folder = record_folder(trial_id, config)
        self.trial_id = trial_id
        if self.folder is not None:
            update_trial(self.folder, **identity(trial_id, config), **RUNNING, error=None, node_id=node_id,
                         hostname=socket.gethostname())

    def epoch(self, metrics: Mapping[str, Any]) -> None:
        """Append one epoch's metrics."""
        if self.folder is not None:
            append_epoch(self.folder, {"trial_id": self.trial_id, **metrics})

    def failed(self, err: BaseException) -> None:
        """Record the exception that ends this attempt of the trial (Tune may still retry it).

        Not over a trial the driver already recorded as ended: an exception raised while Tune stops an
        early-stopped trial is not the trial's failure.
        """
        if self.folder is None:
            return
        doc = read_trial(self.folder)
        if doc is not None and doc.status == TrialStatus.TERMINATED:
            return
        update_trial(self.folder, status=TrialStatus.ERROR, stop_reason=StopReason.FAILED, error=exception_text(err))


def record_line(trial_id: str, result: Mapping[str, Any]) -> dict[str, Any]:
    """The ``epochs.jsonl`` line of a Tune result: what the trial's worker writes for that epoch."""
    dropped = TUNE_RESULT_KEYS.union(REPORT_EXTRAS)
    return {"trial_id": trial_id, **{k: v for k, v in result.items() if k not in dropped}}


def error_line(text: str) -> str:
    """The exception that failed a trial, from Tune's ``error.txt``: the first exception line of the last
    failure (used only where the trial could not write its error itself: its worker died)."""
    text = ANSI.sub("", text)
    last = text.rsplit("Failure # ", 1)[-1]
    for line in last.splitlines():
        if EXCEPTION_LINE.match(line.strip()):
            return line.strip()[:4000]
    lines = [line.strip() for line in last.splitlines() if line.strip()]
    return lines[-1][:4000] if lines else ""


class RecordCallback(Callback):
    """Writes each trial's start and how it ended into its ``trial.json`` (driver side; plain data when
    pickled).

    It also keeps the failpoints of the driver (:mod:`record._failpoints`): ``driver.trial-started`` once a
    trial's record is written (``phase``, ``started``: trials this driver started, ``unsaved``: whether no
    experiment state Tune saved holds the trial yet; Tune asks every callback for its state at each save),
    and ``driver.trial-result`` once a result is in the record (``phase``, ``epoch``, and a sequential
    confirm trial's ``round``).
    """

    def __init__(self, scheduler: str, max_epochs: int | None, rungs: Sequence[int]) -> None:
        self.scheduler, self.max_epochs, self.rungs = scheduler, max_epochs, tuple(rungs)
        self.started = 0
        self.saved: set[str] = set()  # the trials Tune's last saved experiment state holds

    def ended(self, trial_id: str, config: Mapping[str, Any], last: Mapping[str, Any],
              artifacts: str | None) -> TrialDoc | None:
        """Record a trial that Tune ended without an error (completed, or stopped early)."""
        folder = record_folder(trial_id, config)
        if folder is None:
            return None
        epochs = int(last.get("epoch", 0) or 0)
        planned = planned_epochs(config_reports(config), self.scheduler, self.max_epochs)
        reason, rung = stop_reason(TrialStatus.TERMINATED, epochs, planned, self.scheduler, self.rungs)
        return update_trial(folder, **identity(trial_id, config), status=TrialStatus.TERMINATED, stop_reason=reason,
                            stop_rung=rung, epochs=epochs, epochs_planned=planned, error=None, artifacts=artifacts)

    def errored(self, trial_id: str, config: Mapping[str, Any], error_file: str | None) -> TrialDoc | None:
        """Record a trial that failed for good, keeping the error the trial wrote (else Tune's error file's)."""
        folder = record_folder(trial_id, config)
        if folder is None:
            return None
        doc = read_trial(folder)
        error = doc.error if doc is not None else None
        if not error and error_file and Path(error_file).is_file():
            error = error_line(Path(error_file).read_text(errors="replace"))
        return update_trial(folder, **identity(trial_id, config), status=TrialStatus.ERROR,
                            stop_reason=StopReason.FAILED,
                            error=error or "the trial failed without an error message (see Tune's log)")

    def reported(self, trial_id: str, config: Mapping[str, Any], result: Mapping[str, Any]) -> bool:
        """Make sure the epoch in ``result`` is in the record: written here when the trial's worker wrote
        it elsewhere (another host's disk). Returns whether this wrote it."""
        folder = record_folder(trial_id, config)
        if folder is None or "epoch" not in result:
            return False
        line = record_line(trial_id, result)
        key = (line.get("epoch"), line.get("trial_wall_s"))
        # The worker writes a line before it reports, and is at most a report or two ahead of the driver.
        if any((row.get("epoch"), row.get("trial_wall_s")) == key for row in read_last_epochs(folder)):
            return False
        if not (folder / TRIAL_FILE).is_file():
            update_trial(folder, **identity(trial_id, config), **RUNNING, error=None,
                         node_id=result.get("node_id"), hostname=result.get("hostname"))
        append_epoch(folder, line)
        return True

    def on_step_begin(self, iteration: int, trials: list[Any], **info: Any) -> None:
        """Keep Tune's own list of trials (the list it appends new trials to) to see what each save holds."""
        self._trials = trials

    def get_state(self) -> dict[str, Any] | None:
        """Tune is saving its experiment state (it asks each callback): every trial it holds is in it.
        Returns None: this callback keeps nothing in Tune's state."""
        self.saved = {t.trial_id for t in getattr(self, "_trials", [])}
        return None

    def __getstate__(self) -> dict[str, Any]:
        """Plain data when pickled (Tune pickles its callbacks with the experiment): without Tune's trials."""
        return {k: v for k, v in self.__dict__.items() if k != "_trials"}

    def on_trial_start(self, iteration: int, trials: list[Any], trial: Any, **info: Any) -> None:
        """``trial`` starts (or restarts): its ``trial.json`` says so before its worker runs."""
        folder = record_folder(trial.trial_id, trial.config)
        if folder is not None:
            update_trial(folder, **identity(trial.trial_id, trial.config), **RUNNING, error=None)
        self.started += 1
        record_again()
        failpoint("driver.trial-started", phase=trial.config.get(f"{META}phase", Phase.SEARCH), started=self.started,
                  unsaved=trial.trial_id not in self.saved, trial_id=trial.trial_id)

    def on_trial_result(self, iteration: int, trials: list[Any], trial: Any, result: dict[str, Any],
                        **info: Any) -> None:
        """A report of ``trial``: its epoch goes into the record if the worker's line is not there."""
        self.reported(trial.trial_id, trial.config, result)
        failpoint("driver.trial-result", phase=trial.config.get(f"{META}phase", Phase.SEARCH),
                  epoch=result.get("epoch", 0), trial_id=trial.trial_id,
                  **({"round": trial.config[f"{META}round"]} if f"{META}round" in trial.config else {}))

    def on_trial_complete(self, iteration: int, trials: list[Any], trial: Any, **info: Any) -> None:
        """Tune ended ``trial``: completed, or stopped early by the scheduler or the time budget."""
        checkpoint = getattr(trial, "checkpoint", None)
        artifacts = str(Path(checkpoint.path) / "artifacts") if checkpoint is not None else None
        self.ended(trial.trial_id, trial.config, trial.last_result or {}, artifacts)

    def on_trial_error(self, iteration: int, trials: list[Any], trial: Any, **info: Any) -> None:
        """``trial`` failed after its retries."""
        self.errored(trial.trial_id, trial.config, getattr(trial, "error_file", None))

    def on_experiment_end(self, trials: list[Any], **info: Any) -> None:
        """The phase ended: a record of this phase that Tune does not hold is a trial a killed driver
        started before Tune saved it (Tune ran that work again under a new id), so it no longer counts."""
        retire_unknown([(t.trial_id, t.config) for t in trials])


def retire_unknown(trials: Sequence[tuple[str, Mapping[str, Any]]]) -> list[str]:
    """Abandon the records of each phase (and study folder) in ``trials`` whose ids are not among them."""
    known: dict[tuple[str, str], set[str]] = {}
    for trial_id, config in trials:
        root = config.get(RECORD_KEY)
        if root:
            known.setdefault((str(root), str(config.get(f"{META}phase", Phase.SEARCH))), set()).add(trial_id)
    marked = []
    for (root, phase), ids in known.items():
        marked += abandon_trials(Path(root), phase, ids)
    if marked:
        log.warning("%d trial record(s) left by a killed driver no longer count: %s", len(marked), ", ".join(marked))
    return marked
