"""A synthetic study written in Ray Tune 2.60's own on-disk format, for tests and the scale benchmark.

It writes what a real study leaves in ``<storage>/<name>/``: ``spec.yaml`` and ``tune/`` with an
``experiment_state-*.json``, one folder per trial (``params.json``, ``result.json`` with one JSON object
per report line, Tune's fields and the whole config on every line, ``error.txt`` for failed trials and
``prior.csv`` under the last checkpoint's ``artifacts/``). The numbers are made up but shaped like a
study: an OCR cell effect, a δ optimum, seed noise, ASHA stopping weak trials at its rungs.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from results._study_info import asha_rungs

SESSION = "2026-11-25_12-00-00"
CELL_EFFECT = {"none": 0.0, "all": 0.015, "oc": 0.03}
PRIOR_EFFECT = {"cooc_minmax": 0.005, "uniform": -0.01, "identity": -0.005}
CLASSES = ("background", "digit0", "digit1", "digit2")


@dataclass(frozen=True)
class SyntheticStudy:
    """What to write: cells are ``ocr.selection`` values (× ``ocr.prior`` values when given, the ``none``
    cell merged); OCR cells sample δ and τ ``settings`` times, each run once per seed."""

    name: str = "synthetic"
    selections: tuple[str, ...] = ("none", "all", "oc")
    priors: tuple[str, ...] = ()
    settings: int = 3
    seeds: tuple[int, ...] = (0, 1, 2)
    epochs: int = 8
    asha: bool = True
    stop_fraction: float = 0.3
    failed: int = 1
    running: int = 0
    max_trials: int | None = None
    artifacts: bool = True
    extra_keys: int = 0
    seed: int = 0


@dataclass
class _Trial:
    index: int
    trial_id: str
    config: dict[str, Any]
    final: float
    epochs: int = 0
    status: str = "TERMINATED"

    @property
    def dirname(self) -> str:
        return f"train_trial_{self.trial_id}_{self.index + 1}_seed={self.config['seed']}_{SESSION}"


def _spec(study: SyntheticStudy, storage: Path) -> dict[str, Any]:
    scheduler: dict[str, Any] = {"type": "none", "metric": "val_miou", "mode": "max"}
    if study.asha:
        scheduler = {"type": "asha", "grace_period": 1, "reduction_factor": 2, "max_epochs": study.epochs,
                     "metric": "val_miou", "mode": "max"}
    grid: dict[str, list[str]] = {"ocr.selection": list(study.selections)}
    if study.priors:
        grid["ocr.prior"] = list(study.priors)
    return {"name": study.name, "trial": {"seg.epochs": study.epochs, "ocr.selection": "oc",
                                          "ocr.prior": "cooc_minmax", "ocr.delta": 6.0, "ocr.tau": 0.2},
            "grid": grid,
            "search": {"samples": study.settings, "sampler": "tpe", "seed": 0, "params": {
                "ocr.delta": {"type": "uniform", "low": 0.0, "high": 8.0},
                "ocr.tau": {"type": "loguniform", "low": 0.05, "high": 0.5}}, "conditions": {}},
            "seeds": list(study.seeds), "scheduler": scheduler, "max_concurrent": 2,
            "resources": {"cpus": 1.0, "gpus": 0.0}, "tracking": {"uri": None, "experiment": study.name},
            "storage": str(storage), "budget": {"max_trials": study.max_trials, "time_s": None}}


def _config(study: SyntheticStudy, cell: dict[str, str], setting: int, seed: int, delta: float,
            tau: float) -> dict[str, Any]:
    filler = {f"data.extra.key_{i:02d}": 0.5 * i for i in range(study.extra_keys)}  # a real config's size
    cell_id = ",".join(f"{k}={v}" for k, v in cell.items())
    return {**filler, "data.name": "digits", "cam.epochs": 6, "seg.epochs": study.epochs, "seg.lr": 0.003,
            "ocr.group": "paper", "ocr.prior": "cooc_minmax", **cell, "ocr.delta": delta, "ocr.tau": tau,
            "ocr.weight": 1.0, "amp": True, "device": "cpu", "threads": 1, "seed": seed, "meta.cell": cell_id,
            "meta.setting": setting, "meta.study": study.name, "meta.spec_hash": "0123456789ab"}


def _cells(study: SyntheticStudy) -> list[dict[str, str]]:
    """Grid cells; without OCR the prior does nothing, so ``none`` is one cell (as the spec merges it)."""
    cells = []
    for selection in study.selections:
        priors = study.priors if study.priors and selection != "none" else (None,)
        cells += [{"ocr.selection": selection, **({"ocr.prior": p} if p else {})} for p in priors]
    return cells


def _quality(cell: dict[str, str], delta: float) -> float:
    selection = cell["ocr.selection"]
    prior = PRIOR_EFFECT.get(cell.get("ocr.prior", ""), 0.0)
    return 0.40 + CELL_EFFECT.get(selection, 0.01) + (0.0 if selection == "none" else
                                                      prior - 0.002 * (delta - 4.0) ** 2)


def _plan(study: SyntheticStudy, rng: np.random.Generator) -> list[_Trial]:
    trials: list[_Trial] = []
    for cell in _cells(study):
        plain = cell["ocr.selection"] == "none"
        for setting in range(1 if plain else study.settings):
            delta = 6.0 if plain else round(float(rng.uniform(0.0, 8.0)), 6)
            tau = 0.2 if plain else round(float(math.exp(rng.uniform(math.log(0.05), math.log(0.5)))), 6)
            for seed in study.seeds:
                if study.max_trials is not None and len(trials) >= study.max_trials:
                    return trials
                final = _quality(cell, delta) + 0.01 * float(rng.standard_normal())
                trial_id = f"{int(rng.integers(0, 16**8)):08x}"
                trials.append(_Trial(len(trials), trial_id, _config(study, cell, setting, seed, delta, tau), final))
    return trials


def _assign_epochs(study: SyntheticStudy, trials: list[_Trial]) -> None:
    order = np.argsort(np.argsort([t.final for t in trials]))
    quantile = (order + 0.5) / max(len(trials), 1)
    milestones = asha_rungs(1, 2, study.epochs) if study.asha else ()
    for trial, q in zip(trials, quantile, strict=True):
        trial.epochs = study.epochs
        if milestones and q < study.stop_fraction:  # the weakest stop, the weaker the sooner
            trial.epochs = milestones[int(q / study.stop_fraction * len(milestones))]
    for trial in trials[len(trials) - study.failed - study.running:len(trials) - study.running]:
        trial.status, trial.epochs = "ERROR", min(1, study.epochs)
    for trial in trials[len(trials) - study.running:]:
        trial.status, trial.epochs = "RUNNING", max(1, study.epochs // 2)


def _metrics(trial: _Trial, epoch: int, total: int, best: float) -> dict[str, float]:
    shape = 1.0 - math.exp(-3.0 * epoch / total)
    miou = trial.final * shape
    oc_rate = 0.30 - 0.4 * (trial.final - 0.40) - 0.05 * shape
    return {"epoch": float(epoch), "val_miou": miou, "val_oracle_miou": miou + 0.05,
            "val_oc_rate": oc_rate, "val_oc_rate_fg": oc_rate + 0.02, "val_oc_image_rate": min(1.0, 2 * oc_rate),
            "val_pixel_acc": 0.8 + 0.1 * shape, "best_val_miou": max(best, miou),
            "train_loss": 2.0 - shape, "train_ce": 1.8 - shape, "train_ocr": 0.2,
            "images_per_s": 900.0 + trial.index % 7, "epoch_seconds": 0.5, "pseudo_miou": 0.31,
            "trial_cpu_s": 1.0 + 0.5 * epoch}


def _tune_fields(trial: _Trial, epoch: int, done: bool) -> dict[str, Any]:
    return {"node_id": f"node{trial.index % 3:056d}", "timestamp": 1795600000 + trial.index * 100 + epoch,
            "checkpoint_dir_name": f"checkpoint_{epoch - 1:06d}", "should_checkpoint": True, "done": done,
            "training_iteration": epoch, "trial_id": trial.trial_id, "date": "2026-11-25_12-00-00",
            "time_this_iter_s": 0.6, "time_total_s": 2.0 + 0.6 * epoch, "pid": 1000 + trial.index % 2,
            "hostname": "vm", "node_ip": "192.0.2.2"}


def _result_lines(trial: _Trial, total: int) -> tuple[list[str], dict[str, Any]]:
    config = json.dumps(trial.config)
    lines, best, last = [], 0.0, {}
    for epoch in range(1, trial.epochs + 1):
        done = epoch == trial.epochs and trial.status == "TERMINATED"
        last = {**_metrics(trial, epoch, total, best), **_tune_fields(trial, epoch, done)}
        best = last["best_val_miou"]
        tail = json.dumps({"time_since_restore": last["time_total_s"], "iterations_since_restore": epoch})
        lines.append(json.dumps(last)[:-1] + ', "config": ' + config + ", " + tail[1:])
    return lines, {**last, "config": trial.config}


def _write_trial(folder: Path, trial: _Trial, study: SyntheticStudy) -> dict[str, Any]:
    folder.mkdir(parents=True)
    (folder / "params.json").write_text(json.dumps(trial.config, indent=2, sort_keys=True))
    lines, last = _result_lines(trial, study.epochs)
    text = "".join(line + "\n" for line in lines)
    if trial.status == "RUNNING":
        text += lines[-1][: len(lines[-1]) // 2]  # a report being written right now
    (folder / "result.json").write_text(text)
    if trial.status == "ERROR":
        (folder / "error.txt").write_text(
            "Failure # 1 (occurred at 2026-11-25_12-00-05)\n\x1b[36mray::ImplicitFunc.train()\x1b[39m (pid=1)\n"
            '  File "pipelines/engine.py", line 132, in train_epoch\n'
            "pipelines.engine.NonFiniteLossError: non-finite loss in stage 'seg' at epoch 2\n\n"
            "During handling of the above exception, another exception occurred:\n\n"
            "TypeError: NonFiniteLossError.__init__() missing 3 required positional arguments\n")
    if study.artifacts and trial.epochs:
        _write_prior(folder / f"checkpoint_{trial.epochs - 1:06d}" / "artifacts", trial)
    return last


def _write_prior(folder: Path, trial: _Trial) -> None:
    folder.mkdir(parents=True)
    k = len(CLASSES)
    rng = np.random.default_rng(trial.index)
    matrix = np.eye(k) + np.triu(rng.uniform(0.0, 0.5, (k, k)), 1)
    rows = [",".join(["", *CLASSES])] + [",".join([n, *(f"{x:.6g}" for x in r)]) for n, r in zip(CLASSES, matrix,
                                                                                                strict=True)]
    (folder / "prior.csv").write_text("\n".join(rows) + "\n")


def _state_entry(trial: _Trial, last: dict[str, Any]) -> list[str]:
    info = {"stub": False, "trainable_name": "train_trial", "trial_id": trial.trial_id, "config": trial.config,
            "evaluated_params": trial.config, "status": trial.status, "relative_logdir": trial.dirname,
            "experiment_tag": f"{trial.index + 1}_seed={trial.config['seed']}", "max_failures": 2}
    error = "error.txt" if trial.status == "ERROR" else None
    runtime = {"start_time": 1795600000.0 + trial.index, "num_failures": 3 if error else 0,
               "num_failures_after_restore": 0, "error_filename": error,
               "pickled_error_filename": "error.pkl" if error else None, "last_result": last,
               "last_result_time": 1795600000.0 + trial.index, "_n_steps": [5, 10],
               "metric_analysis": {}, "metric_n_steps": {}}
    return [json.dumps(info, indent=2), json.dumps(runtime, indent=2)]


def write_synthetic_study(storage: Path, study: SyntheticStudy | None = None) -> Path:
    """Write a synthetic study under ``storage/<name>`` in Tune's format; returns the study folder.

    Args:
        storage: the folder that holds studies (created if missing).
        study: its shape; the defaults give 21 trials with ASHA stops and one failed trial.
    """
    study = study or SyntheticStudy()
    folder = storage / study.name
    tune_dir = folder / "tune"
    tune_dir.mkdir(parents=True)
    (folder / "spec.yaml").write_text(yaml.safe_dump(_spec(study, storage), sort_keys=False))
    trials = _plan(study, np.random.default_rng(study.seed))
    _assign_epochs(study, trials)
    entries = [_state_entry(t, _write_trial(tune_dir / t.dirname, t, study)) for t in trials]
    if study.running:
        entries = entries[:-1]  # the newest trial started after Tune last saved its state
    state = {"trial_data": entries, "runner_data": {"_session_str": SESSION}, "stats": {"start_time": 0.0}}
    (tune_dir / f"experiment_state-{SESSION}.json").write_text(json.dumps(state))
    return folder
