"""What Ray Tune runs for one trial, and the one place that calls Ray's reporting API."""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ray import tune

from pipelines.config import from_flat
from pipelines.trial import run_trial
from study.failures import fatal_report
from study.searcher import META

log = logging.getLogger(__name__)


class TuneReporter:
    """Reports each epoch to Tune with its checkpoint folder (Ray 2.60's ``tune.report``).

    Every report also carries ``node_id`` (the Ray node the trial runs on) and ``trial_cpu_s``, the CPU
    seconds this process spent since the trial (or its resumption) started.
    """

    def __init__(self, extra: Mapping[str, Any]) -> None:
        import ray

        self.extra = {"node_id": ray.get_runtime_context().get_node_id(), **extra}
        self.cpu_start = time.process_time()
        self.last: dict[str, Any] = {}

    def report(self, metrics: Mapping[str, float], checkpoint_dir: Path | None = None) -> None:
        """Send metrics (and the checkpoint, if any) to Tune."""
        checkpoint = tune.Checkpoint.from_directory(str(checkpoint_dir)) if checkpoint_dir else None
        usage = {"trial_cpu_s": time.process_time() - self.cpu_start}
        self.last = {**metrics, **usage, **self.extra}
        tune.report(self.last, checkpoint=checkpoint)

    def progress(self, stage: str, done: int, total: int) -> None:
        """Not shown: Tune trials report per epoch only."""


def split_config(config: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """Split a Tune config into trial keys and ``meta.*`` keys (cell, setting, study, spec hash)."""
    meta = {k[len(META):]: v for k, v in config.items() if k.startswith(META)}
    trial = {k: v for k, v in config.items() if not k.startswith(META)}
    return trial, meta


def train_trial(config: dict[str, Any]) -> None:
    """The Tune trainable: one trial, resumed from Tune's checkpoint when there is one."""
    values, _meta = split_config(config)
    cfg = from_flat(values)
    work_dir = Path(tune.get_context().get_trial_dir())
    checkpoint = tune.get_checkpoint()
    reporter = TuneReporter({})
    try:
        if checkpoint is None:
            run_trial(cfg, reporter, work_dir)
        else:
            with checkpoint.as_directory() as folder:
                run_trial(cfg, reporter, work_dir, resume_from=Path(folder))
    except Exception as err:  # the trial's own code failed: it would fail again, so it is not retried
        tune.report(fatal_report(reporter.last, err))
        raise
