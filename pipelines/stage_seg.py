"""Stage 2: the segmentation network trained on the pseudo-masks with cross-entropy + α·OCR.

The budget is ``seg.epochs`` passes over the training split or ``seg.iterations`` optimiser steps
(WSSS code's unit) with a report every ``seg.report_every`` steps; below, an "epoch" is one report
period either way (ASHA and the curves count them). Every ``eval.every`` periods and after the last it
evaluates on the validation split at full resolution
(no tags at test time: the tags only score the OC rate and the oracle mIoU) and reports through the
reporter; every epoch it writes a checkpoint (model, optimiser, epoch, shuffling RNG, posterior prior)
that a restarted trial continues from. The reported checkpoint is the one of an evaluated epoch.
A trial continuing another trial's checkpoint of its last epoch (how the confirm phase continues a
completed search trial of the same config: ``report_finished``) trains nothing: it evaluates that epoch
by this config's protocol (the held-out split included, with ``eval.test``) and reports it.
"""

from __future__ import annotations

import logging
import math
import os
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from itertools import islice
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from pipelines.accel import configure_backend, place_model
from pipelines.artifacts import write_class_iou, write_examples, write_prior
from pipelines.config import TrialConfig
from pipelines.data import Batch, Loader, Targets, TrialData
from pipelines.engine import Precision, endless, input_feed, progress_hook, resolve_device, train_epoch
from pipelines.evaluation import evaluate
from pipelines.figures import draw_pending
from pipelines.models import backbone_of, build_seg_model
from pipelines.ocr_term import OCRTerm
from pipelines.optim import make_optimizer
from pipelines.reporter import Reporter

log = logging.getLogger(__name__)
CHECKPOINT_FILE = "state.pt"
IGNORE = 255


@dataclass
class SegState:
    """Everything the epoch loop carries and a checkpoint restores."""

    model: nn.Module
    optimizer: torch.optim.Optimizer
    schedule: torch.optim.lr_scheduler.LambdaLR
    ocr: OCRTerm
    generator: torch.Generator
    epoch: int = 0  # report periods (epochs) completed
    best_miou: float = 0.0
    iteration: int = 0  # optimiser steps completed
    train: dict[str, float] | None = None  # the last period's training figures (loss parts, images/s)


def total_steps(cfg: TrialConfig, loader_len: int) -> int:
    """Optimiser steps of the whole stage 2: ``seg.iterations``, else ``seg.epochs`` passes."""
    return cfg.seg.total_steps or cfg.seg.epochs * loader_len


def _new_state(cfg: TrialConfig, data: TrialData, device: torch.device, encoder: dict[str, Tensor] | None,
               steps: int, generator: torch.Generator) -> SegState:
    torch.manual_seed(cfg.seed)
    model = build_seg_model(cfg, len(data.class_names), data.in_channels)
    if cfg.seg_init == "cam" and encoder is not None:
        backbone_of(model).load_state_dict(encoder)
    model = place_model(model, device, cfg.model.channels_last)
    optimizer, schedule = make_optimizer(model, cfg, "seg", steps)
    ocr = OCRTerm(cfg.ocr, data.train_tags, cfg.seed, device)
    return SegState(model, optimizer, schedule, ocr, generator)


def save_checkpoint(state: SegState, folder: Path) -> Path:
    """Write the state atomically to ``folder/state.pt``; returns the folder."""
    folder.mkdir(parents=True, exist_ok=True)
    blob = {"model": state.model.state_dict(), "optimizer": state.optimizer.state_dict(),
            "schedule": state.schedule.state_dict(), "ocr": state.ocr.state_dict(),
            "rng": state.generator.get_state(), "epoch": state.epoch, "best_miou": state.best_miou,
            "iteration": state.iteration, "train": state.train}
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
    state.iteration = int(blob.get("iteration", 0))
    train = blob.get("train")
    state.train = {str(k): float(v) for k, v in train.items()} if isinstance(train, dict) else None


