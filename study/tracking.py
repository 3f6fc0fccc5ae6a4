"""MLflow as a view of the Tune study: one parent run per study, one nested run per trial.

Logging happens in the driver, from Tune's callbacks, with one ``log_batch`` call per report. A trial
that is retried or resumed finds its run again by the ``ocr_study.trial_id`` tag: one run per trial, ever.
The callback holds only plain data when pickled (Tune stores it with the experiment for resume).
"""

from __future__ import annotations

import importlib.metadata
import logging
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from ray.tune import Callback

from record import META, planned_epochs, stop_reason

log = logging.getLogger(__name__)
TAG = "ocr_study."
METRIC_PREFIXES = ("val_", "train_")
METRIC_KEYS = ("best_val_miou", "images_per_s", "epoch_seconds", "pseudo_miou", "trial_cpu_s", "trial_wall_s")


class TrackingError(RuntimeError):
    """The tracking store cannot be used; the message says which and how to fix it."""


def check_tracking_uri(uri: str, timeout: float = 5.0) -> None:
    """Fail early, before any trial starts, if an HTTP tracking server does not answer."""
    if not uri.startswith(("http://", "https://")):
        return
    try:
        with urllib.request.urlopen(f"{uri.rstrip('/')}/health", timeout=timeout) as response:
            if response.status != 200:
                raise TrackingError(f"MLflow server {uri} answered {response.status} on /health")
    except urllib.error.HTTPError as err:
        if err.code in (401, 403):
            return  # reachable; authentication is MLflow's business (MLFLOW_TRACKING_USERNAME/PASSWORD)
        raise TrackingError(f"MLflow server {uri} answered HTTP {err.code} on /health") from err
    except OSError as err:
        raise TrackingError(f"MLflow tracking server {uri} cannot be reached ({err}); start it, or set "
                            "tracking.uri in the spec (empty = an SQLite file in the study folder)") from err


def git_commit() -> str:
    """The commit of the checkout this package runs from, or ``"unknown"``."""
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=Path(__file__).parent, capture_output=True,
                             text=True, timeout=5, check=True)
        return out.stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def package_version() -> str:
    """The installed version of ocr-study."""
    try:
        return importlib.metadata.version("ocr-study")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def trial_metrics(result: dict[str, Any]) -> dict[str, float]:
    """The metrics of a Tune result that go to MLflow (a few stable keys)."""
    return {k: float(v) for k, v in result.items()
            if isinstance(v, (int, float)) and not isinstance(v, bool)
            and (k.startswith(METRIC_PREFIXES) or k in METRIC_KEYS)}


