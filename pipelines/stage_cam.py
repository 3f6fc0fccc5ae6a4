"""Stage 1: the pseudo-masks stage 2 trains on.

``stage1.source = cam``: train the CAM classifier on image-level tags and turn its CAMs (summed over
the views ``stage1.cam_scales`` / ``stage1.cam_flip``) into pseudo-masks by a threshold: CAM, not IRN
(no affinity network, no random walk). For the digit scenes they are one in-memory tensor; for disk
data sets one index PNG per training image at full resolution, in a cache folder (written to a
temporary folder, then renamed). The result depends on the data, the CAM config, the seed and, only
when OCR acts on the CAM network (``ocr.stage`` = ``cam`` or ``both``), on the OCR config; every trial
that shares them reads one copy, and concurrent trials compute it once. With ``shared_cache`` (a study
on an object store) the nodes of a cluster compute it once between them, through the store.

``stage1.source = masks``: the pseudo-masks of another WSSS method, a folder of PNGs. Every mask is read
once (values checked, mIoU against the ground truth where it exists), cached under a key that covers the
folder's content (names, sizes, modification times), so an edited folder is never silently reused.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from itertools import islice
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ocr import confusion_matrix, mean_iou
from pipelines.accel import configure_backend, place_model
from pipelines.cache import Shared, cached, cached_folder, config_key, load_tensors, save_tensors
from pipelines.config import TrialConfig, parse_scales
from pipelines.data import IGNORE, Batch, DiskData, MemoryData, TrialData, folder_fingerprint, write_index_png
from pipelines.data._disk import read_mask
from pipelines.engine import Precision, endless, input_feed, progress_hook, resolve_device, train_epoch
from pipelines.models import backbone_of, build_cam_model
from pipelines.ocr_term import OCRTerm
from pipelines.optim import make_optimizer
from pipelines.reporter import Reporter
from pipelines.stage1_key import FORMAT, stage1_entry

log = logging.getLogger(__name__)
STATE_FILE = "stage1.pt"  # encoder weights and metrics, next to the PNGs of a disk data set


@dataclass(frozen=True)
class CamResult:
    """Stage 1's output.

    Attributes:
        pseudo_masks: ``(N, H, W)`` uint8 for in-memory data, or the folder of ``<id>.png`` pseudo-masks.
        metrics: ``pseudo_miou`` (where the training split has ground truth) and ``cam_seconds``.
        encoder: the CAM encoder's weights (``None`` when the masks came from a folder).
    """

    pseudo_masks: Tensor | Path
    metrics: dict[str, float]
    encoder: dict[str, Tensor] | None


def run_cam_stage(cfg: TrialConfig, data: TrialData, reporter: Reporter) -> CamResult:
    """Stage 1 from the cache, or computed (and cached) once: see the module docstring."""
    if cfg.stage1.source == "masks":
        return _from_folder(cfg, data)
    folder = stage1_entry(cfg)
    if isinstance(data, DiskData):
        return cached_folder(folder, lambda tmp: _build_folder(cfg, data, reporter, tmp), _load_folder,
                             _shared(cfg, f"{folder.name}.tar"))
    path = folder.with_suffix(".pt")
    return cached(path, lambda: _build_tensor(cfg, data, reporter), _save, _load, _shared(cfg, path.name))


def _shared(cfg: TrialConfig, name: str) -> Shared | None:
    """Where stage 1 is shared across nodes: ``<shared_cache>/stage1/<name>`` (none without ``shared_cache``)."""
    return Shared(cfg.shared_cache, f"stage1/{name}") if cfg.shared_cache else None


def _save(path: Path, result: CamResult) -> None:
    encoder = {f"encoder.{k}": v for k, v in (result.encoder or {}).items()}
    pseudo = result.pseudo_masks
    save_tensors(path, {**({"pseudo_masks": pseudo} if isinstance(pseudo, Tensor) else {}), **encoder},
                 result.metrics)


def _load(path: Path) -> CamResult:
    tensors, meta = load_tensors(path)
    encoder = {k.removeprefix("encoder."): v for k, v in tensors.items() if k.startswith("encoder.")}
    return CamResult(tensors.get("pseudo_masks", path.parent), {k: float(v) for k, v in meta.items()}, encoder)


def _load_folder(folder: Path) -> CamResult:
    result = _load(folder / STATE_FILE)
    return dataclasses.replace(result, pseudo_masks=folder)


def _train_cam(cfg: TrialConfig, data: TrialData, reporter: Reporter) -> tuple[nn.Module, torch.device]:
    device = resolve_device(cfg.device)
    configure_backend(device)
    torch.manual_seed(cfg.seed)
    model = build_cam_model(cfg, len(data.class_names), data.in_channels)
    model = place_model(model, device, cfg.model.channels_last)
    _train(cfg, data, model, device, reporter)
    return model, device


def _encoder(model: nn.Module) -> dict[str, Tensor]:
    return {k: v.detach().cpu().clone() for k, v in backbone_of(model).state_dict().items()}


def _build_tensor(cfg: TrialConfig, data: TrialData, reporter: Reporter) -> CamResult:
    if not isinstance(data, MemoryData):
        raise TypeError("in-memory pseudo-masks need in-memory data")
    start = time.perf_counter()
    model, device = _train_cam(cfg, data, reporter)
    feed = input_feed(data, cfg, device)
    images = data.data.train.images
    pseudo = torch.empty(images.shape[0], *images.shape[2:], dtype=torch.uint8)
    conf = torch.zeros(len(data.class_names) + 1, len(data.class_names) + 1, dtype=torch.int64)
    for batch in data.train_images(device):
        labels = pseudo_labels(model, batch, cfg, feed).cpu()
        pseudo[batch.index] = labels
        conf += _confusion(labels, batch, conf.shape[0])
    metrics = {"pseudo_miou": mean_iou(conf), "cam_seconds": time.perf_counter() - start}
    log.info("stage 1: pseudo-mask mIoU %.3f in %.1f s", metrics["pseudo_miou"], metrics["cam_seconds"])
    return CamResult(pseudo, metrics, _encoder(model))


def _confusion(labels: Tensor, batch: Batch, k: int) -> Tensor:
    if batch.masks is None:
        return torch.zeros(k, k, dtype=torch.int64)
    return confusion_matrix(labels, batch.masks.cpu(), k)


def _build_folder(cfg: TrialConfig, data: DiskData, reporter: Reporter, folder: Path) -> None:
    start = time.perf_counter()
    model, device = _train_cam(cfg, data, reporter)
    feed = input_feed(data, cfg, device)
    k = len(data.class_names) + 1
    conf = torch.zeros(k, k, dtype=torch.int64)
    for done, batch in enumerate(data.train_images(device), start=1):
        labels = pseudo_labels(model, batch, cfg, feed).cpu()  # (1, H, W)
        write_index_png(folder / f"{data.train.ids[int(batch.index[0])]}.png", labels[0].numpy())
        conf += _confusion(labels, batch, k)
        reporter.progress("pseudo", done, len(data.train))
    metrics = {"cam_seconds": time.perf_counter() - start}
    if data.has_train_masks:
        metrics["pseudo_miou"] = mean_iou(conf)
    log.info("stage 1: %s; pseudo-masks in %s", metrics, folder)
    save_tensors(folder / STATE_FILE, {f"encoder.{n}": v for n, v in _encoder(model).items()}, metrics)


def _train(cfg: TrialConfig, data: TrialData, model: nn.Module, device: torch.device,
           reporter: Reporter) -> None:
    c = cfg.cam
    precision = Precision(device, cfg.amp)
    ocr = OCRTerm(cfg.ocr, data.train_tags, cfg.seed, device)
    use_ocr = ocr.enabled and cfg.ocr.stage in ("cam", "both")
    loader = data.train_loader(c.batch_size, torch.Generator().manual_seed(cfg.seed), None, device)
    steps = len(loader)
    total = c.iterations or c.epochs * steps
    optimizer, schedule = make_optimizer(model, cfg, "cam", total)
    feed = input_feed(data, cfg, device)
    pixel_logits: Callable[[Tensor], Tensor] = model.pixel_logits  # type: ignore[assignment]

    def loss_fn(batch: Batch) -> dict[str, Tensor]:
        logits, cams = model(feed(batch.images))
        parts = {"bce": F.binary_cross_entropy_with_logits(logits.float(), batch.tags.float())}
        if use_ocr:
            parts["ocr"] = ocr(pixel_logits(cams), batch.tags, _at(batch.valid, cams.shape[2:]))
        parts["total"] = sum(parts.values(), torch.zeros((), device=device))
        return parts

    if c.iterations:  # one pass of train_epoch over the whole budget (progress and faults count it as epoch 1)
        hook = progress_hook(reporter.progress, "cam", 0, total)
        train_epoch(model, optimizer, islice(endless(loader), total), loss_fn, precision, "cam", 0, schedule,
                    hook, seed=cfg.seed)
        return
    for epoch in range(c.epochs):
        hook = progress_hook(reporter.progress, "cam", epoch * steps, total)
        train_epoch(model, optimizer, loader, loss_fn, precision, "cam", epoch, schedule, hook, seed=cfg.seed)


def _at(valid: Tensor | None, size: torch.Size) -> Tensor | None:
    """The valid pixels at the CAMs' resolution (nearest), or ``None``."""
    if valid is None:
        return None
    return F.interpolate(valid[:, None].float(), size=size, mode="nearest")[:, 0] > 0.5


