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

import contextlib
import importlib.metadata
import json
import logging
import os
import re
import shutil
import sqlite3
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
    mlflow_metric,
    ocr_applies,
    parse_cell,
    planned_epochs,
    stop_reason,
    value_text,
)

log = logging.getLogger(__name__)
METRIC_PREFIXES = ("val_", "train_", "test_")  # test_*: the held-out split, at a confirm trial's last report
METRIC_KEYS = ("best_val_miou", "images_per_s", "epoch_seconds", "pseudo_miou", "trial_cpu_s", "trial_wall_s",
               "iteration")
IOU_PREFIX = "iou/"  # per-class validation IoU, one metric per class
# MLflow 3.17's UI opens an experiment on its training view (runs table, "Model training" in the side bar)
# when this tag says so; without it, on the GenAI overview (traces, latency, tokens). A link into the runs
# tab also needs ``workflowType=machine_learning``: the UI's mode is otherwise the one the browser last
# used (GenAI by default), read from its local storage.
EXPERIMENT_KIND = ("mlflow.experimentKind", "custom_model_development")
WORKFLOW = "workflowType=machine_learning"
NAME_SYMBOLS = {"ocr.delta": "δ", "ocr.tau": "τ"}  # sampled values shown in run names
SIGNIFICANT = 4  # digits of a float param
BATCH = 100  # MLflow takes at most 100 params per log_batch
# The trial's config unrounded (params are rounded and only those that apply), for rebuilding the dataset
# from MLflow: an artifact, not a tag (MLflow's run page shows a tag that long as a cut, unreadable chip).
CONFIG_ARTIFACT = "trial_config.json"
# Saved views of the runs table (MLflow 3.17 lists them under "Views" and loads one with
# ``?viewStateShareKey=<id>``); each is an experiment tag holding ``{"name", "createdAt", "state"}``.
VIEW_PREFIX = "mlflow.sharedViewState."
BEST_VIEW_KEY = "ocrstudy-best"  # every run, best first, coloured by cell: what `ocr-study ui` opens
CELLS_VIEW_KEY = "ocrstudy-cells"  # completed runs grouped by phase and cell (a group's mean)
VIEW_KEY = "ocrstudy"  # every run nested under the study's run, newest first
BEST_VIEW_TAG = f"{VIEW_PREFIX}{BEST_VIEW_KEY}"
CELLS_VIEW_TAG = f"{VIEW_PREFIX}{CELLS_VIEW_KEY}"
VIEW_TAG = f"{VIEW_PREFIX}{VIEW_KEY}"
# A run's colour in MLflow's table and charts (the tag MLflow's own colour picker sets): one per cell, in
# the grid's order (matplotlib's tab10), so the runs of a cell share it in every view.
RUN_COLOR = "mlflow.runColor"
CELL_COLOURS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
                "#bcbd22", "#17becf")
# The metrics a reader compares, as columns of the views: mIoU and the paper's OC rate, on val and on test.
VIEW_METRICS = ("val_miou", "val_oc_rate_fg", "test_miou", "test_oc_rate_fg")
# The parent run's per-cell figures: the headline table's mean (and std) of these, on its split.
SUMMARY_METRICS = ("miou", "oc_rate_fg")


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


STORE_TEMPLATES = "mlflow"  # under a cache folder: MLflow's empty SQLite schema, one file per MLflow version
SQLITE = "sqlite:///"


def sqlite_file(uri: str) -> Path | None:
    """The file of an SQLite tracking URI (``sqlite:///rel`` or ``sqlite:////abs``), else ``None``."""
    if not uri.startswith(SQLITE) or "?" in uri or uri == f"{SQLITE}:memory:":
        return None
    return Path(uri.removeprefix(SQLITE))


