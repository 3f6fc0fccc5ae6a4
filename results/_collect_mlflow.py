"""Rebuild a study's dataset from its MLflow experiment, for studies whose own record is gone.

MLflow holds what ``study.tracking`` mirrored: one nested run per trial (tags ``ocr_study.*``, params = the
flat config as text, the exact config as the artifact ``trial_config.json``, metrics per epoch with
``step = epoch`` under the names and units :func:`record.mlflow_metric` gives them, read back with
:func:`record.record_metric`). Without the artifact (a study of an older version kept the exact config in
the tag ``ocr_study.config``), params are typed back from text (bool, int, float, else string). What
MLflow does not hold stays empty: ``node_id`` and ``hostname``; ``wall_s`` is the
run's end − start rather than the trial's own ``trial_wall_s``; ``error`` is the tag (the error file's last line).
MLflow is imported here only, when called.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

import pandas as pd

from record import META, StopReason, Tag, TrialStatus, record_metric
from results._errors import ResultsError
from results._schema import write_dataset
from results._study_info import StudyInfo, infer_info, param_value
from results._summary import build_trials, clean_curves

# MLflow's run status → the trial's (an early-stopped run is KILLED: Tune ended it).
STATUS = {"FINISHED": TrialStatus.TERMINATED, "FAILED": TrialStatus.ERROR, "RUNNING": TrialStatus.RUNNING,
          "SCHEDULED": TrialStatus.PENDING, "KILLED": TrialStatus.TERMINATED}
NUMERIC_META = ("setting", "round")
META_TAGS = (Tag.CELL, Tag.SETTING, Tag.STUDY, Tag.SPEC_HASH, Tag.PHASE, Tag.ROUND)  # mirrored into meta.* keys
CONFIG_ARTIFACT = "trial_config.json"  # the exact config a trial's run holds (study.tracking writes it)


def mlflow_client(tracking_uri: str) -> Any:
    """MLflow's client of ``tracking_uri`` (MLflow is imported here, when called)."""
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=tracking_uri)


def _experiment_id(client: Any, experiment: str | None) -> list[str]:
    if experiment is None:
        return [str(e.experiment_id) for e in client.search_experiments()]
    found = client.get_experiment_by_name(experiment)
    if found is None:
        names = sorted(e.name for e in client.search_experiments())
        raise ResultsError(f"no MLflow experiment {experiment!r} (known: {names or 'none'}); the experiment is "
                           "the study's name unless its spec sets tracking.experiment")
    return [str(found.experiment_id)]


def trial_runs(client: Any, experiment_ids: list[str]) -> list[Any]:
    """Every trial run (tagged with a trial id) of the experiments, all pages."""
    runs: list[Any] = []
    token = None
    while True:
        page = client.search_runs(experiment_ids, filter_string=f"tags.`{Tag.TRIAL_ID}` != ''",
                                  max_results=1000, page_token=token)
        runs.extend(page)
        token = page.token
        if not token:
            return runs


def _exact_config(client: Any, run: Any) -> dict[str, Any] | None:
    """The trial's exact config: the run's ``trial_config.json``, or the tag an older version wrote; None
    when the run has neither."""
    tags = run.data.tags
    if Tag.CONFIG in tags:
        return dict(json.loads(tags[Tag.CONFIG]))
    with tempfile.TemporaryDirectory(prefix="ocr-study-") as tmp:
        try:
            path = client.download_artifacts(run.info.run_id, CONFIG_ARTIFACT, tmp)
            return dict(json.loads(Path(path).read_text()))
        except Exception:  # MLflow raises its own errors for a missing artifact
            return None


def _config(client: Any, run: Any) -> dict[str, Any]:
    tags = run.data.tags
    exact = _exact_config(client, run)  # params are rounded and only those that apply
    config = exact if exact is not None else {k: param_value(v) for k, v in run.data.params.items()}
    for tag in META_TAGS:
        if tag in tags:
            config[f"{META}{tag.key}"] = param_value(tags[tag]) if tag.key in NUMERIC_META else tags[tag]
    return config


def _base_row(client: Any, run: Any) -> dict[str, Any]:
    tags, info = run.data.tags, run.info
    end = info.end_time if info.end_time else None
    status = STATUS.get(str(info.status), TrialStatus.RUNNING).value
    reason = tags.get(Tag.STOP_REASON)
    return {"trial_id": tags[Tag.TRIAL_ID], "config": _config(client, run), "status": status,
            "stop_reason": StopReason(reason).value if reason in set(StopReason) else None,  # else derived
            "stop_rung": int(tags[Tag.STOP_EPOCH]) if reason == StopReason.EARLY_STOPPED and
            str(tags.get(Tag.STOP_EPOCH, "")).isdigit() else None,
            "error": (tags.get(Tag.ERROR) or "") if status == TrialStatus.ERROR else None,
            "wall_s": (end - info.start_time) / 1000.0 if end and info.start_time else None,
            "node_id": None, "hostname": None, "git_commit": tags.get(Tag.GIT_COMMIT),
            "artifacts": info.artifact_uri}


def _history(client: Any, run: Any) -> pd.DataFrame:
    rows: dict[int, dict[str, Any]] = {}
    for key in sorted(run.data.metrics):
        named = record_metric(key)  # None: per-class IoU (the record keeps it as an artifact)
        if named is None:
            continue
        name, factor = named
        for m in sorted(client.get_metric_history(run.info.run_id, key), key=lambda m: (m.step, m.timestamp)):
            rows.setdefault(int(m.step), {"trial_id": run.data.tags[Tag.TRIAL_ID], "epoch": int(m.step)})[name] \
                = m.value * factor
    return pd.DataFrame(list(rows.values()))


def read_mlflow_study(tracking_uri: str, experiment: str) -> tuple[pd.DataFrame, pd.DataFrame, StudyInfo]:
    """The ``trials`` and ``curves`` frames of an MLflow experiment, and the study facts inferred."""
    client = mlflow_client(tracking_uri)
    runs = trial_runs(client, _experiment_id(client, experiment))
    if not runs:
        raise ResultsError(f"MLflow experiment {experiment!r} at {tracking_uri} has no trial runs "
                           f"(tagged {Tag.TRIAL_ID}): is it an ocr-study experiment?")
    base = pd.DataFrame([_base_row(client, r) for r in runs])
    name = str(base["config"].iloc[0].get(f"{META}study") or experiment)
    info = infer_info(name, base["config"].tolist())
    reports = pd.concat([_history(client, r) for r in runs], ignore_index=True)
    curves = clean_curves(reports, name)
    return build_trials(base, curves, info), curves, info


def collect_mlflow(tracking_uri: str, experiment: str, out: Path) -> Path:
    """Rebuild ``trials.parquet`` and ``curves.parquet`` from an MLflow experiment; returns ``out``.

    Args:
        tracking_uri: the MLflow store, e.g. ``sqlite:///.ocr-study/studies/quick/mlflow.db``.
        experiment: the experiment's name (the study's name unless its spec set ``tracking.experiment``).
        out: the folder to write into.
    """
    trials, curves, info = read_mlflow_study(tracking_uri, experiment)
    return write_dataset(trials, curves, Path(out), info, "mlflow")
