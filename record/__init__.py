"""The words and shapes of a study's record, and the study facts that its writer and its readers share.

``study/`` writes the record and ``results/`` (and ``ocr-study status``) read it; every word and shape comes
from here, spelled once:

- the words (:mod:`record._vocab`): :class:`Phase`, :class:`TrialStatus`, :class:`StopReason` (str enums:
  a member is its word in JSON, Parquet and MLflow) and :class:`Tag`, the MLflow tag keys;
- the files (:mod:`record._layout`): every name in a study folder;
- the documents: ``study.json`` as :class:`StudyDoc` and ``trial.json`` as :class:`TrialDoc` (typed,
  frozen; one writer and one reader each), ``epochs.jsonl`` appended line by line;
- the facts (:mod:`record._facts`): cell ids, planned reports, ASHA rungs, why a trial stopped, the one
  ranking of settings, where OCR parameters apply, how a metric reads;
- failpoints (:mod:`record._failpoints`);
- how a metric is named and scaled in MLflow (:mod:`record._mlflow`).

This package imports only the standard library: neither Ray, torch, pandas nor the training code, so that
every layer may use it.
"""

from record._facts import (
    BASE_CELL,
    CONTINUES_FROM,
    META,
    OCR_OFF,
    asha_rungs,
    best_setting,
    cell_id,
    config_reports,
    metric_text,
    ocr_applies,
    parse_cell,
    planned_epochs,
    ranked,
    reported_scale,
    stop_reason,
    trial_reports,
    value_text,
)
from record._failpoints import FAILPOINT_DIR_ENV, FAILPOINTS_ENV, FailpointError, failpoint, fired
from record._layout import (
    CONFIRM_TUNE_DIR,
    CURVES_TABLE,
    EPOCHS_FILE,
    HOME,
    MLFLOW_ARTIFACTS_DIR,
    MLFLOW_DB,
    PRIOR_FILE,
    REPORT_DIR,
    RESULTS_DIR,
    SPEC_FILE,
    STUDY_FILE,
    TRIAL_FILE,
    TRIALS_DIR,
    TRIALS_TABLE,
    TUNE_DIR,
    trial_folder,
    trial_folders,
)
from record._mlflow import is_percent, mlflow_metric, record_metric
from record._seeds import RULE_KEYS, SPENDINGS, SeedRule
from record._study import PhaseDoc, StudyDoc, read_study, write_study
from record._trial import (
    ABANDONED,
    TrialDoc,
    abandon_trials,
    append_epoch,
    read_epochs,
    read_last_epochs,
    read_trial,
    study_trials,
    update_trial,
    write_trial,
)
from record._vocab import PHASES, TAG_PREFIX, Decision, Phase, StopReason, Tag, TrialStatus

__all__ = [
    "ABANDONED",
    "BASE_CELL",
    "CONFIRM_TUNE_DIR",
    "CONTINUES_FROM",
    "CURVES_TABLE",
    "EPOCHS_FILE",
    "FAILPOINTS_ENV",
    "FAILPOINT_DIR_ENV",
    "HOME",
    "META",
    "MLFLOW_ARTIFACTS_DIR",
    "MLFLOW_DB",
    "OCR_OFF",
    "PHASES",
    "PRIOR_FILE",
    "REPORT_DIR",
    "RESULTS_DIR",
    "RULE_KEYS",
    "SPEC_FILE",
    "SPENDINGS",
    "STUDY_FILE",
    "TAG_PREFIX",
    "TRIALS_DIR",
    "TRIALS_TABLE",
    "TRIAL_FILE",
    "TUNE_DIR",
    "Decision",
    "FailpointError",
    "Phase",
    "PhaseDoc",
    "SeedRule",
    "StopReason",
    "StudyDoc",
    "Tag",
    "TrialDoc",
    "TrialStatus",
    "abandon_trials",
    "append_epoch",
    "asha_rungs",
    "best_setting",
    "cell_id",
    "config_reports",
    "failpoint",
    "fired",
    "is_percent",
    "metric_text",
    "mlflow_metric",
    "ocr_applies",
    "parse_cell",
    "planned_epochs",
    "ranked",
    "read_epochs",
    "read_last_epochs",
    "read_study",
    "read_trial",
    "record_metric",
    "reported_scale",
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