def seed_sqlite_store(uri: str, cache_dir: Path) -> bool:
    """Start a new SQLite store as a copy of MLflow's empty schema, kept in ``cache_dir`` per MLflow version.

    MLflow builds a new store by running every one of its schema migrations (alembic): 1.5 CPU s at every
    study's start, against 0.9 s to open a copy (fresh processes, README). The copy is opened as usual
    (MLflow checks its schema revision and adds its "Default" experiment itself, located as it would have
    been). The copy is made from
    a store MLflow built in the same version, with that experiment taken out. Does nothing (returns False)
    where the URI is not an SQLite file, the file exists, or the cache cannot be used (MLflow then builds
    the store itself)."""
    target = sqlite_file(uri)
    if target is None or target.exists():
        return False
    unusable: tuple[type[Exception], ...] = (OSError, sqlite3.Error, *_mlflow_errors())
    try:
        template = _store_template(cache_dir)
        target.parent.mkdir(parents=True, exist_ok=True)
        part = target.with_name(f".{target.name}.{os.getpid()}.part")
        shutil.copyfile(template, part)
        try:
            os.link(part, target)  # never over a store another process made meanwhile
        except FileExistsError:
            return False
        finally:
            part.unlink(missing_ok=True)
    except unusable as err:
        log.debug("MLflow builds the store itself: the empty one in %s cannot be used (%s)", cache_dir, err)
        return False
    return True


def _mlflow_errors() -> tuple[type[Exception], ...]:
    """What MLflow raises when it cannot build a store (its own error, SQLAlchemy's)."""
    from mlflow.exceptions import MlflowException
    from sqlalchemy.exc import SQLAlchemyError

    return MlflowException, SQLAlchemyError


def _store_template(cache_dir: Path) -> Path:
    """The empty store of this MLflow version under ``cache_dir``, built (by MLflow) the first time."""
    import mlflow
    from mlflow.tracking import MlflowClient

    template = cache_dir / STORE_TEMPLATES / f"empty-{mlflow.__version__}.db"
    if template.is_file():
        return template
    template.parent.mkdir(parents=True, exist_ok=True)
    part = template.with_name(f".{template.name}.{os.getpid()}.part")
    part.unlink(missing_ok=True)
    migrations = logging.getLogger("mlflow.store.db.utils")  # "Creating initial MLflow database tables..."
    level = migrations.level
    migrations.setLevel(logging.WARNING)
    try:
        client = MlflowClient(tracking_uri=f"{SQLITE}{part.absolute()}")
        client.search_experiments()  # the store is built on first use
        with contextlib.closing(sqlite3.connect(part)) as db, db:
            db.execute("DELETE FROM experiment_tags")
            db.execute("DELETE FROM experiments")  # the store that opens the copy adds its own "Default"
        part.replace(template)
    finally:
        migrations.setLevel(level)
        part.unlink(missing_ok=True)
    return template


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
    """The metrics of a Tune result that go to MLflow (a few stable keys), under the record's names."""
    return {k: float(v) for k, v in result.items()
            if isinstance(v, (int, float)) and not isinstance(v, bool)
            and (k.startswith(METRIC_PREFIXES) or k in METRIC_KEYS)}


def mlflow_metrics(values: dict[str, float]) -> dict[str, float]:
    """Metrics under the record's names as MLflow shows them (:func:`record.mlflow_metric`): ``val_miou``
    0.611 as ``1 val/miou pct`` 61.1."""
    out = {}
    for name, value in values.items():
        key, factor = mlflow_metric(name)
        out[key] = value * factor
    return out


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


