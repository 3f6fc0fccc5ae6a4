"""Links from the report to each trial's run in MLflow, when the tracking URI is an MLflow server.

The run of a trial is found by its tag :attr:`record.Tag.TRIAL_ID`; the link is the MLflow UI's
``<server>/#/experiments/<experiment id>/runs/<run id>``. A SQLite or file store has no UI address to link
to, so it gets no links. MLflow is imported here only, when called.
"""

from __future__ import annotations

import logging
import urllib.error
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlparse

import pandas as pd

from record import Phase, Tag
from results._collect_mlflow import mlflow_client, trial_runs
from results._schema import Dataset
from results._table import Table
from results._tables import cell_order

log = logging.getLogger(__name__)
SERVER_SCHEMES = ("http", "https")
HEALTH_TIMEOUT_S = 5.0


@dataclass(frozen=True)
class RunLinks:
    """Where a study lives in the MLflow UI: its runs table and each trial's run (trial id → URL)."""

    experiment_url: str
    runs: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if urlparse(self.experiment_url).scheme not in SERVER_SCHEMES:
            raise ValueError(f"RunLinks.experiment_url {self.experiment_url!r}: must be an http(s) URL of the "
                             "MLflow UI")


def is_server(tracking_uri: str | None) -> bool:
    """Whether ``tracking_uri`` is an MLflow server (``http``/``https``), the only kind with a UI to link."""
    return bool(tracking_uri) and urlparse(str(tracking_uri)).scheme in SERVER_SCHEMES


def run_url(server: str, experiment_id: str, run_id: str) -> str:
    """The MLflow UI's page of one run."""
    return f"{server.rstrip('/')}/#/experiments/{experiment_id}/runs/{run_id}"


def run_links(tracking_uri: str | None, experiment: str) -> RunLinks | None:
    """The links of a study's runs on the MLflow server ``tracking_uri``; None for a SQLite or file store,
    an experiment the server does not know, or a server that cannot be read (logged as a warning: the
    report stands without links)."""
    if not is_server(tracking_uri):
        return None
    server = str(tracking_uri).rstrip("/")
    try:
        _answers(server)  # MLflow's client retries a dead server for minutes; the report should not wait
        client = mlflow_client(server)
        found = client.get_experiment_by_name(experiment)
        if found is None:
            return None
        runs = trial_runs(client, [str(found.experiment_id)])
    except Exception as err:  # the report is worth having without links
        log.warning("no links to MLflow runs in the report: %s", err)
        return None
    exp = str(found.experiment_id)
    return RunLinks(f"{server}/#/experiments/{exp}/runs",
                    {_trial_id(r): run_url(server, exp, r.info.run_id) for r in runs})


def _answers(server: str, timeout: float = HEALTH_TIMEOUT_S) -> None:
    """Raise ``OSError`` unless the server answers its ``/health`` (401/403 count: it is there)."""
    try:
        with urllib.request.urlopen(f"{server}/health", timeout=timeout):
            return
    except urllib.error.HTTPError as err:
        if err.code not in (401, 403):
            raise


def _trial_id(run: Any) -> str:
    return str(run.data.tags[Tag.TRIAL_ID])


def runs_table(trials: pd.DataFrame, links: RunLinks, order: list[str] | None = None) -> Table:
    """Every trial with a link to its MLflow run: its phase (when the study has two), cell, setting, seed, why
    it stopped, its final val mIoU."""
    frame = trials.assign(cell=trials["cell"].astype(str))
    cells = order or sorted(frame["cell"].unique())
    frame = frame.assign(_order=frame["cell"].map({c: i for i, c in enumerate(cells)}))
    frame = frame.sort_values(["_order", "setting", "seed"], kind="stable").reset_index(drop=True)
    miou = frame["final_val_miou"] if "final_val_miou" in frame else pd.Series(float("nan"), index=frame.index)
    phases = frame["phase"].astype(str) if "phase" in frame else pd.Series(Phase.SEARCH.value, index=frame.index)
    display = pd.DataFrame({
        "trial": frame["trial_id"].astype(str), **({"phase": phases} if phases.nunique() > 1 else {}),
        "cell": frame["cell"], "setting": frame["setting"].astype(str),
        "seed": frame["seed"].astype(str), "stop reason": frame["stop_reason"].astype(str),
        "final val mIoU (%)": ["—" if pd.isna(v) else f"{100 * v:.2f}" for v in miou]})
    urls = tuple((i, "trial", links.runs[t]) for i, t in enumerate(display["trial"]) if t in links.runs)
    notes = (f"Each trial's run in MLflow (the study's runs table: {links.experiment_url}); final val mIoU at "
             "the trial's last epoch (early-stopped trials stopped before the last planned one).")
    return Table("runs", "Runs in MLflow", notes, frame.drop(columns="_order"), display,
                 ("setting", "seed", "final val mIoU (%)"), links=urls)


def report_runs_table(ds: Dataset, links: RunLinks) -> Table:
    """:func:`runs_table` of a collected study, cells in the report's order."""
    return runs_table(ds.trials, links, cell_order(ds, sorted(ds.trials["cell"].astype(str).unique())))
