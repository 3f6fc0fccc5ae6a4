"""MLflow as a view of the Tune study: one parent run per study, one nested run per trial.

Logging happens in the driver, from Tune's callbacks, with one ``log_batch`` call per report. A trial
that is retried or resumed finds its run again by the ``ocr_study.trial_id`` tag: one run per trial, ever.
The callback holds only plain data when pickled (Tune stores it with the experiment for resume).

Why not Ray's own ``ray.air.integrations.mlflow.MLflowLoggerCallback``: it makes one flat run per trial
and logs each result as it comes, and it does not find a trial's run again after a retry or a resume (a
resumed study would get a second run per trial); it has no parent run, no tags to filter completed runs by,
no per-class IoU from checkpoints, and no way to retire the runs of trials a killed driver left. This
callback does those, with one ``log_batch`` per report. The tag keys are :class:`record.Tag`, which
``results`` reads back.
"""

from __future__ import annotations

import importlib.metadata
import json
import logging
import re
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from ray.tune import Callback

from record import (
    META,
    REPORT_DIR,
    SPEC_FILE,
    Phase,
    StopReason,
    Tag,
    TrialStatus,
    config_reports,
    ocr_applies,
    parse_cell,
    planned_epochs,
    stop_reason,
)

log = logging.getLogger(__name__)
METRIC_PREFIXES = ("val_", "train_")
METRIC_KEYS = ("best_val_miou", "images_per_s", "epoch_seconds", "pseudo_miou", "trial_cpu_s", "trial_wall_s",
               "iteration")
IOU_PREFIX = "iou/"  # per-class validation IoU, one metric per class
# MLflow 3's UI opens an experiment on its training view (runs table) only with this tag; without it,
# on the GenAI overview (traces, latency, tokens).
EXPERIMENT_KIND = ("mlflow.experimentKind", "custom_model_development")
NAME_SYMBOLS = {"ocr.delta": "δ", "ocr.tau": "τ"}  # sampled values shown in run names
SIGNIFICANT = 4  # digits of a float param
BATCH = 100  # MLflow takes at most 100 params per log_batch
MAX_TAG = 8000  # characters of a tag value
# A view of the runs table that MLflow's UI loads from an experiment tag (``?viewStateShareKey=``): nested
# runs shown flat, sorted by the study metric, with the columns a reader compares.
VIEW_KEY = "ocrstudy"
VIEW_TAG = f"mlflow.sharedViewState.{VIEW_KEY}"


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


def param_text(value: Any) -> str:
    """A param as MLflow shows it: floats to 4 significant digits (``0.0612``, not ``0.061234567...``)."""
    if isinstance(value, float):
        return f"{value:.{SIGNIFICANT}g}"
    return str(value)[:500]


def trial_params(config: dict[str, Any]) -> dict[str, str]:
    """The params of a trial's run: its settings that apply (no δ, τ when the OCR loss is off), rounded;
    a key left at ``auto`` shows what it stood for (``data.tags`` = ``gt (auto)``)."""
    selection = config.get("ocr.selection")
    params = {k: param_text(v) for k, v in sorted(config.items())
              if not k.startswith(META) and ocr_applies(k, selection)}
    for key, value in _auto_values(config).items():
        if key in params:
            params[key] = f"{value} (auto)"
    return params


def _auto_values(config: dict[str, Any]) -> dict[str, str]:
    from pipelines.config import auto_values, from_flat

    try:
        return auto_values(from_flat({k: v for k, v in config.items() if not k.startswith(META)}))
    except (ValueError, TypeError):  # not a whole trial config (the driver validated the real ones)
        return {}


def cell_label(cell: str) -> str:
    """A cell's short name: its values (``"oc"``, ``"oc · cooc_minmax"``), or the id itself without a grid."""
    values = list(parse_cell(cell).values())
    return " · ".join(values) if values else cell