def trial_note(trial_id: str, config: dict[str, Any]) -> str:
    """A trial run's description (Markdown): phase, cell, setting, seed, and the sampled values that apply;
    a baseline says that δ and τ do not apply to it."""
    meta = {k[len(META):]: v for k, v in config.items() if k.startswith(META)}
    phase = meta.get("phase", Phase.SEARCH)
    lines = [f"**{phase}** trial `{trial_id}` of study {meta.get('study', '')}: cell `{meta.get('cell', '')}`, "
             f"setting {meta.get('setting', 0)}, seed {config.get('seed', '')}."]
    selection = config.get("ocr.selection")
    sampled = [f"{NAME_SYMBOLS[k]} = {param_text(config[k])}" for k in NAME_SYMBOLS
               if k in config and ocr_applies(k, selection)]
    if sampled:
        lines.append("Values: " + ", ".join(sampled) + ".")
    if not ocr_applies("ocr.delta", selection):
        lines.append("The OCR loss is off (ocr.selection = none): δ and τ do not apply.")
    return " ".join(lines)


def cell_label(cell: str) -> str:
    """A cell's short name: its values (``"oc"``, ``"oc · cooc_minmax"``), or the id itself without a grid."""
    values = list(parse_cell(cell).values())
    return " · ".join(values) if values else cell


def run_name(config: dict[str, Any]) -> str:
    """``"search · oc · δ 7.7 · τ 0.06 · s1"``: the phase first (a name the runs table cuts still says it),
    then cell, the sampled values that apply (2 digits) and the seed."""
    meta = {k[len(META):]: v for k, v in config.items() if k.startswith(META)}
    parts = [str(meta["phase"])] if meta.get("phase") else []
    if meta.get("cell"):
        parts.append(cell_label(str(meta["cell"])))
    selection = config.get("ocr.selection")
    for key, symbol in NAME_SYMBOLS.items():
        value = config.get(key)
        if isinstance(value, (int, float)) and not isinstance(value, bool) and ocr_applies(key, selection):
            parts.append(f"{symbol} {value:.2g}")
    if config.get("seed") is not None:
        parts.append(f"s{config['seed']}")
    return " · ".join(parts)


def outcome_text(reason: StopReason, epochs: int, planned: int | None) -> str:
    """How a trial ended, in the words the runs table's ``outcome`` column shows: ``completed``, ``stopped by
    ASHA at epoch 2 of 3`` (MLflow marks that run KILLED: no crash), ``stopped by the time budget at epoch 2``,
    ``failed``."""
    of = f" of {planned}" if planned else ""
    if reason == StopReason.EARLY_STOPPED:
        return f"stopped by ASHA at epoch {epochs}{of}"
    if reason == StopReason.STOPPED:
        return f"stopped by the time budget at epoch {epochs}{of}"
    return reason.value


def metric_key(text: str) -> str:
    """``text`` with the characters MLflow refuses in a metric key replaced by ``_``."""
    return re.sub(r"[^A-Za-z0-9_\-. :/]", "_", text.replace(" · ", "_"))


def flat_params(doc: dict[str, Any], prefix: str = "") -> dict[str, str]:
    """A nested spec as ``{"scheduler.type": "asha", ...}`` (lists as text), for the parent run's params."""
    from pipelines.config import nested_to_flat

    return {key: param_text(value) for key, value in nested_to_flat(doc, prefix).items() if value is not None}


