"""Run, resume and inspect a study on Ray Tune: one Tune run per study, MLflow as its view."""

from __future__ import annotations

import dataclasses
import logging
import os
import shutil
import socket
import threading
from pathlib import Path
from typing import Any

import yaml

from record import (
    CONFIRM_TUNE_DIR,
    META,
    SPEC_FILE,
    TUNE_DIR,
    Phase,
    PhaseDoc,
    StopReason,
    TrialDoc,
    config_reports,
    planned_epochs,
    read_epochs,
    read_study,
    stop_reason,
    study_trials,
    trial_folders,
    write_study,
)
from storage import SHARED_CACHE, join_uri, mlflow_artifacts, push_record
from study.guard import (
    check_study_inputs,
    clear_folder,
    end_recorded,
    hold_study,
    record_started,
    release_study,
)
from study.handle import Study, StudyError, UnknownStudyError
from study.plan import cell_config, study_record

log = logging.getLogger(__name__)


def _absolute(flat: dict[str, Any]) -> dict[str, Any]:
    """Paths made absolute in the driver: trials run with the trial folder as working directory."""
    out = dict(flat)
    out["cache_dir"] = str(Path(out["cache_dir"]).expanduser().absolute())
    for key in ("data.root", "data.labels", "stage1.masks_dir"):
        if out.get(key):
            out[key] = str(Path(out[key]).expanduser().absolute())
    return out


def _shared_cache(study: Study) -> dict[str, str]:
    """A study on an object store shares its stage-1 cache through it, under its own prefix."""
    return {"shared_cache": join_uri(study.uri, SHARED_CACHE)} if study.remote else {}


def build_searcher(study: Study) -> Any:
    """The grid × Optuna × seeds searcher for this study."""
    from study.searcher import GridCellSearcher
    from study.tracking import git_commit

    spec = study.spec
    threads = max(1, int(spec.resources.cpus))
    cells = [dataclasses.replace(cell, base=_absolute({**cell_config(cell), "threads": threads,
                                                         **_shared_cache(study)}))
             for cell in study.plan.cells]
    search = spec.search
    return GridCellSearcher(cells, list(spec.seeds), sampler=search.sampler if search else "tpe",
                            seed=search.seed if search else 0, max_trials=spec.budget.max_trials,
                            meta={"study": spec.name, "spec_hash": study.hash, "git_commit": git_commit(),
                                  "phase": Phase.SEARCH, "record": str(study.folder)},
                            metric=spec.scheduler.metric, mode=spec.scheduler.mode)


def _search_configs(study: Study) -> list[dict[str, Any]]:
    """Each search cell's config on each seed, without sampled values (what stage 1 depends on); cells whose
    stage 1 depends on the sampled OCR values (``ocr.stage`` cam or both) are left out."""
    out = []
    for cell in study.plan.cells:
        base = _absolute({**cell_config(cell), **_shared_cache(study)})
        if cell.search and base.get("ocr.stage") in ("cam", "both"):
            continue
        out += [{**base, "seed": seed} for seed in study.spec.seeds]
    return out


def _prebuild(study: Study, configs: list[dict[str, Any]]) -> None:
    from study.stage1_prep import prebuild_stage1

    prebuild_stage1(configs, study.spec.resources.gpus)


def _tracking(study: Study, scheduler: str | None = None, max_epochs: int | None = None,
              rungs: tuple[int, ...] | None = None) -> Any:
    """The MLflow callback; by default the search phase's (the study's scheduler, its max epochs and rungs)."""
    from record import MLFLOW_ARTIFACTS_DIR
    from study.tracking import MLflowTracking

    spec = study.spec
    # With the default SQLite store, artifacts live beside it in the study folder (MLflow's own
    # default would be ./mlruns in whatever folder the driver was started from).
    artifacts = None if spec.tracking.uri else (study.folder / MLFLOW_ARTIFACTS_DIR).as_uri()
    if _direct_to_store(study):  # no server between: the driver writes them to the study's store itself
        artifacts = _store_artifacts(study)
    return MLflowTracking(spec.tracking_uri, study.experiment, spec.name, study.hash, artifacts,
                          scheduler or spec.scheduler.type, max_epochs or spec.scheduler.max_epochs,
                          spec.to_dict(), rungs=study.plan.rungs if rungs is None else rungs,
                          cache_dir=spec.trial.cache_path)


