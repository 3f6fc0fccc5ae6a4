"""Where a study's files are: ``<storage>/<name>/`` holds these names, and nothing else decides them.

```
<name>/spec.yaml                    the normalised spec (what `resume` reads back)
<name>/study.json                   phases, cells, planned trials and epochs (record._study)
<name>/trials/<trial id>/trial.json config, cell, seed, phase, status, stop reason, node, error
<name>/trials/<trial id>/epochs.jsonl  one line of metrics per epoch, appended
<name>/tune/                        Ray Tune's own storage (for resuming only; results never read it)
<name>/tune-confirm/                the same for the confirm phase
<name>/results/                     trials.parquet, curves.parquet (results.collect_study)
<name>/report/                      the report (results.write_report): tables, plots, report.html
<name>/mlflow.db                    MLflow's SQLite store (when the spec names no tracking.uri)
<name>/mlartifacts/                 its artifacts
<name>/prior.csv                    (a synthetic study only) the prior matrix the report shows
```

A local study's default storage, a remote study's mirror and the CLI's own files live under
:data:`HOME` (``.ocr-study`` in the folder the command runs in).
"""

from __future__ import annotations

import os
from pathlib import Path

SPEC_FILE = "spec.yaml"
STUDY_FILE = "study.json"
TRIALS_DIR = "trials"
TRIAL_FILE = "trial.json"
EPOCHS_FILE = "epochs.jsonl"
TUNE_DIR = "tune"
CONFIRM_TUNE_DIR = "tune-confirm"
RESULTS_DIR = "results"
TRIALS_TABLE = "trials.parquet"
CURVES_TABLE = "curves.parquet"
REPORT_DIR = "report"
MLFLOW_DB = "mlflow.db"
MLFLOW_ARTIFACTS_DIR = "mlartifacts"
PRIOR_FILE = "prior.csv"
HOME = ".ocr-study"


def trial_folder(study_dir: Path, trial_id: str) -> Path:
    """The record folder of one trial: ``<study>/trials/<trial id>``."""
    if not trial_id or "/" in trial_id or trial_id in (".", ".."):
        raise ValueError(f"trial id {trial_id!r} cannot name a folder")
    return Path(study_dir) / TRIALS_DIR / trial_id


def trial_folders(study_dir: Path) -> list[Path]:
    """Every trial record folder of a study, sorted by trial id (one listing: no look into each folder;
    a folder without a readable ``trial.json`` is skipped by its readers)."""
    root = Path(study_dir) / TRIALS_DIR
    try:
        names = sorted(entry.name for entry in os.scandir(root) if entry.is_dir())
    except (FileNotFoundError, NotADirectoryError):
        return []
    return [root / name for name in names]
