"""What the training stages see of a data set: batches, whatever the data set is stored as.

A :class:`TrialData` hands out :class:`Batch` es on the trial's device: images ready for the network,
masks ``(B, H, W)`` long with 255 = ignore, tags ``(B, C)``, where a crop padded, and the pixels the OCR
loss sees (:meth:`Batch.ocr_valid`: never padding; uncertain 255 pixels as ``ocr.uncertain`` says).
:class:`MemoryData` serves the digit scenes from in-memory tensors (inputs in 0..1, as the tiny networks
were tuned on); :class:`DiskData` streams VOC, COCO or a folder layout through
``DataLoader`` workers with the field's augmentation (inputs normalised with the ImageNet mean/std).
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import DataLoader

from pipelines.config import DataConfig
from pipelines.data._dataset import SegDataset
from pipelines.data._transforms import denormalize
from pipelines.data._types import IGNORE, SegData, SplitFiles

Targets = Tensor | Path | None  # pseudo-masks: a (N, H, W) uint8 tensor, a folder of PNGs, or none


@dataclass
class Batch:
    """One batch on the trial's device.

    Attributes:
        images: ``(B, C_in, H, W)`` float, the network's input.
        masks: ``(B, H, W)`` long, 0 background, ``c + 1`` class ``c``, 255 ignore (and padding); ``None``
            where the stage needs no mask.
        tags: ``(B, C)`` uint8 image-level labels.
        index: ``(B,)`` the items' positions in their split.
        padding: ``(B, H, W)`` bool, True where a training crop padded the image (255 in ``masks`` too, but
            uncertain pixels of a pseudo-mask are 255 as well); ``None``: no padding anywhere.
    """

    images: Tensor
    masks: Tensor | None
    tags: Tensor
    index: Tensor
    padding: Tensor | None = None

    def __len__(self) -> int:
        return int(self.images.shape[0])

    @property
    def valid(self) -> Tensor | None:
        """``(B, H, W)`` bool: pixels that are neither padding nor 255 (``None`` without masks)."""
        return None if self.masks is None else self.masks != IGNORE

    def ocr_valid(self, include_uncertain: bool) -> Tensor | None:
        """``(B, H, W)`` bool: the pixels the OCR loss sees (``None``: all of them). Padding never; uncertain
        (255) pixels of the mask only with ``include_uncertain`` (the authors' released loss averages over
        every pixel of the crop)."""
        keep = None if self.padding is None else ~self.padding
        if not include_uncertain and self.masks is not None:
            certain = self.masks != IGNORE
            keep = certain if keep is None else keep & certain
        return keep


class Loader(Protocol):
    """A re-iterable source of batches (one pass = one epoch) with a known length."""

    def __iter__(self) -> Iterator[Batch]:
        """The batches of one pass."""

    def __len__(self) -> int:
        """Batches per pass."""


class TrialData(Protocol):
    """A data set as the stages use it (see the module docstring)."""

    name: str
    class_names: tuple[str, ...]
    train_tags: Tensor  # (N, C) uint8
    val_tags: Tensor  # (M, C) uint8
    has_train_masks: bool
    in_channels: int

    def train_loader(self, batch_size: int, generator: torch.Generator, targets: Targets,
                     device: torch.device) -> Loader:
        """Shuffled (augmented, for disk data) training batches with ``targets`` as masks."""

    def train_images(self, device: torch.device) -> Loader:
        """Every training image whole, in order, with its ground-truth mask if there is one."""

    def val_loader(self, batch_size: int, device: torch.device) -> Loader:
        """Every validation image whole, in order, with its ground-truth mask."""

    def test_loader(self, batch_size: int, device: torch.device) -> Loader | None:
        """Every held-out test image whole, in order, with its mask; ``None`` without a test split."""

    def picture(self, images: Tensor) -> np.ndarray:
        """One input image ``(C_in, H, W)`` as something ``imshow`` shows."""


@dataclass
class _IndexLoader:
    """Batches of in-memory tensors by index (shuffled when a generator is given)."""

    split_images: Tensor
    masks: Tensor | None
    tags: Tensor
    batch_size: int
    generator: torch.Generator | None
    device: torch.device

    def __len__(self) -> int:
        return math.ceil(len(self.split_images) / self.batch_size)

    def __iter__(self) -> Iterator[Batch]:
        n = len(self.split_images)
        order = torch.randperm(n, generator=self.generator) if self.generator is not None else torch.arange(n)
        for idx in order.split(self.batch_size):
            images = self.split_images[idx].to(self.device, non_blocking=True).float().div_(255.0)
            masks = None if self.masks is None else self.masks[idx].to(self.device).long()
            yield Batch(images, masks, self.tags[idx].to(self.device), idx)


class MemoryData:
    """The digit scenes (any :class:`SegData`) in memory; inputs are the images scaled to 0..1."""

    def __init__(self, data: SegData) -> None:
        self.data = data
        self.name, self.class_names = data.name, data.class_names
        self.train_tags, self.val_tags = data.train.tags, data.val.tags
        self.has_train_masks = True
        self.in_channels = data.in_channels

    def train_loader(self, batch_size: int, generator: torch.Generator, targets: Targets,
                     device: torch.device) -> Loader:
        """Shuffled batches of the training split; ``targets`` is a pseudo-mask tensor or ``None``."""
        if isinstance(targets, Path):
            raise TypeError("in-memory data takes pseudo-masks as a tensor, not a folder")
        return _IndexLoader(self.data.train.images, targets, self.train_tags, batch_size, generator, device)

    def train_images(self, device: torch.device) -> Loader:
        """The training split in order, 256 at a time, with its masks."""
        train = self.data.train
        return _IndexLoader(train.images, train.masks, train.tags, 256, None, device)

    def val_loader(self, batch_size: int, device: torch.device) -> Loader:
        """The validation split in order, with its masks."""
        val = self.data.val
        return _IndexLoader(val.images, val.masks, val.tags, batch_size, None, device)

    def test_loader(self, batch_size: int, device: torch.device) -> Loader | None:
        """The held-out test split in order, with its masks (``None`` when the data set has none)."""
        test = self.data.test
        return None if test is None else _IndexLoader(test.images, test.masks, test.tags, batch_size, None, device)

    def picture(self, images: Tensor) -> np.ndarray:
        """The grey level (channel mean) of a 0..1 input."""
        return images.float().mean(0).cpu().numpy()


@dataclass
class _StreamLoader:
    """A ``DataLoader`` whose tuples become :class:`Batch` es on the device."""

    loader: DataLoader[tuple[Tensor, Tensor, Tensor, Tensor, int]]
    device: torch.device
    with_masks: bool

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self) -> Iterator[Batch]:
        for images, masks, padding, tags, index in self.loader:
            masks = masks.to(self.device, non_blocking=True).long() if self.with_masks else None
            pad = padding.to(self.device, non_blocking=True) if bool(padding.any()) else None
            yield Batch(images.to(self.device, non_blocking=True), masks, tags.to(self.device), index, pad)


class DiskData:
    """VOC, COCO or a folder layout, streamed from disk with the training transforms of ``cfg``.

    Args:
        cfg: the data config (transforms, workers).
        train, val: the splits' files.
        class_names: the C foreground classes.
        train_tags, val_tags: ``(N, C)`` and ``(M, C)`` uint8 image-level labels.
        workers: ``DataLoader`` worker processes (0 = read in the trial's own process).
    """

    in_channels = 3

    def __init__(self, cfg: DataConfig, train: SplitFiles, val: SplitFiles, class_names: tuple[str, ...],
                 train_tags: Tensor, val_tags: Tensor, workers: int) -> None:
        self.cfg, self.train, self.val = cfg, train, val
        self.name, self.class_names = cfg.name, class_names
        self.train_tags, self.val_tags = train_tags, val_tags
        self.has_train_masks = train.masks is not None
        self.workers = workers
        self._val: dict[torch.device, Loader] = {}  # one loader (and its persistent workers) per device

    def _loader(self, dataset: SegDataset, batch_size: int, generator: torch.Generator | None,
                device: torch.device, with_masks: bool) -> Loader:
        loader = DataLoader(dataset, batch_size=batch_size, shuffle=generator is not None, generator=generator,
                            num_workers=self.workers, persistent_workers=self.workers > 0,
                            pin_memory=device.type == "cuda")
        return _StreamLoader(loader, device, with_masks)

    def train_loader(self, batch_size: int, generator: torch.Generator, targets: Targets,
                     device: torch.device) -> Loader:
        """Augmented, shuffled crops; ``targets`` is a folder of pseudo-mask PNGs or ``None`` (the CAM
        stage: masks then only mark the crop's padding as 255)."""
        if isinstance(targets, Tensor):
            raise TypeError("disk data takes pseudo-masks as a folder of PNGs, not a tensor")
        from pipelines.data._augment import train_transform  # torchvision: only disk data sets load it

        c = self.cfg
        masks = None if targets is None else [targets / f"{i}.png" for i in self.train.ids]
        transform = train_transform(c.crop_size, c.scale_min, c.scale_max, c.flip)
        dataset = SegDataset(self.train.images, masks, self.train_tags, transform)
        return self._loader(dataset, batch_size, generator, device, with_masks=True)

    def train_images(self, device: torch.device) -> Loader:
        """Whole training images one at a time (they differ in size), with ground truth if any."""
        dataset = SegDataset(self.train.images, self.train.masks, self.train_tags, None)
        return self._loader(dataset, 1, None, device, with_masks=self.has_train_masks)

    def val_loader(self, batch_size: int, device: torch.device) -> Loader:
        """Whole validation images one at a time at their original resolution, with ground truth."""
        if device not in self._val:
            dataset = SegDataset(self.val.images, self.val.masks, self.val_tags, None)
            self._val[device] = self._loader(dataset, 1, None, device, with_masks=True)
        return self._val[device]

    def test_loader(self, batch_size: int, device: torch.device) -> Loader | None:
        """None: VOC's test masks are not public and COCO's val is what papers report, so val is the split
        these data sets are measured on."""
        return None

    def picture(self, images: Tensor) -> np.ndarray:
        """The RGB image ``(H, W, 3)`` in 0..1."""
        return denormalize(images.float().cpu()).permute(1, 2, 0).numpy()