def describe(spec: dict[str, Any], spec_hash: str, confirm_seeds: list[int] | None = None,
             summary: str = "") -> str:
    """The parent run's description (Markdown): what the study varies, samples and repeats; the seeds the
    confirm phase ran (``confirm_seeds``, once it ran; else the spec's plan), and ``summary`` (the headline
    table) first."""
    grid = spec.get("grid") or {}
    search = spec.get("search") or {}
    lines = [f"**Study {spec.get('name', '')}** (spec {spec_hash[:12]}): one nested run per trial."]
    if summary:  # first: MLflow shows the top of a description and folds the rest
        lines += ["", summary, ""]
    if grid:
        lines.append("- grid: " + "; ".join(f"{k} ∈ {{{', '.join(map(str, v))}}}" for k, v in grid.items()))
    if search:
        lines.append(f"- search: {', '.join(search.get('params', {}))} ({search.get('sampler', '')}, "
                     f"{search.get('samples', '')} samples per cell)")
    sched = spec.get("scheduler") or {}
    seeds = f"- seeds: {_seeds_text(spec.get('seeds', []))} in the search"
    confirm = spec.get("confirm") or {}
    if confirm_seeds:
        seeds += f"; {_seeds_text(confirm_seeds)} in the confirm phase"
    elif confirm:
        planned = confirm.get("seeds", [])
        if isinstance(planned, dict):  # a seed rule (a sequential confirm phase)
            seeds += (f"; {planned.get('min')} to {planned.get('max')} per setting, added while undecided, in the "
                      "confirm phase")
        else:
            seeds += f"; {_seeds_text(planned)} planned for the confirm phase"
    lines.append(seeds)
    lines.append(f"- scheduler {sched.get('type', '')} on {sched.get('metric', '')} ({sched.get('mode', '')})")
    lines.append(f"- a run ASHA stopped early says \"stopped by ASHA\" in its name and in the column "
                 f"`{Tag.OUTCOME}`; MLflow marks it KILLED, which is no crash. Filter "
                 f"`tags.\"{Tag.COMPLETED}\" = 'true'` to average completed runs only")
    lines.append("- metrics in percent end in `pct`; sections: 1 val, 2 test (confirm runs, the held-out split), "
                 "3 train, 4 class IoU (val), 5 time")
    return "\n".join(lines)


def _seeds_text(seeds: list[Any]) -> str:
    """``"0–2"`` for consecutive seeds, else ``"0, 3, 5"``."""
    values = sorted(int(s) for s in seeds)
    if len(values) > 2 and values == list(range(values[0], values[-1] + 1)):
        return f"{values[0]}–{values[-1]}"
    return ", ".join(map(str, values)) or "none"


def view_columns(metric: str) -> list[str]:
    """The columns of the study's views: phase, cell, outcome, seed, the sampled params, then mIoU and OC
    rate on val and test (in percent) and the study's metric."""
    metrics = [*VIEW_METRICS, *([] if metric in VIEW_METRICS else [metric])]
    return [f"tags.`{Tag.PHASE}`", f"tags.`{Tag.CELL}`", f"tags.`{Tag.OUTCOME}`", f"tags.`{Tag.SEED}`",
            *(f"params.`{k}`" for k in NAME_SYMBOLS), *(f"metrics.`{mlflow_metric(m)[0]}`" for m in metrics)]


def view_states(metric: str, mode: str = "max") -> dict[str, tuple[str, dict[str, Any]]]:
    """The study's three saved views of the runs table, by id: (name, state).

    ``ocrstudy-best`` (what ``ocr-study ui`` opens): every run, best first by the study's metric, coloured
    by cell (:func:`cell_colour`). ``ocrstudy-cells``: the completed runs grouped by phase and cell, a
    group one row (its value the mean of its runs, a confirm group's the ablation table's figure; expand it
    for its runs). ``ocrstudy``: every run nested under the study's run, newest first (expand the study's
    run: MLflow nests runs only when sorted by start time; sorting by a metric lists them flat).
    """
    common = {"selectedColumns": view_columns(metric), "hideEmptyCharts": True, "runsHiddenMode": "SHOW_ALL",
              "useGroupedValuesInCharts": True}
    order = {"orderByKey": f"metrics.`{mlflow_metric(metric)[0]}`", "orderByAsc": mode == "min"}
    best = {**common, **order}
    groups = [{"mode": "tag", "groupByData": tag.value} for tag in (Tag.PHASE, Tag.CELL)]
    cells = {**common, **order, "searchFilter": f"tags.`{Tag.COMPLETED}` = 'true'",
             "groupBy": {"aggregateFunction": "average", "groupByKeys": groups}}
    nested = {**common, "orderByKey": "attributes.start_time", "orderByAsc": False}
    return {BEST_VIEW_KEY: ("ocr-study: all runs, best first, coloured by cell", best),
            CELLS_VIEW_KEY: ("ocr-study: completed runs by phase and cell (means)", cells),
            VIEW_KEY: ("ocr-study: all runs nested under the study", nested)}


