"""One trial: data (checked) → stage 1 (pseudo-masks: CAM classifier or a folder; cached) → stage 2
(segmentation + OCR)."""

from __future__ import annotations

import logging
from pathlib import Path

import torch

from pipelines.config import TrialConfig
from pipelines.data import check_data, open_data
from pipelines.models import check_weights
from pipelines.reporter import ListReporter, Reporter
from pipelines.stage_cam import run_cam_stage
from pipelines.stage_seg import run_seg_stage

log = logging.getLogger(__name__)


def run_trial(cfg: TrialConfig, reporter: Reporter, work_dir: Path,
              resume_from: Path | None = None, continues: bool = False) -> dict[str, float]:
    """Run a whole trial and return the last epoch's metrics.

    Args:
        cfg: everything the trial depends on.
        reporter: receives each epoch's metrics with its checkpoint folder, and progress ticks.
        work_dir: the trial's own folder (checkpoints); caches shared by trials live in ``cfg.cache_dir``.
        resume_from: a checkpoint folder written by an earlier run of this trial (or, with ``continues``,
            by a finished trial of the same config, whose last epoch this trial evaluates and reports).
    """
    torch.set_num_threads(cfg.threads)
    check_data(cfg)  # bad data fails before anything is written
    work_dir.mkdir(parents=True, exist_ok=True)
    data = open_data(cfg)
    check_weights(cfg, data.in_channels)  # a bad weights file fails now, not after stage 1
    stage1 = run_cam_stage(cfg, data, reporter)
    log.info("stage 1 ready: %s", stage1.metrics)
    extra = {k: v for k, v in stage1.metrics.items() if k == "pseudo_miou"}
    return run_seg_stage(cfg, data, stage1.pseudo_masks, reporter, work_dir, resume_from,
                         extra=extra, encoder=stage1.encoder, report_finished=continues)


def prepare_stage1(cfg: TrialConfig) -> dict[str, float]:
    """Build (or find) this config's stage-1 cache with ``cfg.threads`` threads, so that trials find it
    ready; returns stage 1's metrics. A study runs this ahead of a phase, once per distinct stage-1 key."""
    torch.set_num_threads(cfg.threads)
    check_data(cfg)
    data = open_data(cfg)
    check_weights(cfg, data.in_channels)
    return run_cam_stage(cfg, data, ListReporter()).metrics