def _direct_to_store(study: Study) -> bool:
    """A study on an object store tracked in a database (not through a server) logs its artifacts there."""
    return study.remote and not study.spec.tracking_uri.startswith(("http://", "https://"))


def _store_artifacts(study: Study) -> str:
    """``<study>/mlflow-artifacts`` on the study's store; MLflow's S3 client gets the store's endpoint."""
    endpoint = study.store.endpoint_url
    if endpoint:
        os.environ.setdefault("MLFLOW_S3_ENDPOINT_URL", endpoint)
    return mlflow_artifacts(study.uri)


def _callbacks(study: Study, total: int) -> list[Any]:
    from study.failures import FailFast
    from study.progress import ProgressLine
    from study.trial_record import RecordCallback

    spec = study.spec
    return [FailFast(), RecordCallback(spec.scheduler.type, study.plan.max_epochs, study.plan.rungs),
            _tracking(study), ProgressLine(total, spec.scheduler.metric, spec.scheduler.mode), _json_logger()]


def _json_logger() -> Any:
    """Tune's ``params.json`` and ``result.json`` per trial (its other default loggers are off: init_ray)."""
    from ray.tune.logger import JsonLoggerCallback

    return JsonLoggerCallback()


def _warm(study: Study) -> None:
    """Make the study's MLflow store (schema, experiment, parent run), then import what the searcher (Optuna)
    and the report (pandas, scipy) need."""
    _ = _tracking(study).parent_run_id
    import results  # noqa: F401
    from study import searcher  # noqa: F401


class Background:
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


def _tuner(study: Study) -> Any:
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler, FIFOScheduler
    from ray.tune.search import ConcurrencyLimiter

    from study.trainable import train_trial

    spec = study.spec
    searcher = build_searcher(study)
    sched = spec.scheduler
    scheduler = (ASHAScheduler(time_attr="epoch", max_t=sched.max_epochs, grace_period=sched.grace_period,
                               reduction_factor=sched.reduction_factor)
                 if sched.type == "asha" else FIFOScheduler())
    resources = {"cpu": spec.resources.cpus, "gpu": spec.resources.gpus}
    tune_config = tune.TuneConfig(metric=sched.metric, mode=sched.mode,
                                  search_alg=ConcurrencyLimiter(searcher, spec.max_concurrent),
                                  scheduler=scheduler, num_samples=searcher.total, reuse_actors=True,
                                  time_budget_s=spec.budget.time_s)
    storage_path, filesystem = study.tune_storage()
    run_config = tune.RunConfig(name=TUNE_DIR, storage_path=storage_path, storage_filesystem=filesystem, verbose=0,
                                failure_config=tune.FailureConfig(max_failures=2),
                                checkpoint_config=tune.CheckpointConfig(num_to_keep=1),
                                callbacks=_callbacks(study, searcher.total))
    return tune.Tuner(tune.with_resources(train_trial, resources), tune_config=tune_config,
                      run_config=run_config)


def _trainable(study: Study) -> Any:
    from ray import tune

    from study.trainable import train_trial

    return tune.with_resources(train_trial, {"cpu": study.spec.resources.cpus, "gpu": study.spec.resources.gpus})