class MLflowTracking(Callback):
    """Mirror every trial of a study into MLflow (batched, re-attaching on retry and resume)."""

    def __init__(self, uri: str, experiment: str, study: str, spec_hash: str,
                 artifact_location: str | None = None, scheduler: str = "none",
                 max_epochs: int | None = None) -> None:
        self.uri, self.experiment, self.study, self.spec_hash = uri, experiment, study, spec_hash
        self.artifact_location = artifact_location
        self.scheduler, self.max_epochs = scheduler, max_epochs  # a trial's planned epochs depend on them
        self.commit, self.version = git_commit(), package_version()
        self._client: Any = None
        self._experiment_id = ""
        self._parent = ""
        self._runs: dict[str, str] = {}

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state.update(_client=None, _runs={}, _experiment_id="", _parent="")
        return state

    @property
    def client(self) -> Any:
        """The MLflow client, made on first use (never pickled)."""
        if self._client is None:
            from mlflow.tracking import MlflowClient

            self._client = MlflowClient(tracking_uri=self.uri)
            self._experiment_id = self._ensure_experiment()
            self._parent = self._ensure_parent()
        return self._client

    def _ensure_experiment(self) -> str:
        found = self._client.get_experiment_by_name(self.experiment)
        if found is not None:
            return str(found.experiment_id)
        return str(self._client.create_experiment(self.experiment, artifact_location=self.artifact_location))

    def _find_run(self, tags: dict[str, str]) -> str | None:
        query = " and ".join(f"tags.`{k}` = '{v}'" for k, v in tags.items())
        runs = self._client.search_runs([self._experiment_id], filter_string=query, max_results=1)
        return str(runs[0].info.run_id) if runs else None

    def _ensure_parent(self) -> str:
        tags = {f"{TAG}study": self.study, f"{TAG}role": "study"}
        found = self._find_run(tags)
        if found:
            return found
        run = self._client.create_run(self._experiment_id, run_name=self.study, tags={
            **tags, f"{TAG}spec_hash": self.spec_hash, f"{TAG}git_commit": self.commit,
            f"{TAG}version": self.version})
        return str(run.info.run_id)

    @property
    def parent_run_id(self) -> str:
        """The study's parent run."""
        _ = self.client
        return self._parent

    def run_for(self, trial: Any) -> str:
        """The trial's run id: found by its tag, or created (with params and tags) the first time."""
        if trial.trial_id in self._runs:
            return self._runs[trial.trial_id]
        client = self.client
        run_id = self._find_run({f"{TAG}trial_id": trial.trial_id})
        if run_id is None:
            run_id = self._create_trial_run(client, trial)
        self._runs[trial.trial_id] = run_id
        return run_id

    def _create_trial_run(self, client: Any, trial: Any) -> str:
        from mlflow.entities import Param, RunTag

        config = dict(trial.config)
        meta = {k[len(META):]: v for k, v in config.items() if k.startswith(META)}
        cell, seed = str(meta.get("cell", "")), str(config.get("seed", ""))
        tags = {"mlflow.parentRunId": self._parent, f"{TAG}trial_id": trial.trial_id, f"{TAG}cell": cell,
                f"{TAG}setting": str(meta.get("setting", "")), f"{TAG}seed": seed,
                f"{TAG}study": self.study, f"{TAG}spec_hash": self.spec_hash,
                f"{TAG}git_commit": self.commit, f"{TAG}version": self.version,
                f"{TAG}phase": str(meta.get("phase", "search"))}
        name = f"{meta.get('phase', 'search')} {cell} #{meta.get('setting', 0)} seed {seed}"
        run = client.create_run(self._experiment_id, run_name=name, tags=tags)
        params = [Param(k, str(v)[:500]) for k, v in sorted(config.items()) if not k.startswith(META)]
        client.log_batch(run.info.run_id, params=params, tags=[RunTag("mlflow.note.content", name)])
        return str(run.info.run_id)

    def on_trial_start(self, iteration: int, trials: list[Any], trial: Any, **info: Any) -> None:
        """Create or re-attach the trial's run."""
        self.client.set_terminated(self.run_for(trial), status="RUNNING")

    def on_trial_result(self, iteration: int, trials: list[Any], trial: Any, result: dict[str, Any],
                        **info: Any) -> None:
        """Log one epoch's metrics in a single batch (not a failing trial's last report: it repeats one)."""
        from mlflow.entities import Metric

        from study.failures import is_fatal

        if is_fatal(result):
            return

        step = int(result.get("epoch", result.get("training_iteration", 0)))
        now = int(time.time() * 1000)
        metrics = [Metric(k, v, now, step) for k, v in trial_metrics(result).items()]
        self.client.log_batch(self.run_for(trial), metrics=metrics)

    def on_trial_complete(self, iteration: int, trials: list[Any], trial: Any, **info: Any) -> None:
        """Upload the trial's artifacts and close its run (early-stopped trials say so in a tag)."""
        run_id = self.run_for(trial)
        self.client.set_tag(run_id, f"{TAG}stop_reason", self.stop_tag(trial))
        self._log_artifacts(run_id, trial)
        self.client.set_terminated(run_id, status="FINISHED")

    def stop_tag(self, trial: Any) -> str:
        """``completed`` when the trial ran its planned epochs, else ``early_stopped_at_epoch_N``."""
        epochs = int(trial.last_result.get("epoch", 0)) if trial.last_result else 0
        seg_epochs = trial.config.get("seg.epochs")
        planned = planned_epochs(None if seg_epochs is None else int(seg_epochs),
                                 getattr(self, "scheduler", "none"), getattr(self, "max_epochs", None))
        reason, _ = stop_reason("TERMINATED", epochs, planned)
        return "completed" if reason == "completed" else f"early_stopped_at_epoch_{epochs}"

    def on_trial_error(self, iteration: int, trials: list[Any], trial: Any, **info: Any) -> None:
        """Close the trial's run as failed, with the error as a tag."""
        run_id = self.run_for(trial)
        error = ""
        if getattr(trial, "error_file", None) and Path(trial.error_file).exists():
            error = Path(trial.error_file).read_text()[-4000:]
        self.client.set_tag(run_id, f"{TAG}stop_reason", "failed")
        self.client.set_tag(run_id, f"{TAG}error", error.strip().splitlines()[-1][:4000] if error else "")
        self.client.set_terminated(run_id, status="FAILED")

    def _log_artifacts(self, run_id: str, trial: Any) -> None:
        checkpoint = getattr(trial, "checkpoint", None)
        if checkpoint is None:
            return
        folder = Path(checkpoint.path) / "artifacts"
        if folder.is_dir():
            self.client.log_artifacts(run_id, str(folder))

    def on_experiment_end(self, trials: list[Any], **info: Any) -> None:
        """Close the parent run."""
        self.client.set_terminated(self.parent_run_id, status="FINISHED")