@torch.no_grad()
def cam_views(model: nn.Module, images: Tensor, scales: tuple[float, ...], flip: bool,
              feed: Callable[[Tensor], Tensor] | None = None) -> Tensor:
    """The ReLU'd CAMs ``(B, C, H, W)`` of ``images (B, C_in, H, W)`` summed over views, as IRN infers
    them: each scale (bilinear rescale of the input) and, with ``flip``, its mirror image; each view's
    CAMs upsampled to the full image (and un-mirrored) before the sum."""
    size = images.shape[2:]
    total = torch.zeros((), device=images.device)
    for scale in scales:
        x = images if scale == 1.0 else F.interpolate(images, scale_factor=scale, mode="bilinear",
                                                      align_corners=False, recompute_scale_factor=True)
        for mirrored in (False, True) if flip else (False,):
            view = x.flip(-1) if mirrored else x
            cams = F.relu(model(feed(view) if feed is not None else view)[1].float())  # (B, C, h, w)
            cams = F.interpolate(cams, size=size, mode="bilinear", align_corners=False)
            total = total + (cams.flip(-1) if mirrored else cams)
    return total


@torch.no_grad()
def pseudo_labels(model: nn.Module, batch: Batch, cfg: TrialConfig,
                  feed: Callable[[Tensor], Tensor] | None = None) -> Tensor:
    """Pseudo-masks ``(B, H, W)`` uint8 of whole images from the CAMs of their tagged classes.

    Each tagged class's CAM is ReLU'd, upsampled to the image (summed over the views of
    ``stage1.cam_scales`` / ``stage1.cam_flip``: :func:`cam_views`), and divided by its maximum; a pixel takes
    the class with the highest normalised score if that score reaches ``cam.bg_threshold``, else
    background. With ``cam.ink_threshold > 0`` foreground is kept only where the image is brighter than
    that threshold (digit scenes only: bright ink on a dark canvas; photos ignore it), a crude stand-in
    for the saliency refinement many WSSS methods use. Untagged classes never appear. ``feed`` prepares
    the images for the network (:func:`pipelines.engine.input_feed`; default: as they are).
    """
    model.eval()
    x = batch.images  # (B, C_in, H, W)
    cams = cam_views(model, x, parse_scales(cfg.stage1.cam_scales), cfg.stage1.cam_flip, feed)  # (B, C, H, W)
    cams = cams / cams.amax(dim=(2, 3), keepdim=True).clamp_min(1e-5)
    cams = cams * batch.tags[:, :, None, None]  # (B, C, H, W)
    score, cls = cams.max(dim=1)  # (B, H, W)
    label = torch.where(score >= cfg.cam.bg_threshold, cls + 1, torch.zeros_like(cls))
    if cfg.cam.ink_threshold > 0 and not cfg.data.on_disk:
        label = torch.where(x.mean(dim=1) > cfg.cam.ink_threshold, label, torch.zeros_like(label))
    return label.to(torch.uint8)


