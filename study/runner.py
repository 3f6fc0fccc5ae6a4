"""Run, resume and inspect a study on Ray Tune: one Tune run per study, MLflow as its view."""

from __future__ import annotations

import dataclasses
import logging
import os
import shutil
import socket
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from record import (
    CONFIRM_TUNE_DIR,
    META,
    PHASES,
    SPEC_FILE,
    TUNE_DIR,
    read_epochs,
    read_study,
    study_trials,
    trial_folders,
    write_study,
)
from study.guard import (
    check_study_inputs,
    clear_folder,
    end_recorded,
    hold_study,
    record_started,
    release_study,
)
from study.plan import StudyPlan, cell_config, plan, study_record
from study.spec import (
    DEFAULT_STORAGE,
    SpecError,
    StudySpec,
    check_study_name,
    load_spec,
    spec_hash,
)

log = logging.getLogger(__name__)
SPECS_DIR = Path(__file__).parent / "specs"


class StudyError(RuntimeError):
    """A study cannot be run or resumed as asked; the message says why and what to do."""


class UnknownStudyError(StudyError, ValueError):
    """No study of that name where it was looked for: bad input (the CLI exits 2)."""


def resolve_spec(name_or_path: str, overrides: Sequence[str] = ()) -> StudySpec:
    """A spec from a YAML path, or by the name of a shipped spec (``quick``, ``paper``, ``voc``,
    ``voc-masks``), with ``key=value`` overrides applied before it is validated."""
    path = Path(name_or_path)
    if not path.is_file() and (SPECS_DIR / f"{name_or_path}.yaml").is_file():
        path = SPECS_DIR / f"{name_or_path}.yaml"
    if not path.is_file():
        shipped = sorted(p.stem for p in SPECS_DIR.glob("*.yaml"))
        raise SpecError("", f"{name_or_path!r} not found: give a YAML file or one of {shipped}")
    return load_spec(path, overrides)


def study_dir(spec: StudySpec) -> Path:
    """The study's local folder (absolute); for a study on an object store, its local mirror."""
    from study.storage import is_remote, mirror_dir

    return mirror_dir(spec.study_dir) if is_remote(spec.study_dir) else Path(spec.study_dir).absolute()


def _tune_storage(spec: StudySpec) -> tuple[str, Any]:
    """Tune's ``storage_path`` and ``storage_filesystem``: the study's folder, or its place on the store."""
    from study.storage import is_remote, open_store

    if not is_remote(spec.study_dir):
        return str(study_dir(spec)), None
    store = open_store(spec.study_dir)
    return store.root, store.fs


def _absolute(flat: dict[str, Any]) -> dict[str, Any]:
    """Paths made absolute in the driver: trials run with the trial folder as working directory."""
    out = dict(flat)
    out["cache_dir"] = str(Path(out["cache_dir"]).expanduser().absolute())
    for key in ("data.root", "data.labels", "stage1.masks_dir"):
        if out.get(key):
            out[key] = str(Path(out[key]).expanduser().absolute())
    return out


def _shared_cache(spec: StudySpec) -> dict[str, str]:
    """A study on an object store shares its stage-1 cache through it, under its own prefix."""
    from study.storage import SHARED_CACHE, is_remote, join_uri

    return {"shared_cache": join_uri(spec.study_dir, SHARED_CACHE)} if is_remote(spec.study_dir) else {}


def build_searcher(spec: StudySpec, study: StudyPlan) -> Any:
    """The grid × Optuna × seeds searcher for this study."""
    from study.searcher import GridCellSearcher
    from study.tracking import git_commit

    threads = max(1, int(spec.resources.cpus))
    cells = [dataclasses.replace(cell, base=_absolute({**cell_config(cell), "threads": threads,
                                                         **_shared_cache(spec)}))
             for cell in study.cells]
    search = spec.search
    return GridCellSearcher(cells, list(spec.seeds), sampler=search.sampler if search else "tpe",
                            seed=search.seed if search else 0, max_trials=spec.budget.max_trials,
                            meta={"study": spec.name, "spec_hash": spec_hash(spec), "git_commit": git_commit(),
                                  "phase": PHASES[0], "record": str(study_dir(spec))},
                            metric=spec.scheduler.metric, mode=spec.scheduler.mode)