def cell_colour(cell: str, grid: dict[str, list[Any]] | None) -> str:
    """A cell's colour: its place among the grid's cells (the first grid point it matches: a baseline
    cell, whose OCR-only axes are merged, takes its first), modulo :data:`CELL_COLOURS`."""
    import itertools
    import zlib

    wanted = parse_cell(cell).items()
    keys = list(grid or {})
    for i, values in enumerate(itertools.product(*((grid or {})[k] for k in keys))):
        point = {k: value_text(v) for k, v in zip(keys, values, strict=True)}
        if all(point.get(k) == v for k, v in wanted):
            return CELL_COLOURS[i % len(CELL_COLOURS)]
    return CELL_COLOURS[zlib.crc32(cell.encode()) % len(CELL_COLOURS)]


def view_tags(metric: str, mode: str = "max") -> dict[str, str]:
    """The experiment tags that hold the saved views (:func:`view_states`), as MLflow 3.17 reads them."""
    now = int(time.time() * 1000)
    return {f"{VIEW_PREFIX}{key}": json.dumps({"name": name, "createdAt": now, "state": json.dumps(state)})
            for key, (name, state) in view_states(metric, mode).items()}


def ensure_ui(client: Any, experiment_id: str, spec: dict[str, Any] | None = None) -> None:
    """The experiment opens on MLflow's training view (:data:`EXPERIMENT_KIND`) and has the study's saved
    views (written when missing, never over a view a user changed)."""
    found = client.get_experiment(experiment_id)
    tags = dict(found.tags or {})
    if tags.get(EXPERIMENT_KIND[0]) != EXPERIMENT_KIND[1]:
        client.set_experiment_tag(experiment_id, *EXPERIMENT_KIND)
    if spec is None:
        return
    sched = spec.get("scheduler") or {}
    views = view_tags(str(sched.get("metric") or "val_miou"), str(sched.get("mode") or "max"))
    for key, value in views.items():
        if key not in tags:
            client.set_experiment_tag(experiment_id, key, value)


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


def parent_params(spec: dict[str, Any]) -> dict[str, str]:
    """The study run's params: the spec, flat, without the trial settings the grid or the search replaces
    (``trial.ocr.selection`` when the grid varies it, δ and τ when they are searched): no trial used those
    values as such. The grid and the search show what was used."""
    replaced = {*(spec.get("grid") or {}), *((spec.get("search") or {}).get("params") or {})}
    return {k: v for k, v in flat_params(spec).items()
            if not (k.startswith("trial.") and k[len("trial."):] in replaced)}