def _loss_fn(state: SegState, cfg: TrialConfig, device: torch.device, feed: Callable[[Tensor], Tensor]) -> Any:
    use_ocr = state.ocr.enabled and cfg.ocr.stage in ("seg", "both")
    include_uncertain = cfg.ocr.uncertain == "include"

    def loss_fn(batch: Batch) -> dict[str, Tensor]:
        if batch.masks is None:
            raise ValueError("stage 2 trains on pseudo-masks, but the batch has none")
        logits = state.model(feed(batch.images))  # (B, C+1, H, W)
        parts = {"ce": F.cross_entropy(logits.float(), batch.masks, ignore_index=IGNORE)}
        if use_ocr:
            parts["ocr"] = state.ocr(logits, batch.tags, batch.ocr_valid(include_uncertain))
        parts["total"] = sum(parts.values(), torch.zeros((), device=device))
        return parts

    return loss_fn


def run_seg_stage(cfg: TrialConfig, data: TrialData, pseudo: Targets, reporter: Reporter, work_dir: Path,
                  resume_from: Path | None = None, extra: dict[str, float] | None = None,
                  encoder: dict[str, Tensor] | None = None, report_finished: bool = False) -> dict[str, float]:
    """Train the segmentation network, checkpointing every epoch and reporting every evaluated epoch
    (``eval.every``, and the last); returns the last metrics.

    Args:
        cfg: the trial config.
        data: the data set (training batches, whole validation images with masks and tags).
        pseudo: stage 1's pseudo-masks of the training split: ``(N, H, W)`` tensor or a folder of PNGs.
        reporter: receives one metrics dict per evaluated epoch and progress ticks.
        work_dir: where checkpoints go (``work_dir/checkpoint``).
        resume_from: a checkpoint folder to continue from (defaults to ``work_dir/checkpoint`` if present).
        extra: metrics added to every report (stage-1 figures).
        encoder: stage 1's encoder weights, the starting point when ``seg.init`` resolves to ``"cam"``.
        report_finished: when the checkpoint resumed from is of the last epoch (another trial's, continued),
            evaluate and report that epoch; without it such a trial (its own checkpoint, restored by Tune
            after its last report) reports nothing again.
    """
    device = resolve_device(cfg.device)
    configure_backend(device)
    generator = torch.Generator().manual_seed(cfg.seed + 1)
    loader = data.train_loader(cfg.seg.batch_size, generator, pseudo, device)
    total = total_steps(cfg, len(loader))
    state = _new_state(cfg, data, device, encoder, total, generator)
    ckpt_dir = work_dir / "checkpoint"
    source = resume_from or (ckpt_dir if (ckpt_dir / CHECKPOINT_FILE).exists() else None)
    if source is not None:
        load_checkpoint(state, source, device)
        log.info("resumed stage 2 from %s after epoch %d (iteration %d)", source, state.epoch, state.iteration)
    feed = input_feed(data, cfg, device)
    precision, loss_fn = Precision(device, cfg.amp), _loss_fn(state, cfg, device, feed)
    stream = endless(loader) if cfg.seg.iterations else None
    metrics: dict[str, float] = {}
    if report_finished and source is not None and state.epoch >= cfg.seg.reports:
        # a finished state (another trial's, continued: the confirm phase's seed of a completed search
        # trial): nothing left to train; its last epoch is evaluated here and reported
        train = state.train or dict.fromkeys(("total", "ce", "images_per_s", "seconds"), math.nan)
        metrics = _epoch_metrics(state, cfg, data, device, train, extra or {}, train.get("seconds", math.nan),
                                 ckpt_dir / "artifacts", feed)
        reporter.report(metrics, save_checkpoint(state, ckpt_dir))
    while state.epoch < cfg.seg.reports:
        start = time.perf_counter()
        batches, steps = _period(cfg, loader, stream, state.iteration)
        hook = progress_hook(reporter.progress, "seg", state.iteration, total)
        train = train_epoch(state.model, state.optimizer, batches, loss_fn, precision, "seg", state.epoch,
                            state.schedule, hook, seed=cfg.seed)
        state.epoch, state.iteration = state.epoch + 1, state.iteration + steps
        state.train = {k: float(v) for k, v in train.items()}
        if state.epoch % cfg.eval.every and state.epoch < cfg.seg.reports:
            save_checkpoint(state, ckpt_dir)
            continue
        metrics = _epoch_metrics(state, cfg, data, device, train, extra or {}, time.perf_counter() - start,
                                 ckpt_dir / "artifacts", feed)
        reporter.report(metrics, save_checkpoint(state, ckpt_dir))
    return metrics