def _search_configs(spec: StudySpec, study: StudyPlan) -> list[dict[str, Any]]:
    """Each search cell's config on each seed, without sampled values (what stage 1 depends on); cells whose
    stage 1 depends on the sampled OCR values (``ocr.stage`` cam or both) are left out."""
    out = []
    for cell in study.cells:
        base = _absolute({**cell_config(cell), **_shared_cache(spec)})
        if cell.search and base.get("ocr.stage") in ("cam", "both"):
            continue
        out += [{**base, "seed": seed} for seed in spec.seeds]
    return out


def _prebuild(spec: StudySpec, configs: list[dict[str, Any]]) -> None:
    from study.stage1_prep import prebuild_stage1

    prebuild_stage1(configs, spec.resources.gpus)


def _tracking(spec: StudySpec, scheduler: str | None = None, max_epochs: int | None = None) -> Any:
    from study.tracking import MLflowTracking

    experiment = spec.tracking.experiment or spec.name
    # With the default SQLite store, artifacts live beside it in the study folder (MLflow's own
    # default would be ./mlruns in whatever folder the driver was started from).
    artifacts = None if spec.tracking.uri else (study_dir(spec) / "mlartifacts").as_uri()
    if _direct_to_store(spec):  # no server between: the driver writes them to the study's store itself
        artifacts = _store_artifacts(spec)
    return MLflowTracking(spec.tracking_uri, experiment, spec.name, spec_hash(spec), artifacts,
                          scheduler or spec.scheduler.type, max_epochs or spec.scheduler.max_epochs,
                          spec.to_dict())


def _direct_to_store(spec: StudySpec) -> bool:
    """A study on an object store tracked in a database (not through a server) logs its artifacts there."""
    from study.storage import is_remote

    return is_remote(spec.study_dir) and not spec.tracking_uri.startswith(("http://", "https://"))


def _store_artifacts(spec: StudySpec) -> str:
    """``<study>/mlflow-artifacts`` on the study's store; MLflow's S3 client gets the store's endpoint."""
    from study.storage import mlflow_artifacts, open_store

    endpoint = open_store(spec.study_dir).endpoint_url
    if endpoint:
        os.environ.setdefault("MLFLOW_S3_ENDPOINT_URL", endpoint)
    return mlflow_artifacts(spec.study_dir)


def _callbacks(spec: StudySpec, study: StudyPlan, total: int) -> list[Any]:
    from study.failures import FailFast
    from study.progress import ProgressLine
    from study.trial_record import RecordCallback

    return [FailFast(), RecordCallback(spec.scheduler.type, study.max_epochs, study.rungs), _tracking(spec),
            ProgressLine(total, spec.scheduler.metric, spec.scheduler.mode)]


class _Background:
    """Run ``fn`` in a thread; :meth:`join` waits and re-raises what it raised."""

    def __init__(self, fn: Any) -> None:
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, args=(fn,), daemon=True)
        self.thread.start()

    def _run(self, fn: Any) -> None:
        try:
            fn()
        except BaseException as err:  # handed to the caller in join()
            self.error = err

    def join(self) -> None:
        self.thread.join()
        if self.error is not None:
            raise self.error


def _tuner(spec: StudySpec, study: StudyPlan) -> Any:
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler, FIFOScheduler
    from ray.tune.search import ConcurrencyLimiter

    from study.trainable import train_trial

    searcher = build_searcher(spec, study)
    sched = spec.scheduler
    scheduler = (ASHAScheduler(time_attr="epoch", max_t=sched.max_epochs, grace_period=sched.grace_period,
                               reduction_factor=sched.reduction_factor)
                 if sched.type == "asha" else FIFOScheduler())
    resources = {"cpu": spec.resources.cpus, "gpu": spec.resources.gpus}
    tune_config = tune.TuneConfig(metric=sched.metric, mode=sched.mode,
                                  search_alg=ConcurrencyLimiter(searcher, spec.max_concurrent),
                                  scheduler=scheduler, num_samples=searcher.total, reuse_actors=True,
                                  time_budget_s=spec.budget.time_s)
    storage_path, filesystem = _tune_storage(spec)
    run_config = tune.RunConfig(name=TUNE_DIR, storage_path=storage_path, storage_filesystem=filesystem, verbose=0,
                                failure_config=tune.FailureConfig(max_failures=2),
                                checkpoint_config=tune.CheckpointConfig(num_to_keep=1),
                                callbacks=_callbacks(spec, study, searcher.total))
    return tune.Tuner(tune.with_resources(train_trial, resources), tune_config=tune_config,
                      run_config=run_config)