def run_name(config: dict[str, Any]) -> str:
    """``"oc · δ 7.7 · τ 0.06 · s1"``: cell, the sampled values that apply (2 digits), seed, and the phase."""
    meta = {k[len(META):]: v for k, v in config.items() if k.startswith(META)}
    parts = [cell_label(str(meta.get("cell", "")))] if meta.get("cell") else []
    selection = config.get("ocr.selection")
    for key, symbol in NAME_SYMBOLS.items():
        value = config.get(key)
        if isinstance(value, (int, float)) and not isinstance(value, bool) and ocr_applies(key, selection):
            parts.append(f"{symbol} {value:.2g}")
    if config.get("seed") is not None:
        parts.append(f"s{config['seed']}")
    if meta.get("phase"):
        parts.append(str(meta["phase"]))
    return " · ".join(parts)


def metric_key(text: str) -> str:
    """``text`` with the characters MLflow refuses in a metric key replaced by ``_``."""
    return re.sub(r"[^A-Za-z0-9_\-. :/]", "_", text.replace(" · ", "_"))


def flat_params(doc: dict[str, Any], prefix: str = "") -> dict[str, str]:
    """A nested spec as ``{"scheduler.type": "asha", ...}`` (lists as text), for the parent run's params."""
    from pipelines.config import nested_to_flat

    return {key: param_text(value) for key, value in nested_to_flat(doc, prefix).items() if value is not None}


def describe(spec: dict[str, Any], spec_hash: str) -> str:
    """The parent run's description (Markdown): what the study varies, samples and repeats."""
    grid = spec.get("grid") or {}
    search = spec.get("search") or {}
    lines = [f"**Study {spec.get('name', '')}** (spec {spec_hash[:12]}): one nested run per trial."]
    if grid:
        lines.append("- grid: " + "; ".join(f"{k} ∈ {{{', '.join(map(str, v))}}}" for k, v in grid.items()))
    if search:
        lines.append(f"- search: {', '.join(search.get('params', {}))} ({search.get('sampler', '')}, "
                     f"{search.get('samples', '')} samples per cell)")
    sched = spec.get("scheduler") or {}
    lines.append(f"- seeds: {', '.join(map(str, spec.get('seeds', [])))}; scheduler {sched.get('type', '')} "
                 f"on {sched.get('metric', '')} ({sched.get('mode', '')})")
    lines.append(f"- runs stopped early (ASHA) have status KILLED and the tag {Tag.COMPLETED} = false; "
                 f"filter `tags.{Tag.COMPLETED} = 'true'` to average completed runs only")
    return "\n".join(lines)


def view_state(metric: str, parent: str) -> str:
    """The runs table's view (JSON): sorted by ``metric`` (which lists the nested runs flat), with the
    metric, the sampled params, whether the run completed and its cell as columns."""
    columns = [f"metrics.`{metric}`", "metrics.`best_val_miou`", *(f"params.`{k}`" for k in NAME_SYMBOLS),
               f"tags.`{Tag.COMPLETED}`", f"tags.`{Tag.CELL}`"]
    return json.dumps({"orderByKey": f"metrics.`{metric}`", "orderByAsc": False, "selectedColumns": columns,
                       "runsExpanded": {parent: True}})


def read_class_iou(checkpoint: Any) -> dict[str, float]:
    """``{"iou/<class>": value}`` from the ``artifacts/class_iou.json`` of a Tune checkpoint (local or on a
    store); empty when there is none. Classes never seen (``null``) are left out."""
    path = f"{checkpoint.path}/artifacts/class_iou.json"
    try:
        fs = getattr(checkpoint, "filesystem", None)
        if fs is not None:
            with fs.open_input_stream(path) as stream:
                doc = json.loads(stream.read())
        else:
            doc = json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return {}
    return {f"{IOU_PREFIX}{metric_key(k)}": float(v) for k, v in doc.items() if isinstance(v, (int, float))}


