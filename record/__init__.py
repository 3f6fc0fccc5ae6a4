"""What a study leaves on disk, and the study facts that both its writer and its readers need.

``study/`` writes the record (``study.json``, one ``trial.json`` and ``epochs.jsonl`` per trial) and
``results/`` reads it; both import the facts from here (cell ids, planned epochs, ASHA rungs, the best
setting, where OCR parameters apply). This package imports only the standard library: neither Ray,
torch, pandas nor the training code, so that every layer may use it.
"""

from record._facts import (
    BASE_CELL,
    META,
    OCR_OFF,
    PHASES,
    asha_rungs,
    best_setting,
    cell_id,
    config_reports,
    ocr_applies,
    parse_cell,
    planned_epochs,
    stop_reason,
    trial_reports,
    value_text,
)
from record._failpoints import FAILPOINT_DIR_ENV, FAILPOINTS_ENV, FailpointError, failpoint, fired
from record._layout import (
    CONFIRM_TUNE_DIR,
    EPOCHS_FILE,
    RESULTS_DIR,
    SPEC_FILE,
    STUDY_FILE,
    TRIAL_FILE,
    TRIALS_DIR,
    TUNE_DIR,
    trial_folder,
    trial_folders,
)
from record._study import read_study, write_study
from record._trial import (
    ABANDONED,
    abandon_trials,
    append_epoch,
    read_epochs,
    read_last_epochs,
    read_trial,
    study_trials,
    update_trial,
    write_trial,
)

__all__ = [
    "ABANDONED",
    "BASE_CELL",
    "CONFIRM_TUNE_DIR",
    "EPOCHS_FILE",
    "FAILPOINTS_ENV",
    "FAILPOINT_DIR_ENV",
    "META",
    "OCR_OFF",
    "PHASES",
    "RESULTS_DIR",
    "SPEC_FILE",
    "STUDY_FILE",
    "TRIALS_DIR",
    "TRIAL_FILE",
    "TUNE_DIR",
    "FailpointError",
    "abandon_trials",
    "append_epoch",
    "asha_rungs",
    "best_setting",
    "cell_id",
    "config_reports",
    "failpoint",
    "fired",
    "ocr_applies",
    "parse_cell",
    "planned_epochs",
    "read_epochs",
    "read_last_epochs",
    "read_study",
    "read_trial",
    "stop_reason",
    "study_trials",
    "trial_folder",
    "trial_folders",
    "trial_reports",
    "update_trial",
    "value_text",
    "write_study",
    "write_trial",
]