def _confirm_tuner(spec: StudySpec, phase: dict[str, Any], restore: bool) -> Any:
    """The confirm phase's Tune run: the planned configs in order, no early stopping."""
    from ray import tune
    from ray.tune.schedulers import FIFOScheduler
    from ray.tune.search import ConcurrencyLimiter

    from study.failures import FailFast
    from study.progress import ProgressLine
    from study.searcher import PlannedSearcher
    from study.trainable import train_trial
    from study.trial_record import RecordCallback

    trainable = tune.with_resources(train_trial, {"cpu": spec.resources.cpus, "gpu": spec.resources.gpus})
    storage_path, filesystem = _tune_storage(spec)
    if restore:
        return tune.Tuner.restore(f"{storage_path}/{CONFIRM_TUNE_DIR}", trainable, resume_unfinished=True,
                                  resume_errored=True, storage_filesystem=filesystem)
    configs, epochs = list(phase["configs"]), int(phase["epochs"])
    searcher = PlannedSearcher(configs)
    callbacks = [FailFast(), RecordCallback("none", epochs, ()), _tracking(spec, "none", epochs),
                 ProgressLine(len(configs), phase["metric"], phase["mode"])]
    tune_config = tune.TuneConfig(metric=phase["metric"], mode=phase["mode"], scheduler=FIFOScheduler(),
                                  search_alg=ConcurrencyLimiter(searcher, spec.max_concurrent),
                                  num_samples=len(configs), reuse_actors=True)
    run_config = tune.RunConfig(name=CONFIRM_TUNE_DIR, storage_path=storage_path, storage_filesystem=filesystem,
                                verbose=0,
                                failure_config=tune.FailureConfig(max_failures=2),
                                checkpoint_config=tune.CheckpointConfig(num_to_keep=1), callbacks=callbacks)
    return tune.Tuner(trainable, tune_config=tune_config, run_config=run_config)


def _phase(doc: dict[str, Any], name: str) -> dict[str, Any] | None:
    return next((p for p in doc.get("phases", []) if p.get("name") == name), None)


def _run_confirm(spec: StudySpec, resume: bool) -> None:
    """After the search: mark it done, choose the settings (once), run or continue the confirm phase."""
    from study.confirm import choose

    folder = study_dir(spec)
    doc = read_study(folder) or {}
    search = _phase(doc, "search")
    if search is not None:
        search["done"] = True
    phase = _phase(doc, "confirm")
    if spec.confirm is None or phase is None:
        write_study(folder, doc)
        return
    if not phase.get("chosen"):
        phase.clear()
        phase.update({**choose(spec, folder), "chosen": True})
        doc["planned_trials"] = int((search or {}).get("trials", 0)) + int(phase["trials"])
    write_study(folder, doc)
    if not phase["configs"]:
        log.warning("confirm phase: no cell has a search result to confirm")
        return
    from ray import tune

    storage_path, filesystem = _tune_storage(spec)
    restore = resume and tune.Tuner.can_restore(f"{storage_path}/{CONFIRM_TUNE_DIR}", storage_filesystem=filesystem)
    _prebuild(spec, list(phase["configs"]))
    _confirm_tuner(spec, phase, restore).fit()


def _probe(address: str, timeout: float = 5.0) -> None:
    """Fail fast when a cluster address does not answer (``ray.init`` would wait for minutes)."""
    if address == "auto":
        return
    host, _, port = address.removeprefix("ray://").rpartition(":")
    if not host or not port.isdigit():
        raise StudyError(f"--address {address!r} is not HOST:PORT (e.g. 10.0.0.5:6379, or ray://HOST:10001)")
    try:
        socket.create_connection((host, int(port)), timeout=timeout).close()
    except OSError as err:
        raise StudyError(f"no Ray cluster answers at {address} ({err}); start one (`ray start --head`), check the "
                         "address (`ray status` on the head node prints it), or leave --address out") from err


