"""From a trial config to its :class:`TrialData`: digit scenes in memory, disk data sets streamed."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from pipelines.cache import cached, config_key, load_tensors, save_tensors
from pipelines.config import DataConfig, TrialConfig
from pipelines.data._coco import COCO_CLASSES, coco_files
from pipelines.data._disk import mask_classes
from pipelines.data._folder import folder_class_names, folder_files
from pipelines.data._labels import read_labels
from pipelines.data._load import load_data
from pipelines.data._png import folder_fingerprint
from pipelines.data._trial_data import DiskData, MemoryData, TrialData
from pipelines.data._types import DataError, SplitFiles
from pipelines.data._voc import VOC_CLASSES, voc_files, voc_root

log = logging.getLogger(__name__)
TAGS_VERSION = 2  # bump whenever how tags are read changes: it is part of their cache key


def data_root(cfg: DataConfig) -> Path:
    """The data set's folder (for VOC, the ``VOC2012`` folder even when ``root`` is ``VOCdevkit``)."""
    root = Path(cfg.root).expanduser()
    return voc_root(root) if cfg.name == "voc" else root


def class_names_of(cfg: DataConfig) -> tuple[str, ...]:
    """The C foreground class names of a disk data set."""
    if cfg.name == "voc":
        return VOC_CLASSES
    if cfg.name == "coco":
        return COCO_CLASSES
    return folder_class_names(Path(cfg.root).expanduser())


def split_files(cfg: DataConfig, split: str, field: str, need_masks: bool = True) -> SplitFiles:
    """The files of ``split`` of the disk data set ``cfg`` names (``field`` names it in errors)."""
    root = data_root(cfg)
    if cfg.name == "voc":
        return voc_files(root, split, cfg.max_images, need_masks)
    if cfg.name == "coco":
        return coco_files(root, split, cfg.max_images, field, need_masks)
    return folder_files(root, split, cfg.max_images, need_masks)


def tags_from_mask_files(masks: Sequence[Path], num_classes: int) -> torch.Tensor:
    """Tags ``(N, C)`` uint8 from full-resolution index-PNG masks (values checked).

    Read one after the other from PIL's histograms: decoding every mask into numpy in a thread pool was
    slower here and left the process about 90 MB larger per 1,000 masks (heap fragmentation).
    """
    rows = [mask_classes(path, num_classes) for path in masks]
    if not rows:
        return torch.zeros((0, num_classes), dtype=torch.uint8)
    return torch.from_numpy(np.stack(rows)).to(torch.uint8)


def _labels_path(cfg: DataConfig) -> Path | None:
    return Path(cfg.labels).expanduser() if cfg.labels else None


def _tags(cfg: DataConfig, train: SplitFiles, val: SplitFiles, names: tuple[str, ...],
          cache_dir: Path, masks_dir: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Training tags from ``cfg.tag_source`` (``masks``: the pseudo-masks in ``masks_dir``), validation tags
    from the ground truth; cached under a key of everything they are read from."""
    source = cfg.tag_source
    labels = _labels_path(cfg) if source == "file" else None
    stat = (labels.stat().st_size, labels.stat().st_mtime_ns) if labels and labels.is_file() else None
    folder = Path(masks_dir).expanduser().resolve() if source == "masks" else None
    stamp = folder_fingerprint(folder) if folder is not None and folder.is_dir() else None
    key = config_key("tags", TAGS_VERSION, cfg.name, str(data_root(cfg).resolve()), cfg.train_split,
                     cfg.val_split, cfg.max_images, source, str(labels) if labels else "", stat,
                     str(folder) if folder else "", stamp)

    def build() -> dict[str, torch.Tensor]:
        log.info("reading the tags of %d training (from %s) and %d validation images", len(train), source,
                 len(val))
        if labels is not None:
            train_tags = read_labels(labels, train.ids, names)
        elif folder is not None:  # as the OCR authors' dataset: the classes of np.unique(pseudo-mask), 0/255 left out
            train_tags = tags_from_mask_files([folder / f"{i}.png" for i in train.ids], len(names))
        else:
            train_tags = tags_from_mask_files(train.masks or (), len(names))
        return {"train": train_tags, "val": tags_from_mask_files(val.masks or (), len(names))}

    path = cache_dir / "data" / f"{cfg.name}-tags-{key}.pt"
    tags = cached(path, build, lambda p, t: save_tensors(p, t, {}), lambda p: load_tensors(p)[0])
    return tags["train"], tags["val"]


def open_data(cfg: TrialConfig) -> TrialData:
    """The data of a trial: digit scenes in memory (cached), or a disk data set streamed from its files.

    For disk data sets the image-level tags are read once and cached under ``cache_dir/data``: validation
    tags from the ground-truth masks, training tags from where ``data.tags`` says (the ground truth, the
    pseudo-masks of ``stage1.masks_dir``, or ``data.labels``).

    Raises:
        DataError: naming the path, what is missing or wrong, and how to fix it.
    """
    d = cfg.data
    if not d.on_disk:
        return MemoryData(load_data(d, cfg.cache_path))
    names = class_names_of(d)
    train = split_files(d, d.train_split, "train_split", need_masks=d.tag_source == "gt")
    val = split_files(d, d.val_split, "val_split")
    if train.masks is None and d.tag_source == "gt":
        raise DataError(f"data.train_split = {d.train_split!r} has no masks to read tags from; give data.labels "
                        "(data.tags=file) or, with stage1.source=masks, data.tags=masks")
    train_tags, val_tags = _tags(d, train, val, names, cfg.cache_path, cfg.stage1.masks_dir)
    workers = d.workers if d.workers >= 0 else cfg.threads
    log.info("data %s: %d train, %d val images, %d classes, %d loader workers",
             d.name, len(train), len(val), len(names), workers)
    return DiskData(d, train, val, names, train_tags, val_tags, workers)