class MLflowTracking(Callback):
    """Mirror every trial of a study into MLflow (batched, re-attaching on retry and resume)."""

    def __init__(self, uri: str, experiment: str, study: str, spec_hash: str,
                 artifact_location: str | None = None, scheduler: str = "none",
                 max_epochs: int | None = None, spec: dict[str, Any] | None = None,
                 rungs: tuple[int, ...] = (), cache_dir: Path | None = None) -> None:
        self.uri, self.experiment, self.study, self.spec_hash = uri, experiment, study, spec_hash
        # where the empty SQLite store is kept that a new one starts from (seed_sqlite_store); None: not used
        self.cache_dir = None if cache_dir is None else str(cache_dir)
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

            cache = getattr(self, "cache_dir", None)  # absent from a callback pickled before it existed
            if cache:
                seed_sqlite_store(self.uri, Path(cache))
            self._client = MlflowClient(tracking_uri=self.uri)
            self._experiment_id = self._ensure_experiment()
            self._parent = self._ensure_parent()
        return self._client

    def _ensure_experiment(self) -> str:
        found = self._client.get_experiment_by_name(self.experiment)
        if found is None:
            experiment_id = str(self._client.create_experiment(
                self.experiment, artifact_location=self.artifact_location,
                tags={EXPERIMENT_KIND[0]: EXPERIMENT_KIND[1]}))
        else:
            experiment_id = str(found.experiment_id)
        ensure_ui(self._client, experiment_id, getattr(self, "spec", None) or None)  # also one made before
        return experiment_id

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
        return run_id

    def _describe_parent(self, run_id: str, spec: dict[str, Any]) -> None:
        """The study on its parent run: the spec as params and as ``spec.yaml``, and a description."""
        import tempfile

        import yaml
        from mlflow.entities import Param, RunTag

        params = [Param(k, v) for k, v in sorted(parent_params(spec).items())]
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
                Tag.PHASE.value: str(meta.get("phase", Phase.SEARCH)), Tag.OUTCOME.value: StopReason.RUNNING.value,
                RUN_COLOR: cell_colour(cell, (getattr(self, "spec", None) or {}).get("grid"))}
        if "round" in meta:  # a sequential confirm trial: the round its seed belongs to
            tags[Tag.ROUND.value] = str(meta["round"])
        if Tag.CONTINUES.key in meta:  # a confirm trial continuing a completed search trial
            tags[Tag.CONTINUES.value] = str(meta[Tag.CONTINUES.key])
        name = run_name(config)
        run = client.create_run(self._experiment_id, run_name=name, tags=tags)
        params = [Param(k, v) for k, v in trial_params(config).items()]
        note = trial_note(trial.trial_id, config)
        for i in range(0, max(len(params), 1), BATCH):
            client.log_batch(run.info.run_id, params=params[i : i + BATCH],
                             tags=[RunTag("mlflow.note.content", note)] if i == 0 else [])
        exact = {k: v for k, v in config.items() if not k.startswith(META)}
        client.log_text(run.info.run_id, json.dumps(exact, sort_keys=True, indent=1), CONFIG_ARTIFACT)
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
        metrics = [Metric(k, v, now, step) for k, v in mlflow_metrics(trial_metrics(result)).items()]
        self.client.log_batch(self.run_for(trial), metrics=metrics)

    def on_checkpoint(self, iteration: int, trials: list[Any], trial: Any, checkpoint: Any, **info: Any) -> None:
        """Log the epoch's per-class validation IoU (``iou/<class>``) from the checkpoint's artifacts."""
        from mlflow.entities import Metric

        values = read_class_iou(checkpoint)
        if not values:
            return
        step = int((trial.last_result or {}).get("epoch", 0))
        now = int(time.time() * 1000)
        self.client.log_batch(self.run_for(trial),
                              metrics=[Metric(k, v, now, step) for k, v in mlflow_metrics(values).items()])

    def on_trial_complete(self, iteration: int, trials: list[Any], trial: Any, **info: Any) -> None:
        """Upload the trial's artifacts and close its run: ``FINISHED`` when it ran every planned epoch,
        else ``KILLED`` with a name marker (``· stopped e2``) and ``ocr_study.completed = false``."""
        from mlflow.entities import RunTag

        run_id = self.run_for(trial)
        reason, epochs = self.stop_tag(trial)
        completed = reason == StopReason.COMPLETED
        config = dict(trial.config)
        outcome = outcome_text(reason, epochs, self.planned(trial))
        tags = [RunTag(Tag.STOP_REASON.value, reason.value), RunTag(Tag.COMPLETED.value, str(completed).lower()),
                RunTag(Tag.OUTCOME.value, outcome)]
        if not completed:
            tags += [RunTag(Tag.STOP_EPOCH.value, str(epochs)),
                     RunTag("mlflow.runName", f"{run_name(config)} · {outcome}"),
                     RunTag("mlflow.note.content", f"{trial_note(trial.trial_id, config)}\n\n**{outcome[0].upper()}"
                            f"{outcome[1:]}.** MLflow marks a run Tune stopped KILLED: it did not crash.")]
        self.client.log_batch(run_id, tags=tags)
        self._log_artifacts(run_id, trial)
        self.client.set_terminated(run_id, status="FINISHED" if completed else "KILLED")

    def planned(self, trial: Any) -> int | None:
        """The reports the trial was planned to make."""
        return planned_epochs(config_reports(trial.config), getattr(self, "scheduler", "none"),
                              getattr(self, "max_epochs", None))

    def stop_tag(self, trial: Any) -> tuple[StopReason, int]:
        """Why a trial Tune ended stopped, as its record says it (:func:`record.stop_reason`), and its last
        epoch."""
        epochs = int(trial.last_result.get("epoch", 0)) if trial.last_result else 0
        scheduler = getattr(self, "scheduler", "none")
        reason, _ = stop_reason(TrialStatus.TERMINATED, epochs, self.planned(trial), scheduler,
                                getattr(self, "rungs", ()))
        return reason, epochs

    def on_trial_error(self, iteration: int, trials: list[Any], trial: Any, **info: Any) -> None:
        """Close the trial's run as failed, with the error as a tag."""
        run_id = self.run_for(trial)
        error = ""
        if getattr(trial, "error_file", None) and Path(trial.error_file).exists():
            error = Path(trial.error_file).read_text()[-4000:]
        self.client.set_tag(run_id, Tag.STOP_REASON.value, StopReason.FAILED.value)
        self.client.set_tag(run_id, Tag.COMPLETED.value, "false")
        self.client.set_tag(run_id, Tag.OUTCOME.value, StopReason.FAILED.value)
        self.client.set_tag(run_id, Tag.ERROR.value, error.strip().splitlines()[-1][:4000] if error else "")
        self.client.set_terminated(run_id, status="FAILED")

    def _log_artifacts(self, run_id: str, trial: Any) -> None:
        checkpoint = getattr(trial, "checkpoint", None)
        if checkpoint is None:
            return
        import pyarrow.fs as pafs

        cache = (getattr(trial, "config", None) or {}).get("cache_dir")  # the drawn prior's keeper, as in trials
        cache_path = Path(cache).expanduser() if cache else None
        fs = getattr(checkpoint, "filesystem", None)
        if fs is None or isinstance(fs, pafs.LocalFileSystem):
            self._log_folder(run_id, Path(checkpoint.path) / "artifacts", cache_path)
            return
        with checkpoint.as_directory() as local:  # a checkpoint on an object store: downloaded first
            self._log_folder(run_id, Path(local) / "artifacts", cache_path)

    def _log_folder(self, run_id: str, folder: Path, cache: Path | None) -> None:
        """Upload a trial's artifacts, drawing first the pictures a trial stopped early left as numbers."""
        if not folder.is_dir():
            return
        from pipelines.figures import draw_pending, is_drawing_data

        draw_pending(folder, cache)
        for path in sorted(folder.iterdir()):
            if path.is_dir():
                self.client.log_artifacts(run_id, str(path), artifact_path=path.name)
            elif not is_drawing_data(path.name):
                self.client.log_artifact(run_id, str(path))

    def on_experiment_end(self, trials: list[Any], **info: Any) -> None:
        """Close the study's run (its per-cell figures come with the report: :func:`log_summary`)."""
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