def _period(cfg: TrialConfig, loader: Loader, stream: Iterator[Batch] | None,
            done: int) -> tuple[Iterable[Batch], int]:
    """The batches of the next report period and their number: one pass over ``loader`` for a budget
    in epochs, else the next ``seg.report_every`` steps of ``stream`` (fewer for the last period)."""
    if stream is None:
        return loader, len(loader)
    every = cfg.seg.report_every or cfg.seg.iterations
    steps = min(every, cfg.seg.iterations - done)
    return islice(stream, steps), steps


def _validate(state: SegState, cfg: TrialConfig, data: TrialData, device: torch.device,
              artifacts: Path, feed: Callable[[Tensor], Tensor], split: str = "val",
              final: bool = False) -> dict[str, float]:
    """Score one split (``val``, or ``test`` when the data set has one): ``<split>_*`` metrics, and the
    per-class IoU as an artifact; with ``final`` by the protocol of ``eval.final_*`` as ``<split>_final_*``."""
    state.model.eval()
    protocol = cfg.eval.final if final else cfg.eval.per_report
    if protocol is None:
        return {}
    batch = max(cfg.seg.batch_size, 64)
    loader = data.val_loader(batch, device) if split == "val" else data.test_loader(batch, device)
    if loader is None:
        return {}
    model = state.model
    scores = evaluate(lambda images: model(feed(images)), loader, len(data.class_names) + 1, protocol, _rgb(data))
    artifacts.mkdir(parents=True, exist_ok=True)
    prefix = f"{split}_final" if final else split
    suffix = ("" if split == "val" else f"_{split}") + ("_final" if final else "")
    write_class_iou(scores[""].class_iou(), data.class_names, artifacts, f"class_iou{suffix}.json")
    out = {f"{prefix}_{k}": v for k, v in scores[""].compute().items()}
    if "crf" in scores:
        write_class_iou(scores["crf"].class_iou(), data.class_names, artifacts, f"class_iou{suffix}_crf.json")
        out.update({f"{prefix}_{k}_crf": v for k, v in scores["crf"].compute().items()})
    return out


def _rgb(data: TrialData) -> Any:
    def pictures(images: Tensor) -> Tensor:  # (B, C_in, H, W) input → (B, H, W, 3) uint8
        rgb = [torch.from_numpy(data.picture(image)) for image in images]
        return torch.stack([(p[..., None].expand(*p.shape, 3) if p.ndim == 2 else p) for p in rgb]).mul(255)

    return pictures


def _epoch_metrics(state: SegState, cfg: TrialConfig, data: TrialData, device: torch.device,
                   train: dict[str, float], extra: dict[str, float], seconds: float,
                   artifacts: Path, feed: Callable[[Tensor], Tensor]) -> dict[str, float]:
    val = _validate(state, cfg, data, device, artifacts, feed)
    last = state.epoch >= cfg.seg.reports
    if last:  # the paper's protocol (eval.final_*), once, at the last report
        val.update(_validate(state, cfg, data, device, artifacts, feed, final=True))
    if cfg.eval.test and last:  # the held-out split, once, at the last report
        val.update(_validate(state, cfg, data, device, artifacts, feed, "test"))
        val.update(_validate(state, cfg, data, device, artifacts, feed, "test", final=True))
    # the numbers every evaluated epoch: a trial that ASHA stops after this report still has them (its
    # pictures are drawn by the study's MLflow callback); the pictures once, at the last report
    write_prior(state.ocr, data.class_names, artifacts)
    write_examples(state.model, data, state.ocr, cfg.ocr, artifacts, device, feed=feed, epoch=state.epoch)
    if last:
        draw_pending(artifacts, cfg.cache_path)
    state.best_miou = max(state.best_miou, val["val_miou"])
    return {
        "epoch": float(state.epoch),
        "iteration": float(state.iteration),
        **val,
        "best_val_miou": state.best_miou,
        "train_loss": train["total"],
        "train_ce": train["ce"],
        "train_ocr": train.get("ocr", 0.0),
        "images_per_s": train["images_per_s"],
        "epoch_seconds": seconds,
        **extra,
    }