def _confirm_tuner(study: Study, phase: PhaseDoc, restore: bool) -> Any:
    """The confirm phase's Tune run: the planned configs, those that train first (:func:`study.confirm.run_order`),
    no early stopping."""
    from ray import tune
    from ray.tune.schedulers import FIFOScheduler
    from ray.tune.search import ConcurrencyLimiter

    from study.confirm import run_order
    from study.failures import FailFast
    from study.progress import ProgressLine
    from study.searcher import PlannedSearcher
    from study.trial_record import RecordCallback

    storage_path, filesystem = study.tune_storage()
    if restore:
        return tune.Tuner.restore(study.tune_path(Phase.CONFIRM), _trainable(study), resume_unfinished=True,
                                  resume_errored=True, storage_filesystem=filesystem)
    configs, epochs = list(phase.configs), int(phase.epochs or 0)
    searcher = PlannedSearcher(run_order(configs)) if phase.seed_rule is None else \
        _sequential_searcher(study, phase)
    callbacks = [FailFast(), RecordCallback("none", epochs, ()), _tracking(study, "none", epochs, ()),
                 ProgressLine(len(configs), str(phase.metric), str(phase.mode), at_most=phase.seed_rule is not None),
                 _json_logger()]
    tune_config = tune.TuneConfig(metric=phase.metric, mode=phase.mode, scheduler=FIFOScheduler(),
                                  search_alg=ConcurrencyLimiter(searcher, study.spec.max_concurrent),
                                  num_samples=len(configs), reuse_actors=True)
    run_config = tune.RunConfig(name=CONFIRM_TUNE_DIR, storage_path=storage_path, storage_filesystem=filesystem,
                                verbose=0,
                                failure_config=tune.FailureConfig(max_failures=2),
                                checkpoint_config=tune.CheckpointConfig(num_to_keep=1), callbacks=callbacks)
    return tune.Tuner(_trainable(study), tune_config=tune_config, run_config=run_config)


def _sequential_searcher(study: Study, phase: PhaseDoc) -> Any:
    """The searcher of a sequential confirm phase: rounds of seeds while a setting's answer is open; each round's
    decisions go into ``study.json`` and the log."""
    from study.searcher import SequentialSearcher
    from study.sequential import record_values, round_entry

    assert phase.seed_rule is not None
    configs, metric = list(phase.configs), str(phase.metric)

    def on_round(round_: int, seen: dict[str, Any]) -> None:
        entry = round_entry(round_, seen)
        doc = read_study(study.folder)
        if doc is not None:
            write_study(study.folder, doc.round_decided({k: v for k, v in entry.items() if k != "lines"}))
        print(f"confirm round {round_}: " + "; ".join(entry["lines"]), flush=True)

    return SequentialSearcher(configs, phase.seed_rule, metric, str(phase.mode),
                              record=lambda: record_values(study.folder, configs, metric), on_round=on_round)


def _print_seed_plan(study: Study, phase: PhaseDoc) -> None:
    """At the search phase's end: the seeds each chosen setting needs, from the search's seed-to-seed spread
    where it ran several seeds, and what the phase may cost at the search trials' measured time."""
    from results._sequential import plan_lines
    from study.confirm import search_differences
    from study.sequential import arm

    assert phase.seed_rule is not None
    walls = []  # seconds per epoch of the completed search trials (their last report's trial_wall_s)
    for path, doc in study_trials(study.folder):
        last = read_epochs(path)[-1:] if doc.phase == Phase.SEARCH and doc.stop_reason == StopReason.COMPLETED else []
        if last and isinstance(last[0].get("trial_wall_s"), (int, float)) and last[0].get("epoch"):
            walls.append(float(last[0]["trial_wall_s"]) / float(last[0]["epoch"]))
    trial_s = sum(walls) / len(walls) * int(phase.epochs or 1) if walls else None
    settings = len({arm(c) for c in phase.configs}) - 1
    lines = plan_lines(phase.seed_rule, max(settings, 0), study.plan.concurrency, trial_s,
                       search_differences(study, phase), str(phase.mode))
    print("confirm phase, sequential: " + lines[0] + "\n" + "\n".join(lines[1:]), flush=True)


