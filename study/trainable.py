"""What Ray Tune runs for one trial, and the one place that calls Ray's reporting API."""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ray import tune

from pipelines.config import from_flat
from record import CONTINUES_FROM, META, Tag
from study.failures import fatal_report
from study.trial_record import TrialRecorder

log = logging.getLogger(__name__)
NODE_CACHE_ENV = "OCR_STUDY_CACHE_DIR"  # set on a Ray node (ray start's environment): its own cache folder


class TuneReporter:
    """Reports each epoch to Tune with its checkpoint folder (Ray 2.60's ``tune.report``).

    Every report also carries ``node_id`` (the Ray node the trial runs on), ``trial_cpu_s`` and
    ``trial_wall_s``, the CPU and wall seconds since the trial (or its resumption) started. Given the
    trial's config, it first writes each epoch into the study's own record (:mod:`study.trial_record`).
    """

    def __init__(self, extra: Mapping[str, Any], config: Mapping[str, Any] | None = None) -> None:
        import ray

        node_id = ray.get_runtime_context().get_node_id()
        self.extra = {"node_id": node_id, **extra}  # keys beyond the record's line: REPORT_EXTRAS
        self.cpu_start, self.wall_start = time.process_time(), time.monotonic()
        self.record = None if config is None else TrialRecorder(tune.get_context().get_trial_id(), config, node_id)
        self.last: dict[str, Any] = {}

    def report(self, metrics: Mapping[str, float], checkpoint_dir: Path | None = None) -> None:
        """Write the epoch into the record, then send it (and the checkpoint, if any) to Tune."""
        checkpoint = tune.Checkpoint.from_directory(str(checkpoint_dir)) if checkpoint_dir else None
        usage = {"trial_cpu_s": time.process_time() - self.cpu_start,
                 "trial_wall_s": time.monotonic() - self.wall_start}
        if self.record is not None:
            self.record.epoch({**metrics, **usage})
        self.last = {**metrics, **usage, **self.extra}
        tune.report(self.last, checkpoint=checkpoint)

    def failed(self, err: BaseException) -> None:
        """Write the error that ends this attempt of the trial into the record."""
        if self.record is not None:
            self.record.failed(err)

    def progress(self, stage: str, done: int, total: int) -> None:
        """Not shown: Tune trials report per epoch only."""


def split_config(config: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """Split a Tune config into trial keys and ``meta.*`` keys (cell, setting, study, spec hash)."""
    meta = {k[len(META):]: v for k, v in config.items() if k.startswith(META)}
    trial = {k: v for k, v in config.items() if not k.startswith(META)}
    return trial, meta


def continued(meta: Mapping[str, Any]) -> Path | None:
    """The finished search trial's checkpoint a confirm trial continues (``meta.continues_from``, set by
    :func:`study.confirm.continuable`), when it is readable here; else ``None``: the trial trains itself."""
    from pipelines.stage_seg import CHECKPOINT_FILE

    folder = meta.get(CONTINUES_FROM)
    if not folder:
        return None
    if not (Path(folder) / CHECKPOINT_FILE).is_file():
        log.warning("the checkpoint of search trial %s is not at %s on this node: training the confirm trial",
                    meta.get(Tag.CONTINUES.key), folder)
        return None
    return Path(folder)


def train_trial(config: dict[str, Any]) -> None:
    """The Tune trainable: one trial, resumed from Tune's checkpoint when there is one."""
    from pipelines.trial import run_trial  # the training code (torch): loaded by the worker, not the driver

    values, meta = split_config(config)
    if os.environ.get(NODE_CACHE_ENV):  # a node of a cluster keeps its caches where it was told to
        values["cache_dir"] = os.environ[NODE_CACHE_ENV]
    cfg = from_flat(values)
    # The trial writes its checkpoints outside Tune's trial folder: Tune copies each reported one into the
    # study's storage itself, and the driver, which syncs that folder while trials run on its node, would
    # otherwise copy them again and could meet a checkpoint half-written.
    work_dir = Path(tempfile.mkdtemp(prefix=f"ocr-study-trial-{tune.get_context().get_trial_id()}-"))
    checkpoint = tune.get_checkpoint()
    reporter = TuneReporter({}, config)
    try:
        if checkpoint is None:
            source = continued(meta)
            run_trial(cfg, reporter, work_dir, resume_from=source, continues=source is not None)
        else:
            with checkpoint.as_directory() as folder:
                run_trial(cfg, reporter, work_dir, resume_from=Path(folder))
    except Exception as err:  # the trial's own code failed: it would fail again, so it is not retried
        reporter.failed(err)
        tune.report(fatal_report(reporter.last, err))
        raise
    finally:
        shutil.rmtree(work_dir, ignore_errors=True)
