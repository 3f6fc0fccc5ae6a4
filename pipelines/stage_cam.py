"""Stage 1: train the CAM classifier on image-level tags and turn its CAMs into pseudo-masks.

The result depends on the data, the CAM config, the seed and, only when OCR acts on the CAM network
(``ocr.stage`` = ``cam`` or ``both``), on the OCR config. It is cached on disk under a key of exactly
those, so every trial that shares them reads one copy; concurrent trials compute it once.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor

from ocr import confusion_matrix, mean_iou
from pipelines.cache import cached, config_key, load_tensors, save_tensors
from pipelines.config import TrialConfig
from pipelines.data import SegData
from pipelines.engine import (
    Precision,
    batch_indices,
    poly_schedule,
    progress_hook,
    resolve_device,
    to_input,
    train_epoch,
)
from pipelines.models import CAMNet
from pipelines.ocr_term import OCRTerm
from pipelines.reporter import Reporter

log = logging.getLogger(__name__)
FORMAT = 3  # bump when stage-1 code changes what it computes


@dataclass(frozen=True)
class CamResult:
    """Pseudo-masks ``(N, H, W)`` uint8 for the training split, the trained encoder, stage-1 metrics."""

    pseudo_masks: Tensor
    metrics: dict[str, float]
    encoder: dict[str, Tensor]


def stage_key(cfg: TrialConfig) -> str:
    """The cache key of stage 1 for this trial config."""
    ocr_part = dataclasses.asdict(cfg.ocr) if cfg.ocr.stage in ("cam", "both") else None
    return config_key("cam", FORMAT, cfg.data, cfg.cam, cfg.seed, ocr_part)


def run_cam_stage(cfg: TrialConfig, data: SegData, reporter: Reporter) -> CamResult:
    """Train (or read from the cache) the CAM classifier and its pseudo-masks."""
    path = cfg.cache_path / "stage1" / f"cam-{stage_key(cfg)}.pt"
    return cached(path, lambda: _build(cfg, data, reporter), _save, _load)


def _save(path: Path, result: CamResult) -> None:
    encoder = {f"encoder.{k}": v for k, v in result.encoder.items()}
    save_tensors(path, {"pseudo_masks": result.pseudo_masks, **encoder}, result.metrics)


def _load(path: Path) -> CamResult:
    tensors, meta = load_tensors(path)
    encoder = {k.removeprefix("encoder."): v for k, v in tensors.items() if k.startswith("encoder.")}
    return CamResult(tensors["pseudo_masks"], {k: float(v) for k, v in meta.items()}, encoder)


def _build(cfg: TrialConfig, data: SegData, reporter: Reporter) -> CamResult:
    start = time.perf_counter()
    device = resolve_device(cfg.device)
    torch.manual_seed(cfg.seed)
    model = CAMNet(data.in_channels, data.num_classes, cfg.cam.width).to(device)
    _train(cfg, data, model, device, reporter)
    pseudo = make_pseudo_masks(model, data.train.images, data.train.tags, cfg, device)
    conf = confusion_matrix(pseudo, data.train.masks, data.num_classes + 1)
    metrics = {"pseudo_miou": mean_iou(conf), "cam_seconds": time.perf_counter() - start}
    log.info("stage 1: pseudo-mask mIoU %.3f in %.1f s", metrics["pseudo_miou"], metrics["cam_seconds"])
    encoder = {k: v.detach().cpu().clone() for k, v in model.encoder.state_dict().items()}
    return CamResult(pseudo, metrics, encoder)


def _train(cfg: TrialConfig, data: SegData, model: CAMNet, device: torch.device, reporter: Reporter) -> None:
    c = cfg.cam
    optimizer = torch.optim.AdamW(model.parameters(), lr=c.lr, weight_decay=c.weight_decay)
    precision = Precision(device, cfg.amp)
    ocr = OCRTerm(cfg.ocr, data.train.tags, cfg.seed, device)
    use_ocr = ocr.enabled and cfg.ocr.stage in ("cam", "both")
    gen = torch.Generator().manual_seed(cfg.seed)
    steps = -(-len(data.train) // c.batch_size)
    schedule = poly_schedule(optimizer, c.epochs * steps)
    for epoch in range(c.epochs):

        def loss_fn(idx: Tensor) -> dict[str, Tensor]:
            tags = data.train.tags[idx].to(device)
            logits, cams = model(to_input(data.train.images[idx], device))
            parts = {"bce": F.binary_cross_entropy_with_logits(logits.float(), tags.float())}
            if use_ocr:
                parts["ocr"] = ocr(model.pixel_logits(cams), tags, None)
            parts["total"] = sum(parts.values(), torch.zeros((), device=device))
            return parts

        batches = list(batch_indices(len(data.train), c.batch_size, gen))
        hook = progress_hook(reporter.progress, "cam", epoch * steps, c.epochs * steps)
        train_epoch(model, optimizer, batches, loss_fn, precision, "cam", epoch, schedule, hook, seed=cfg.seed)


@torch.no_grad()
def make_pseudo_masks(model: CAMNet, images: Tensor, tags: Tensor, cfg: TrialConfig,
                      device: torch.device) -> Tensor:
    """Pseudo-masks ``(N, H, W)`` uint8 from the CAMs of the tagged classes.

    Each tagged class's CAM is ReLU'd, upsampled to the image, and divided by its maximum; a pixel takes
    the class with the highest normalised score if that score reaches ``cam.bg_threshold``, else
    background. With ``cam.ink_threshold > 0`` (for the digit scenes) foreground is kept only where the
    image is brighter than that threshold: a crude stand-in for the saliency refinement many WSSS
    methods use. Untagged classes never appear.
    """
    model.eval()
    out = torch.empty(images.shape[0], *images.shape[2:], dtype=torch.uint8)
    for idx in batch_indices(len(images), 256, None):
        x = to_input(images[idx], device)  # (B, C_in, H, W)
        cams = F.relu(model(x)[1].float())  # (B, C, h, w)
        cams = F.interpolate(cams, size=x.shape[2:], mode="bilinear", align_corners=False)
        cams = cams / cams.amax(dim=(2, 3), keepdim=True).clamp_min(1e-5)
        cams = cams * tags[idx].to(device)[:, :, None, None]  # (B, C, H, W)
        score, cls = cams.max(dim=1)  # (B, H, W)
        label = torch.where(score >= cfg.cam.bg_threshold, cls + 1, torch.zeros_like(cls))
        if cfg.cam.ink_threshold > 0:
            label = torch.where(x.mean(dim=1) > cfg.cam.ink_threshold, label, torch.zeros_like(label))
        out[idx] = label.to(torch.uint8).cpu()
    return out