def _run_confirm(study: Study, resume: bool) -> None:
    """After the search: mark it done, choose the settings (once), run or continue the confirm phase."""
    from study.confirm import choose

    doc = (read_study(study.folder) or study_record(study.plan)).search_ended()
    phase = doc.phase(Phase.CONFIRM)
    if study.spec.confirm is not None and phase is not None and not phase.chosen:
        doc = doc.confirm_chosen(choose(study))
        phase = doc.phase(Phase.CONFIRM)
    write_study(study.folder, doc)
    if study.spec.confirm is None or phase is None:
        return
    if not phase.configs:
        log.warning("confirm phase: no cell has a search result to confirm")
        return
    from ray import tune

    _, filesystem = study.tune_storage()
    restore = resume and tune.Tuner.can_restore(study.tune_path(Phase.CONFIRM), storage_filesystem=filesystem)
    if phase.seed_rule is not None and not restore:
        _print_seed_plan(study, phase)
    first = [c for c in phase.configs if int(c.get(f"{META}round", 1)) == 1]  # later rounds may never run
    _prebuild(study, first)
    _confirm_tuner(study, phase, restore).fit()


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
    # Tune's default loggers: TensorBoard's imports torch into the driver and writes event files nobody reads
    # (MLflow is the study's view), the CSV one repeats result.json; _callbacks adds the JSON one back
    os.environ.setdefault("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", "1")
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


def _check_store(study: Study, fresh: bool) -> None:
    """A study on an object store: one already there is continued with resume, or emptied with --fresh."""
    if not study.remote:
        return
    if study.store.names() and not fresh:
        raise StudyError(f"study {study.name!r} already exists in {study.uri}: continue it with "
                         f"`ocr-study resume {study.name} --storage {study.spec.storage}`, or start over with --fresh")
    study.store.fs.delete_dir_contents(study.store.root, missing_dir_ok=True)


def _write_spec(study: Study, fresh: bool) -> None:
    _check_store(study, fresh)
    folder = study.folder
    if (folder / SPEC_FILE).exists() or (folder / TUNE_DIR).exists():
        if not fresh:
            raise StudyError(f"study {study.name!r} already exists in {folder}: continue it with "
                             f"`ocr-study resume {study.name}`, or start over with --fresh")
        clear_folder(folder)  # all but the lock this driver holds
    folder.mkdir(parents=True, exist_ok=True)
    tmp = folder / f".{SPEC_FILE}.tmp"
    tmp.write_text(yaml.safe_dump(study.spec.to_dict(), sort_keys=False))
    tmp.replace(folder / SPEC_FILE)


def run_study(study: Study, address: str | None = None, fresh: bool = False) -> Path:
    """Run a study from the start; returns its folder."""
    check_study_inputs(study.spec, study.plan)  # before anything heavy is imported: bad data fails in seconds
    # Imports Ray Tune, here in the main thread before the thread below starts: two threads importing Ray
    # Tune at once failed ("cannot import name 'Trial' from partially initialized module").
    from study.tracking import check_tracking_uri

    check_tracking_uri(study.spec.tracking_uri)
    folder = study.folder
    existed = folder.exists()
    warm: Background | None = None
    try:
        hold_study(folder)
        _write_spec(study, fresh)
        write_study(folder, study_record(study.plan))
        # While Ray starts (it mostly waits), one thread makes the MLflow store (its schema, the experiment,
        # the parent run), then loads the modules the phases and the report need: one thread, so that no two
        # import the same package at once.
        warm = Background(lambda: _warm(study))
        init_ray(address)
        if not address:
            record_started(folder)
        warm.join()
    except BaseException:
        if warm is not None:  # it writes into the folder: let it end before the folder goes
            warm.thread.join()
        release_study(folder)
        if not existed:  # nothing half-made is left behind
            shutil.rmtree(folder, ignore_errors=True)
        raise
    try:
        _prebuild(study, _search_configs(study))
        _tuner(study).fit()
        _run_confirm(study, resume=False)
    finally:
        _push(study)
    return folder


def stop_ray_in_background() -> Background:
    """Disconnect this driver from Ray, and stop the study's own local Ray, in a thread; :meth:`Background.join`
    waits for it. The report, which needs no Ray, is written meanwhile: Ray's shutdown mostly waits (its
    processes one after the other, about 1 s for the autoscaler monitor alone) and took 1.9 s of every
    study's wall at exit (measured on the orchestration benchmark's study, README)."""
    import ray

    return Background(ray.shutdown)


