"""Stage 2: the segmentation network trained on the pseudo-masks with cross-entropy + α·OCR.

Each epoch it evaluates on the validation split (no tags at test time: the tags only score the OC rate
and the oracle mIoU), reports through the reporter, and writes a checkpoint (model, optimiser, epoch,
shuffling RNG, posterior prior) that a restarted trial continues from.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from pipelines.artifacts import write_class_iou, write_examples, write_prior
from pipelines.config import TrialConfig
from pipelines.data import SegData
from pipelines.engine import (
    Precision,
    batch_indices,
    evaluate,
    poly_schedule,
    progress_hook,
    resolve_device,
    to_input,
    train_epoch,
)
from pipelines.models import SegNet
from pipelines.ocr_term import OCRTerm
from pipelines.reporter import Reporter

log = logging.getLogger(__name__)
CHECKPOINT_FILE = "state.pt"
IGNORE = 255


@dataclass
class SegState:
    """Everything the epoch loop carries and a checkpoint restores."""

    model: SegNet
    optimizer: torch.optim.Optimizer
    schedule: torch.optim.lr_scheduler.LambdaLR
    ocr: OCRTerm
    generator: torch.Generator
    epoch: int = 0  # epochs completed
    best_miou: float = 0.0


def _new_state(cfg: TrialConfig, data: SegData, device: torch.device,
               encoder: dict[str, Tensor] | None) -> SegState:
    torch.manual_seed(cfg.seed)
    model = SegNet(data.in_channels, data.num_classes, cfg.seg.width)
    if cfg.seg.init == "cam" and encoder is not None:
        model.encoder.load_state_dict(encoder)
    model = model.to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.seg.lr, weight_decay=cfg.seg.weight_decay)
    ocr = OCRTerm(cfg.ocr, data.train.tags, cfg.seed, device)
    schedule = poly_schedule(optimizer, cfg.seg.epochs * -(-len(data.train) // cfg.seg.batch_size))
    return SegState(model, optimizer, schedule, ocr, torch.Generator().manual_seed(cfg.seed + 1))


def save_checkpoint(state: SegState, folder: Path) -> Path:
    """Write the state atomically to ``folder/state.pt``; returns the folder."""
    folder.mkdir(parents=True, exist_ok=True)
    blob = {"model": state.model.state_dict(), "optimizer": state.optimizer.state_dict(),
            "schedule": state.schedule.state_dict(), "ocr": state.ocr.state_dict(),
            "rng": state.generator.get_state(), "epoch": state.epoch, "best_miou": state.best_miou}
    tmp = folder / f".{CHECKPOINT_FILE}.{os.getpid()}.tmp"
    torch.save(blob, tmp)
    os.replace(tmp, folder / CHECKPOINT_FILE)
    return folder


def load_checkpoint(state: SegState, folder: Path, device: torch.device) -> None:
    """Restore what :func:`save_checkpoint` wrote (``weights_only=True``)."""
    blob: dict[str, Any] = torch.load(folder / CHECKPOINT_FILE, map_location=device, weights_only=True)
    state.model.load_state_dict(blob["model"])
    state.optimizer.load_state_dict(blob["optimizer"])
    state.schedule.load_state_dict(blob["schedule"])
    state.ocr.load_state_dict(blob["ocr"])
    state.generator.set_state(blob["rng"].cpu())
    state.epoch, state.best_miou = int(blob["epoch"]), float(blob["best_miou"])


def _loss_fn(state: SegState, cfg: TrialConfig, data: SegData, pseudo: Tensor,
             device: torch.device) -> Any:
    use_ocr = state.ocr.enabled and cfg.ocr.stage in ("seg", "both")

    def loss_fn(idx: Tensor) -> dict[str, Tensor]:
        target = pseudo[idx].to(device).long()  # (B, H, W)
        tags = data.train.tags[idx].to(device)  # (B, C)
        logits = state.model(to_input(data.train.images[idx], device))  # (B, C+1, H, W)
        parts = {"ce": F.cross_entropy(logits.float(), target, ignore_index=IGNORE)}
        if use_ocr:
            parts["ocr"] = state.ocr(logits, tags, target != IGNORE)
        parts["total"] = sum(parts.values(), torch.zeros((), device=device))
        return parts

    return loss_fn


def run_seg_stage(cfg: TrialConfig, data: SegData, pseudo: Tensor, reporter: Reporter, work_dir: Path,
                  resume_from: Path | None = None, extra: dict[str, float] | None = None,
                  encoder: dict[str, Tensor] | None = None) -> dict[str, float]:
    """Train the segmentation network, reporting and checkpointing every epoch; returns the last metrics.

    Args:
        cfg: the trial config.
        data: the data set (train images/tags, val images/masks/tags).
        pseudo: stage 1's pseudo-masks for the training split ``(N, H, W)``.
        reporter: receives one metrics dict per epoch and progress ticks.
        work_dir: where checkpoints go (``work_dir/checkpoint``).
        resume_from: a checkpoint folder to continue from (defaults to ``work_dir/checkpoint`` if present).
        extra: metrics added to every report (stage-1 figures).
        encoder: stage 1's encoder weights, the starting point when ``seg.init = "cam"``.
    """
    device = resolve_device(cfg.device)
    state = _new_state(cfg, data, device, encoder)
    ckpt_dir = work_dir / "checkpoint"
    source = resume_from or (ckpt_dir if (ckpt_dir / CHECKPOINT_FILE).exists() else None)
    if source is not None:
        load_checkpoint(state, source, device)
        log.info("resumed stage 2 from %s after epoch %d", source, state.epoch)
    precision, loss_fn = Precision(device, cfg.amp), _loss_fn(state, cfg, data, pseudo, device)
    steps = -(-len(data.train) // cfg.seg.batch_size)
    metrics: dict[str, float] = {}
    while state.epoch < cfg.seg.epochs:
        start = time.perf_counter()
        batches = list(batch_indices(len(data.train), cfg.seg.batch_size, state.generator))
        hook = progress_hook(reporter.progress, "seg", state.epoch * steps, cfg.seg.epochs * steps)
        train = train_epoch(state.model, state.optimizer, batches, loss_fn, precision, "seg", state.epoch,
                            state.schedule, hook, seed=cfg.seed)
        state.epoch += 1
        metrics = _epoch_metrics(state, cfg, data, device, train, extra or {}, time.perf_counter() - start,
                                 ckpt_dir / "artifacts")
        reporter.report(metrics, save_checkpoint(state, ckpt_dir))
    return metrics


def _epoch_metrics(state: SegState, cfg: TrialConfig, data: SegData, device: torch.device,
                   train: dict[str, float], extra: dict[str, float], seconds: float,
                   artifacts: Path) -> dict[str, float]:
    state.model.eval()
    scores = evaluate(state.model, data.val.images, data.val.masks, data.val.tags, data.num_classes + 1,
                      max(cfg.seg.batch_size, 64), device)
    val = scores.compute()
    artifacts.mkdir(parents=True, exist_ok=True)
    write_class_iou(scores.class_iou(), data.class_names, artifacts)
    if state.epoch == cfg.seg.epochs:
        write_prior(state.ocr, data.class_names, artifacts)
        write_examples(state.model, data, state.ocr, cfg.ocr, artifacts, device)
    state.best_miou = max(state.best_miou, val["miou"])
    return {
        "epoch": float(state.epoch),
        **{f"val_{k}": v for k, v in val.items()},
        "best_val_miou": state.best_miou,
        "train_loss": train["total"],
        "train_ce": train["ce"],
        "train_ocr": train.get("ocr", 0.0),
        "images_per_s": train["images_per_s"],
        "epoch_seconds": seconds,
        **extra,
    }