def init_ray(address: str | None) -> None:
    """Connect to ``address`` or start this study's own local Ray with this machine's resources (loopback
    only, dashboard off: see :mod:`study.local_ray`; token authentication on: see :mod:`study.ray_auth`)."""
    from study.ray_auth import configure, refresh_loaded_ray

    configure(local=not address)
    refresh_loaded_ray()
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    from study.failures import FATAL_ENV

    for key, value in FATAL_ENV.items():
        os.environ.setdefault(key, value)
    import ray

    if ray.is_initialized():
        return
    kwargs: dict[str, Any] = {"logging_level": logging.WARNING, "log_to_driver": False}
    if address:
        _probe(address)
        try:
            ray.init(address=address, **kwargs)
        except (ConnectionError, RuntimeError) as err:
            raise StudyError(f"cannot connect to the Ray cluster at {address}: {err}; check the address "
                             "(ray status on the head node prints it) or leave --address out") from err
        return
    from study.local_ray import start_local_ray

    start_local_ray(**kwargs)


def _check_store(spec: StudySpec, fresh: bool) -> None:
    """A study on an object store: one already there is continued with resume, or emptied with --fresh."""
    from study.storage import is_remote, open_store

    if not is_remote(spec.study_dir):
        return
    store = open_store(spec.study_dir)
    if store.names() and not fresh:
        raise StudyError(f"study {spec.name!r} already exists in {spec.study_dir}: continue it with "
                         f"`ocr-study resume {spec.name} --storage {spec.storage}`, or start over with --fresh")
    store.fs.delete_dir_contents(store.root, missing_dir_ok=True)


def _write_spec(spec: StudySpec, folder: Path, fresh: bool) -> None:
    _check_store(spec, fresh)
    if (folder / SPEC_FILE).exists() or (folder / TUNE_DIR).exists():
        if not fresh:
            raise StudyError(f"study {spec.name!r} already exists in {folder}: continue it with "
                             f"`ocr-study resume {spec.name}`, or start over with --fresh")
        clear_folder(folder)  # all but the lock this driver holds
    folder.mkdir(parents=True, exist_ok=True)
    tmp = folder / f".{SPEC_FILE}.tmp"
    tmp.write_text(yaml.safe_dump(spec.to_dict(), sort_keys=False))
    tmp.replace(folder / SPEC_FILE)


def run_study(spec: StudySpec, address: str | None = None, fresh: bool = False) -> Path:
    """Run a study from the start; returns its folder."""
    study = plan(spec)
    check_study_inputs(spec, study)  # before anything heavy is imported: bad data fails in seconds
    from study.tracking import check_tracking_uri

    check_tracking_uri(spec.tracking_uri)
    folder = study_dir(spec)
    existed = folder.exists()
    try:
        hold_study(folder)
        _write_spec(spec, folder, fresh)
        write_study(folder, study_record(study))
        # The MLflow store (its schema, the experiment, the parent run) is made while Ray starts.
        warm = _Background(lambda: _tracking(spec).parent_run_id)
        init_ray(address)
        if not address:
            record_started(folder)
        warm.join()
    except BaseException:
        release_study(folder)
        if not existed:  # nothing half-made is left behind
            shutil.rmtree(folder, ignore_errors=True)
        raise
    try:
        _prebuild(spec, _search_configs(spec, study))
        _tuner(spec, study).fit()
        _run_confirm(spec, resume=False)
    finally:
        _push(spec)
    return folder


def _push(spec: StudySpec) -> None:
    """A study on an object store: its record goes there (Tune wrote its own experiment there itself)."""
    from study.storage import is_remote, push_record

    if is_remote(spec.study_dir):
        push_record(study_dir(spec), spec.study_dir)