def prepare_ui(uri: str, experiment: str) -> bool:
    """Before the UI opens: a study's experiment (one made by an older version too) opens on MLflow's
    training view (:data:`EXPERIMENT_KIND`); False when the store or the experiment is not there yet."""
    from mlflow.tracking import MlflowClient

    try:
        client = MlflowClient(tracking_uri=uri)
        found = client.get_experiment_by_name(experiment)
        if found is None:
            return False
        ensure_ui(client, str(found.experiment_id))
    except Exception as err:  # the UI still opens; it may show the GenAI view of this experiment
        log.warning("could not set %s on experiment %s: %s", EXPERIMENT_KIND[0], experiment, err)
        return False
    return True


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
    views = ((BEST_VIEW_KEY, BEST_VIEW_TAG), (CELLS_VIEW_KEY, CELLS_VIEW_TAG), (VIEW_KEY, VIEW_TAG))
    key = next((k for k, tag in views if tag in found.tags), None)
    view = f"viewStateShareKey={key}&" if key else ""
    return f"{root}/#/experiments/{found.experiment_id}/runs?{view}{WORKFLOW}"


def headline_summary(ds: Any) -> tuple[dict[str, float], str]:
    """The report's headline table (:func:`results.ablation_table`: the confirm phase's when the study has
    one, on the split it measured; else the search's) as the study run's metrics, ``<cell> <split>_miou mean
    pct`` (and std, and ``<cell> n``), and as a Markdown table for its description."""
    import math

    from results import ablation_table

    headline = ablation_table(ds)
    values = headline.values
    if values.empty or "cell" not in values:
        return {}, ""
    split = next((s for s in ("test", "val") if f"{s}_miou_mean" in values), "val")
    repeated = values["cell"].astype(str).duplicated(keep=False)
    metrics: dict[str, float] = {}
    rows = [f"| cell | {split} mIoU (%) | {split} OC rate (% of fg) | seeds |", "|---|---:|---:|---:|"]
    for i, row in values.iterrows():
        label = cell_label(str(row["cell"])) + (f" setting {int(row['setting'])}" if repeated[i] else "")
        key = metric_key(label)
        texts = []
        for name in SUMMARY_METRICS:
            mean, std = row.get(f"{split}_{name}_mean"), row.get(f"{split}_{name}_std")
            if mean is None or not math.isfinite(float(mean)):
                texts.append("—")
                continue
            metrics[f"{key} {split}_{name} mean pct"] = 100 * float(mean)
            text = f"{100 * float(mean):.2f}"
            if std is not None and math.isfinite(float(std)):
                metrics[f"{key} {split}_{name} std pct"] = 100 * float(std)
                text += f" ± {100 * float(std):.2f}"
            texts.append(text)
        n = row.get(f"{split}_miou_n")
        count = int(n) if n is not None and math.isfinite(float(n)) else 0
        metrics[f"{key} n"] = float(count)
        rows.append(f"| {label} | {texts[0]} | {texts[1]} | {count} |")
    rows += ["", f"*{headline.title}*: mean ± std over seeds, as the report's table."]
    return metrics, "\n".join(rows)


