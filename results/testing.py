"""Testing helpers: a synthetic study written in the study record's format (:mod:`record`).

For tests and benchmarks, not for reading studies (like :mod:`numpy.testing`): import it as
``from results.testing import SyntheticStudy, write_synthetic_study``; :mod:`results` does not re-export it.

It writes what a real study's record holds in ``<storage>/<name>/``: ``study.json``, and per trial
``trials/<id>/trial.json`` (config, status, node, error) and ``trials/<id>/epochs.jsonl`` (one line of
metrics per epoch), with ``prior.csv`` under ``tune/<trial>/checkpoint_*/artifacts/`` (where the record's
``artifacts`` points). The numbers are made up but shaped like a study: an OCR cell effect, a δ optimum,
seed noise, ASHA stopping weak trials at its rungs.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from record import (
    META,
    Phase,
    StudyDoc,
    TrialDoc,
    TrialStatus,
    append_epoch,
    asha_rungs,
    cell_id,
    trial_folder,
    write_study,
    write_trial,
)

SESSION = "2026-11-25_12-00-00"  # in the names of the trials' Tune folders
CELL_EFFECT = {"none": 0.0, "all": 0.015, "oc": 0.03}
PRIOR_EFFECT = {"cooc_minmax": 0.005, "uniform": -0.01, "identity": -0.005}
CLASSES = ("background", "digit0", "digit1", "digit2")
SEARCHED = ("ocr.delta", "ocr.tau")
SPEC_HASH = "0123456789ab"
ERROR = "pipelines.engine.NonFiniteLossError: non-finite loss in stage 'seg' at epoch 2"


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


def _study_doc(study: SyntheticStudy, trials: int) -> dict[str, Any]:
    """The ``study.json`` a real study of this shape writes."""
    grid: dict[str, list[str]] = {"ocr.selection": list(study.selections)}
    if study.priors:
        grid["ocr.prior"] = list(study.priors)
    cells = []
    for c in _cells(study):
        settings = 1 if c["ocr.selection"] == "none" else study.settings
        cells.append({"id": cell_id(c), "values": c, "params": [] if settings == 1 else list(SEARCHED),
                      "settings": settings, "trials": settings * len(study.seeds)})
    defaults = {"ocr.selection": "oc", **({"ocr.prior": "cooc_minmax"} if study.priors else {})}
    return {"name": study.name, "spec_hash": SPEC_HASH, "metric": "val_miou", "mode": "max",
            "scheduler": "asha" if study.asha else "none",
            "rungs": list(asha_rungs(1, 2, study.epochs)) if study.asha else [], "max_epochs": study.epochs,
            "epochs_planned": study.epochs, "grid": grid,
            "defaults": defaults,
            "search_keys": list(SEARCHED), "log_keys": ["ocr.tau"], "seeds": list(study.seeds), "gpus": 0.0,
            "planned_trials": trials, "phases": [{"name": "search", "trials": trials, "cells": cells}]}


def _config(study: SyntheticStudy, cell: dict[str, str], setting: int, seed: int, delta: float,
            tau: float) -> dict[str, Any]:
    filler = {f"data.extra.key_{i:02d}": 0.5 * i for i in range(study.extra_keys)}  # a real config's size
    return {**filler, "data.name": "digits", "cam.epochs": 6, "seg.epochs": study.epochs, "seg.lr": 0.003,
            "ocr.group": "paper", "ocr.prior": "cooc_minmax", **cell, "ocr.delta": delta, "ocr.tau": tau,
            "ocr.weight": 1.0, "amp": True, "device": "cpu", "threads": 1, "seed": seed,
            f"{META}cell": cell_id(cell), f"{META}setting": setting, f"{META}study": study.name,
            f"{META}spec_hash": SPEC_HASH}


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


def _write_trial(study_dir: Path, trial: _Trial, study: SyntheticStudy) -> None:
    folder = trial_folder(study_dir, trial.trial_id)
    best = 0.0
    for epoch in range(1, trial.epochs + 1):
        metrics = _metrics(trial, epoch, study.epochs, best)
        best = metrics["best_val_miou"]
        append_epoch(folder, {"trial_id": trial.trial_id, **metrics, "trial_wall_s": 2.0 + 0.6 * epoch})
    if trial.status == "RUNNING":  # a report being written right now
        with open(folder / "epochs.jsonl", "a") as f:
            f.write(json.dumps({"trial_id": trial.trial_id, "epoch": trial.epochs + 1})[:20])
    artifacts = None
    if study.artifacts and trial.epochs:
        artifacts = study_dir / "tune" / trial.dirname / f"checkpoint_{trial.epochs - 1:06d}" / "artifacts"
        _write_prior(artifacts, trial)
    error = ERROR if trial.status == "ERROR" else None
    write_trial(folder, TrialDoc(trial.trial_id, study=study.name, phase=Phase.SEARCH,
                                 cell=trial.config[f"{META}cell"], setting=trial.config[f"{META}setting"],
                                 seed=trial.config["seed"], config=trial.config, status=TrialStatus(trial.status),
                                 node_id=f"node{trial.index % 3:056d}", hostname="vm", error=error,
                                 artifacts=None if artifacts is None else str(artifacts)))


def _write_prior(folder: Path, trial: _Trial) -> None:
    folder.mkdir(parents=True)
    k = len(CLASSES)
    rng = np.random.default_rng(trial.index)
    matrix = np.eye(k) + np.triu(rng.uniform(0.0, 0.5, (k, k)), 1)
    rows = [",".join(["", *CLASSES])] + [",".join([n, *(f"{x:.6g}" for x in r)]) for n, r in zip(CLASSES, matrix,
                                                                                                strict=True)]
    (folder / "prior.csv").write_text("\n".join(rows) + "\n")


def write_synthetic_study(storage: Path, study: SyntheticStudy | None = None) -> Path:
    """Write a synthetic study under ``storage/<name>`` in the record's format; returns the study folder.

    Args:
        storage: the folder that holds studies (created if missing).
        study: its shape; the defaults give 21 trials with ASHA stops and one failed trial.
    """
    study = study or SyntheticStudy()
    folder = storage / study.name
    folder.mkdir(parents=True)
    trials = _plan(study, np.random.default_rng(study.seed))
    _assign_epochs(study, trials)
    write_study(folder, StudyDoc.from_json(_study_doc(study, len(trials))))
    for trial in trials:
        _write_trial(folder, trial, study)
    return folder