class MLflowTracking(Callback):
    """Mirror every trial of a study into MLflow (batched, re-attaching on retry and resume)."""

    def __init__(self, uri: str, experiment: str, study: str, spec_hash: str,
                 artifact_location: str | None = None, scheduler: str = "none",
                 max_epochs: int | None = None, spec: dict[str, Any] | None = None,
                 rungs: tuple[int, ...] = ()) -> None:
        self.uri, self.experiment, self.study, self.spec_hash = uri, experiment, study, spec_hash
        self.artifact_location = artifact_location
        # A trial's planned epochs and why it stopped depend on them (the record's stop reason, exactly).
        self.scheduler, self.max_epochs, self.rungs = scheduler, max_epochs, tuple(rungs)
        self.spec = spec  # the study's spec as plain data: the parent run's params, artifact, description
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
        if found is None:
            return str(self._client.create_experiment(self.experiment, artifact_location=self.artifact_location,
                                                      tags={EXPERIMENT_KIND[0]: EXPERIMENT_KIND[1]}))
        if found.tags.get(EXPERIMENT_KIND[0]) is None:  # made by an older version, or by hand
            self._client.set_experiment_tag(found.experiment_id, *EXPERIMENT_KIND)
        return str(found.experiment_id)

    def _find_run(self, tags: dict[str, str]) -> str | None:
        return find_run(self._client, self._experiment_id, tags)

    def _ensure_parent(self) -> str:
        tags = {Tag.STUDY.value: self.study, Tag.ROLE.value: "study"}
        found = self._find_run(tags)
        if found:
            return found
        run = self._client.create_run(self._experiment_id, run_name=self.study, tags={
            **tags, Tag.SPEC_HASH.value: self.spec_hash, Tag.GIT_COMMIT.value: self.commit,
            Tag.VERSION.value: self.version})
        run_id = str(run.info.run_id)
        spec = getattr(self, "spec", None) or {}
        if spec:
            self._describe_parent(run_id, spec)
        metric = str((spec.get("scheduler") or {}).get("metric") or "val_miou")
        self._client.set_experiment_tag(self._experiment_id, VIEW_TAG, view_state(metric, run_id))
        return run_id

    def _describe_parent(self, run_id: str, spec: dict[str, Any]) -> None:
        """The study on its parent run: the spec as params and as ``spec.yaml``, and a description."""
        import tempfile

        import yaml
        from mlflow.entities import Param, RunTag

        params = [Param(k, v) for k, v in sorted(flat_params(spec).items())]
        for i in range(0, len(params), BATCH):
            self._client.log_batch(run_id, params=params[i : i + BATCH])
        self._client.log_batch(run_id, tags=[RunTag("mlflow.note.content", describe(spec, self.spec_hash))])
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / SPEC_FILE
            path.write_text(yaml.safe_dump(spec, sort_keys=False))
            self._client.log_artifact(run_id, str(path))

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
        run_id = self._find_run({Tag.TRIAL_ID.value: trial.trial_id})
        if run_id is None:
            run_id = self._create_trial_run(client, trial)
        self._runs[trial.trial_id] = run_id
        return run_id

    def _create_trial_run(self, client: Any, trial: Any) -> str:
        from mlflow.entities import Param, RunTag

        config = dict(trial.config)
        meta = {k[len(META):]: v for k, v in config.items() if k.startswith(META)}
        cell, seed = str(meta.get("cell", "")), str(config.get("seed", ""))
        tags = {"mlflow.parentRunId": self._parent, Tag.TRIAL_ID.value: trial.trial_id, Tag.CELL.value: cell,
                Tag.SETTING.value: str(meta.get("setting", "")), Tag.SEED.value: seed,
                Tag.STUDY.value: self.study, Tag.SPEC_HASH.value: self.spec_hash,
                Tag.GIT_COMMIT.value: self.commit, Tag.VERSION.value: self.version,
                Tag.PHASE.value: str(meta.get("phase", Phase.SEARCH))}
        if "round" in meta:  # a sequential confirm trial: the round its seed belongs to
            tags[Tag.ROUND.value] = str(meta["round"])
        exact = json.dumps({k: v for k, v in config.items() if not k.startswith(META)}, sort_keys=True)
        if len(exact) <= MAX_TAG:  # the config unrounded, for rebuilding the dataset from MLflow
            tags[Tag.CONFIG.value] = exact
        name = run_name(config)
        run = client.create_run(self._experiment_id, run_name=name, tags=tags)
        params = [Param(k, v) for k, v in trial_params(config).items()]
        note = f"trial {trial.trial_id}: cell {cell}, setting {meta.get('setting', 0)}, seed {seed}"
        for i in range(0, max(len(params), 1), BATCH):
            client.log_batch(run.info.run_id, params=params[i : i + BATCH],
                             tags=[RunTag("mlflow.note.content", note)] if i == 0 else [])
        return str(run.info.run_id)

    def on_trial_start(self, iteration: int, trials: list[Any], trial: Any, **info: Any) -> None:
        """Create or re-attach the trial's run."""
        self.client.set_terminated(self.run_for(trial), status=TrialStatus.RUNNING.value)

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

    def on_checkpoint(self, iteration: int, trials: list[Any], trial: Any, checkpoint: Any, **info: Any) -> None:
        """Log the epoch's per-class validation IoU (``iou/<class>``) from the checkpoint's artifacts."""
        from mlflow.entities import Metric

        values = read_class_iou(checkpoint)
        if not values:
            return
        step = int((trial.last_result or {}).get("epoch", 0))
        now = int(time.time() * 1000)
        self.client.log_batch(self.run_for(trial), metrics=[Metric(k, v, now, step) for k, v in values.items()])

    def on_trial_complete(self, iteration: int, trials: list[Any], trial: Any, **info: Any) -> None:
        """Upload the trial's artifacts and close its run: ``FINISHED`` when it ran every planned epoch,
        else ``KILLED`` with a name marker (``· stopped e2``) and ``ocr_study.completed = false``."""
        from mlflow.entities import RunTag

        run_id = self.run_for(trial)
        reason, epochs = self.stop_tag(trial)
        completed = reason == StopReason.COMPLETED
        tags = [RunTag(Tag.STOP_REASON.value, reason.value), RunTag(Tag.COMPLETED.value, str(completed).lower())]
        if not completed:
            tags += [RunTag(Tag.STOP_EPOCH.value, str(epochs)),
                     RunTag("mlflow.runName", f"{run_name(dict(trial.config))} · stopped e{epochs}")]
        self.client.log_batch(run_id, tags=tags)
        self._log_artifacts(run_id, trial)
        self.client.set_terminated(run_id, status="FINISHED" if completed else "KILLED")

    def stop_tag(self, trial: Any) -> tuple[StopReason, int]:
        """Why a trial Tune ended stopped, as its record says it (:func:`record.stop_reason`), and its last
        epoch."""
        epochs = int(trial.last_result.get("epoch", 0)) if trial.last_result else 0
        scheduler = getattr(self, "scheduler", "none")
        planned = planned_epochs(config_reports(trial.config), scheduler, getattr(self, "max_epochs", None))
        reason, _ = stop_reason(TrialStatus.TERMINATED, epochs, planned, scheduler, getattr(self, "rungs", ()))
        return reason, epochs

    def on_trial_error(self, iteration: int, trials: list[Any], trial: Any, **info: Any) -> None:
        """Close the trial's run as failed, with the error as a tag."""
        run_id = self.run_for(trial)
        error = ""
        if getattr(trial, "error_file", None) and Path(trial.error_file).exists():
            error = Path(trial.error_file).read_text()[-4000:]
        self.client.set_tag(run_id, Tag.STOP_REASON.value, StopReason.FAILED.value)
        self.client.set_tag(run_id, Tag.COMPLETED.value, "false")
        self.client.set_tag(run_id, Tag.ERROR.value, error.strip().splitlines()[-1][:4000] if error else "")
        self.client.set_terminated(run_id, status="FAILED")

    def _log_artifacts(self, run_id: str, trial: Any) -> None:
        checkpoint = getattr(trial, "checkpoint", None)
        if checkpoint is None:
            return
        import pyarrow.fs as pafs

        fs = getattr(checkpoint, "filesystem", None)
        if fs is None or isinstance(fs, pafs.LocalFileSystem):
            self._log_folder(run_id, Path(checkpoint.path) / "artifacts")
            return
        with checkpoint.as_directory() as local:  # a checkpoint on an object store: downloaded first
            self._log_folder(run_id, Path(local) / "artifacts")

    def _log_folder(self, run_id: str, folder: Path) -> None:
        if folder.is_dir():
            self.client.log_artifacts(run_id, str(folder))

    def cell_summary(self, trials: list[Any]) -> dict[str, float]:
        """Per cell, over its completed trials: mean final and best ``val_miou``, and how many completed."""
        finals: dict[str, list[tuple[float, float]]] = {}
        for trial in trials:
            last = trial.last_result or {}
            if (trial.status != TrialStatus.TERMINATED or self.stop_tag(trial)[0] != StopReason.COMPLETED
                    or "val_miou" not in last):
                continue
            cell = str(trial.config.get(f"{META}cell", ""))
            finals.setdefault(cell, []).append((float(last["val_miou"]), float(last.get("best_val_miou", 0.0))))
        out: dict[str, float] = {}
        for cell, values in sorted(finals.items()):
            key = metric_key(cell_label(cell))
            out[f"{key}/val_miou_mean"] = sum(v for v, _ in values) / len(values)
            out[f"{key}/best_val_miou_mean"] = sum(b for _, b in values) / len(values)
            out[f"{key}/completed"] = float(len(values))
        return out

    def on_experiment_end(self, trials: list[Any], **info: Any) -> None:
        """Log the per-cell summary on the parent run and close it."""
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        summary = [Metric(k, v, now, 0) for k, v in self.cell_summary(trials).items()]
        if summary:
            self.client.log_batch(self.parent_run_id, metrics=summary)
        self.retire_unknown(trials)
        self.client.set_terminated(self.parent_run_id, status="FINISHED")

    def retire_unknown(self, trials: list[Any]) -> list[str]:
        """Runs of this phase whose trial Tune does not hold (started by a driver killed before Tune saved
        them; Tune ran the work again under a new id): marked KILLED and abandoned, then deleted (MLflow
        keeps deleted runs restorable), so that the runs table holds one run per trial."""
        phases = {str(dict(t.config).get(f"{META}phase", Phase.SEARCH)) for t in trials}
        known = {t.trial_id for t in trials}
        gone = []
        for phase in phases:
            query = f"tags.`{Tag.STUDY}` = '{self.study}' and tags.`{Tag.PHASE}` = '{phase}'"
            for run in self.client.search_runs([self._experiment_id], filter_string=query, max_results=50000):
                trial_id = run.data.tags.get(Tag.TRIAL_ID.value)
                if trial_id and trial_id not in known:
                    if run.info.status == "RUNNING":  # MLflow's run status
                        self.client.set_terminated(run.info.run_id, status="KILLED")
                    self.client.set_tag(run.info.run_id, Tag.ABANDONED.value, "true")
                    self.client.delete_run(run.info.run_id)
                    gone.append(trial_id)
        return gone