def ran_seeds(ds: Any, phase: str) -> list[int]:
    """The seeds the trials of ``phase`` ran, from the collected study."""
    trials = ds.trials
    if "phase" not in trials or "seed" not in trials:
        return []
    mine = trials[trials["phase"].astype(str) == phase]
    return sorted({int(s) for s in mine["seed"].dropna()})


def log_summary(uri: str, experiment: str, study: str, ds: Any, spec: dict[str, Any], spec_hash: str) -> str | None:
    """The headline figures on the study's run (:func:`headline_summary`: the report's table, so the report,
    ``ocr-study status`` and MLflow show one figure), and its description with them and the seeds the
    confirm phase ran; returns the run id, or ``None`` when the study has no run in ``uri``."""
    from mlflow.entities import Metric, RunTag
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    found = client.get_experiment_by_name(experiment)
    if found is None:
        return None
    parent = find_run(client, str(found.experiment_id), {Tag.STUDY.value: study, Tag.ROLE.value: "study"})
    if parent is None:
        return None
    metrics, table = headline_summary(ds)
    now = int(time.time() * 1000)
    note = describe(spec, spec_hash, ran_seeds(ds, Phase.CONFIRM), table)
    client.log_batch(parent, metrics=[Metric(k, v, now, 0) for k, v in metrics.items()],
                     tags=[RunTag("mlflow.note.content", note)])
    return parent


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
