"""Stage 1's cache key and where its entry lives: plain config arithmetic, no torch, so that a study's driver
can tell which entries a phase lacks without loading the training code (:mod:`study.stage1_prep`)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from pipelines._keys import config_key
from pipelines.config import TrialConfig, parse_scales

FORMAT = 5  # bump when stage-1 code changes what it computes


def stage_key(cfg: TrialConfig) -> str:
    """The cache key of stage 1 (``source = cam``) for this trial config: data, ``cam.*``, seed, the CAM
    network's ``model.*`` fields, and ``ocr.*`` when OCR acts on the CAM network."""
    ocr_part = dataclasses.asdict(cfg.ocr) if cfg.ocr.stage in ("cam", "both") else None
    return config_key("cam", FORMAT, cfg.data, cfg.cam, cfg.seed, ocr_part, cam_network(cfg))


def cam_network(cfg: TrialConfig) -> dict[str, object]:
    """The ``model.*`` fields the CAM network and its training depend on (with the weights file's name,
    size and modification time: a replaced file is not silently reused), and the CAM views
    (``stage1.cam_scales``, ``stage1.cam_flip``) its pseudo-masks are inferred from."""
    m = cfg.model
    # settings added later enter the key only when they differ from what earlier versions did, so caches
    # made before them stay valid
    extra: dict[str, object] = {}
    if m.lr_schedule != "poly":
        extra.update(lr_schedule=m.lr_schedule, lr_step_at=m.lr_step_at, lr_step_gamma=m.lr_step_gamma)
    if m.head_bias_lr_mult or not m.head_bias_decay:
        extra.update(head_bias_lr_mult=m.head_bias_lr_mult, head_bias_decay=m.head_bias_decay)
    if parse_scales(cfg.stage1.cam_scales) != (1.0,) or cfg.stage1.cam_flip:
        extra.update(cam_scales=parse_scales(cfg.stage1.cam_scales), cam_flip=cfg.stage1.cam_flip)
    if m.name == "tiny":
        return {"name": m.name, "optimizer": m.optimizer, "poly_power": m.poly_power, **extra}
    weights = Path(m.cam_weights_path).expanduser() if m.cam_weights_path else None
    stat = weights.stat() if weights is not None and weights.is_file() else None
    return {"name": m.name, "backbone": m.cam_backbone, "output_stride": m.cam_output_stride,
            "weights": str(weights.resolve()) if weights else "",
            "weights_stat": [stat.st_size, stat.st_mtime_ns] if stat else None, "freeze_bn": cfg.freeze_bn("cam"),
            "optimizer": m.optimizer, "momentum": m.momentum, "head_lr_mult": m.head_lr_mult,
            "poly_power": m.poly_power, **extra}


def stage1_entry(cfg: TrialConfig) -> Path:
    """Where this config's stage-1 cache entry lives: a ``.pt`` file (data in memory) or a folder of PNGs
    (data on disk), both named after :func:`stage_key`."""
    return cfg.cache_path / "stage1" / f"cam-{stage_key(cfg)}"


def stage1_ready(cfg: TrialConfig) -> bool:
    """Whether stage 1 needs no building: masks from a folder, or the cache entry is on this machine."""
    entry = stage1_entry(cfg)
    return cfg.stage1.source == "masks" or entry.is_dir() or entry.with_suffix(".pt").is_file()