def load_study_spec(name: str, storage: str | None = None) -> StudySpec:
    """The spec saved in a study's folder, found by name under ``storage`` (default: the spec default)."""
    check_study_name(name)  # a name from the command line must not lead out of the storage folder
    from study.storage import is_remote, join_uri, mirror_dir, pull_record, stored_studies

    if storage and is_remote(storage):  # the record comes from the store into the study's mirror
        uri = join_uri(storage, name)
        pull_record(uri, mirror_dir(uri))
        if not (mirror_dir(uri) / SPEC_FILE).is_file():
            known = stored_studies(storage)
            raise UnknownStudyError(f"no study {name!r} in {storage} (no {SPEC_FILE} there; known: "
                                    f"{known or 'none'}); check the URI")
        return dataclasses.replace(load_spec(mirror_dir(uri) / SPEC_FILE), storage=storage)
    root = Path(storage or DEFAULT_STORAGE).expanduser()
    path = root / name / SPEC_FILE
    if not path.is_file():
        known = sorted(p.parent.name for p in root.glob(f"*/{SPEC_FILE}")) if root.is_dir() else []
        raise UnknownStudyError(f"no study {name!r} in {root.absolute()} (known: {known or 'none'}); "
                                "pass --storage if it lives elsewhere")
    spec = load_spec(path)
    if "://" in spec.storage:
        return spec
    # The study is where it was found, whatever folder it was started from (a relative storage path
    # in spec.yaml means the folder the driver ran in).
    return dataclasses.replace(spec, storage=str(root.absolute()))


def resume_study(name: str, storage: str | None = None, address: str | None = None) -> Path:
    """Continue an interrupted study: finished trials stay, unfinished ones continue from checkpoints."""
    from ray import tune

    from study.tracking import check_tracking_uri
    from study.trainable import train_trial

    spec = load_study_spec(name, storage)
    check_tracking_uri(spec.tracking_uri)
    check_study_inputs(spec, plan(spec))
    storage_path, filesystem = _tune_storage(spec)
    path = f"{storage_path}/{TUNE_DIR}"
    hold_study(study_dir(spec))
    end_recorded(study_dir(spec))  # what a dead driver of this study left running
    init_ray(address)
    if not address:
        record_started(study_dir(spec))
    if not tune.Tuner.can_restore(path, storage_filesystem=filesystem):
        raise UnknownStudyError(f"{path} holds no Tune experiment to resume; run the study with `ocr-study run`")
    search = _phase(read_study(study_dir(spec)) or {}, "search")
    try:
        if not (search or {}).get("done"):  # a driver killed between the phases goes straight on to confirm
            _prebuild(spec, _search_configs(spec, plan(spec)))
            resources = {"cpu": spec.resources.cpus, "gpu": spec.resources.gpus}
            tuner = tune.Tuner.restore(path, tune.with_resources(train_trial, resources), resume_unfinished=True,
                                       resume_errored=True, storage_filesystem=filesystem)
            tuner.fit()
        _run_confirm(spec, resume=True)
    finally:
        _push(spec)
    return study_dir(spec)


def trial_table(spec: StudySpec) -> list[dict[str, Any]]:
    """One row per trial of a study, from its own record: cell, seed, status, epochs, final metric, error.

    The same record ``results`` collects, so ``status`` and the report always agree.
    """
    folder = study_dir(spec)
    if not (folder / TUNE_DIR).is_dir() and not trial_folders(folder):
        raise StudyError(f"study {spec.name!r} has not started yet: no trial in {folder}")
    rows = []
    for path, doc in study_trials(folder):
        rows.append(_trial_row(doc, read_epochs(path), spec.scheduler.metric))
    return rows


def _trial_row(doc: dict[str, Any], epochs: list[dict[str, Any]], metric: str) -> dict[str, Any]:
    by_epoch = {int(line["epoch"]): line for line in epochs if isinstance(line.get("epoch"), (int, float))}
    last = by_epoch[max(by_epoch)] if by_epoch else {}
    config = doc.get("config") or {}
    return {"trial_id": doc["trial_id"], "phase": config.get(f"{META}phase", "search"),
            "cell": config.get(f"{META}cell", ""),
            "setting": config.get(f"{META}setting", 0), "seed": config.get("seed"), "status": doc.get("status"),
            "epochs": max(by_epoch, default=0), metric: last.get(metric), "config": config,
            "error": doc.get("error") or ""}