def find_run(client: Any, experiment_id: str, tags: dict[str, str]) -> str | None:
    """The id of the first run of the experiment carrying all ``tags``, or ``None``."""
    query = " and ".join(f"tags.`{k}` = '{v}'" for k, v in tags.items())
    runs = client.search_runs([experiment_id], filter_string=query, max_results=1)
    return str(runs[0].info.run_id) if runs else None


def runs_url(server: str, uri: str, experiment: str) -> str:
    """The URL of the experiment's runs table on the MLflow UI at ``server`` (the server's root when the
    experiment does not exist yet)."""
    from mlflow.tracking import MlflowClient

    root = server.rstrip("/")
    try:
        found = MlflowClient(tracking_uri=uri).get_experiment_by_name(experiment)
    except Exception:  # the store may not exist yet: the UI's root still helps
        found = None
    if found is None:
        return f"{root}/"
    view = f"?viewStateShareKey={VIEW_KEY}" if VIEW_TAG in found.tags else ""
    return f"{root}/#/experiments/{found.experiment_id}/runs{view}"


def log_report(uri: str, experiment: str, study: str, files: dict[str, Path]) -> str | None:
    """Upload a study's report (HTML, tables, plots: the folder of ``files``) to its parent run under
    ``report/``; returns the parent run id, or ``None`` when the study has no parent run in ``uri``."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    found = client.get_experiment_by_name(experiment)
    if found is None or not files:
        return None
    parent = find_run(client, str(found.experiment_id), {Tag.STUDY.value: study, Tag.ROLE.value: "study"})
    if parent is None:
        return None
    folder = next(iter(files.values())).parent
    client.log_artifacts(parent, str(folder), artifact_path=REPORT_DIR)
    return parent