def _push(study: Study) -> None:
    """A study on an object store: its record goes there (Tune wrote its own experiment there itself)."""
    if study.remote:
        push_record(study.folder, study.uri)


def resume_study(study: Study, address: str | None = None) -> Path:
    """Continue an interrupted study (opened with :func:`study.handle.load_study`): finished trials stay,
    unfinished ones continue from their checkpoints."""
    from ray import tune

    from study.tracking import check_tracking_uri

    check_tracking_uri(study.spec.tracking_uri)
    check_study_inputs(study.spec, study.plan)
    _, filesystem = study.tune_storage()
    path = study.tune_path(Phase.SEARCH)
    hold_study(study.folder)
    end_recorded(study.folder)  # what a dead driver of this study left running
    init_ray(address)
    if not address:
        record_started(study.folder)
    if not tune.Tuner.can_restore(path, storage_filesystem=filesystem):
        raise UnknownStudyError(f"{path} holds no Tune experiment to resume; run the study with `ocr-study run`")
    doc = read_study(study.folder)
    search = doc.phase(Phase.SEARCH) if doc is not None else None
    try:
        if search is None or not search.done:  # a driver killed between the phases goes straight on to confirm
            _prebuild(study, _search_configs(study))
            tuner = tune.Tuner.restore(path, _trainable(study), resume_unfinished=True, resume_errored=True,
                                       storage_filesystem=filesystem)
            tuner.fit()
        _run_confirm(study, resume=True)
    finally:
        _push(study)
    return study.folder


def trial_table(study: Study) -> list[dict[str, Any]]:
    """One row per trial of a study, from its own record: cell, seed, status, why it stopped, epochs, final
    metric, error.

    The same record ``results`` collects, so ``status`` and the report always agree.
    """
    folder = study.folder
    if not (folder / TUNE_DIR).is_dir() and not trial_folders(folder):
        raise StudyError(f"study {study.name!r} has not started yet: no trial in {folder}")
    return [_trial_row(doc, read_epochs(path), study) for path, doc in study_trials(folder)]


def _recorded_stop(doc: TrialDoc, epochs: int, study: Study) -> StopReason:
    """Why the trial stopped: what its ``trial.json`` says; derived from the study's plan only for a record
    from before the driver wrote it."""
    if doc.stop_reason is not None:
        return doc.stop_reason
    reports = config_reports(doc.config)
    if doc.phase == Phase.CONFIRM:  # the confirm phase runs without early stopping
        return stop_reason(doc.status, epochs, reports, "none")[0]
    plan = study.plan
    planned = planned_epochs(reports, study.spec.scheduler.type, plan.max_epochs)
    return stop_reason(doc.status, epochs, planned, study.spec.scheduler.type, plan.rungs)[0]


def _trial_row(doc: TrialDoc, epochs: list[dict[str, Any]], study: Study) -> dict[str, Any]:
    by_epoch = {int(line["epoch"]): line for line in epochs if isinstance(line.get("epoch"), (int, float))}
    last = by_epoch[max(by_epoch)] if by_epoch else {}
    config = doc.config
    metric = study.spec.scheduler.metric
    return {"trial_id": doc.trial_id, "phase": config.get(f"{META}phase", Phase.SEARCH),
            "cell": config.get(f"{META}cell", ""),
            "setting": config.get(f"{META}setting", 0), "seed": config.get("seed"), "status": doc.status,
            "stop_reason": _recorded_stop(doc, max(by_epoch, default=0), study), "epochs": max(by_epoch, default=0),
            metric: last.get(metric), "config": config, "error": doc.error or "",
            **({_test_metric(metric): last.get(_test_metric(metric))} if metric.startswith("val_") else {})}


def _test_metric(metric: str) -> str:
    """``val_miou`` → ``test_miou``: the study's metric on the held-out split (a confirm trial's last report)."""
    return f"test_{metric.removeprefix('val_')}"