def _from_folder(cfg: TrialConfig, data: TrialData) -> CamResult:
    if not isinstance(data, DiskData):
        raise TypeError("stage1.source = masks needs a data set on disk")
    folder = Path(cfg.stage1.masks_dir).expanduser().resolve()
    key = config_key("masks", FORMAT, cfg.data, str(folder), folder_fingerprint(folder))
    path = cfg.cache_path / "stage1" / f"masks-{key}.pt"
    metrics = cached(path, lambda: _score_folder(folder, data), lambda p, m: save_tensors(p, {}, m),
                     lambda p: {k: float(v) for k, v in load_tensors(p)[1].items()})
    return CamResult(folder, metrics, None)


def _score_folder(folder: Path, data: DiskData) -> dict[str, float]:
    """Read every pseudo-mask once (values checked); their mIoU against the ground truth if any, with
    uncertain (255) pixels counted as background."""
    k = len(data.class_names) + 1
    truth = data.train.masks

    def one(i: int) -> np.ndarray:
        pseudo = read_mask(folder / f"{data.train.ids[i]}.png", k - 1)
        if truth is None:
            return np.zeros((k, k), dtype=np.int64)
        pseudo = np.where(pseudo == IGNORE, 0, pseudo)  # uncertain scores as background, as in IRN's evaluation
        target = read_mask(truth[i], k - 1)
        valid = target != IGNORE
        return np.bincount(target[valid].astype(np.int64) * k + pseudo[valid], minlength=k * k).reshape(k, k)

    start = time.perf_counter()
    conf = torch.from_numpy(sum((one(i) for i in range(len(data.train))), np.zeros((k, k), dtype=np.int64)))
    metrics = {"cam_seconds": time.perf_counter() - start}
    if truth is not None:
        metrics["pseudo_miou"] = mean_iou(conf)
    log.info("stage 1 from %s: %s", folder, metrics)
    return metrics
