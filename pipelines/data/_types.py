"""The containers every data set is delivered in, and the error raised for unusable data on disk."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

IGNORE = 255  # mask value of pixels that no loss or metric counts


class DataError(ValueError):
    """A data set cannot be read: its message names the path, what is wrong, and how to fix it."""


class DataNotFoundError(DataError, FileNotFoundError):
    """A file or folder a data set needs is missing (a :class:`DataError` and a ``FileNotFoundError``)."""


@dataclass(frozen=True, eq=False)
class SplitFiles:
    """One split of a data set on disk: image ids, their image files and ground-truth masks.

    ``masks`` is ``None`` when the split has no ground truth (training tags then come from a class-label
    file, and pseudo-mask mIoU is not reported).
    """

    ids: tuple[str, ...]
    images: tuple[Path, ...]
    masks: tuple[Path, ...] | None

    def __post_init__(self) -> None:
        if len(self.images) != len(self.ids) or (self.masks is not None and len(self.masks) != len(self.ids)):
            raise ValueError("SplitFiles: ids, images and masks differ in length")

    def __len__(self) -> int:
        return len(self.ids)


@dataclass(frozen=True, eq=False)
class Split:
    """One split of a segmentation data set, all tensors on the CPU.

    Attributes:
        images: ``[N, C_in, H, W]`` uint8 in 0..255; model code divides by 255.
        masks: ``[N, H, W]`` uint8; 0 = background, ``c + 1`` = foreground class ``c``, 255 = ignore.
        tags: ``[N, C]`` uint8 in {0, 1}: the image-level labels, derived from the masks (for data
            read from disk, from the full-resolution masks, so an object too small to survive resizing
            stays tagged).
    """

    images: torch.Tensor  # [N, C_in, H, W] uint8
    masks: torch.Tensor  # [N, H, W] uint8
    tags: torch.Tensor  # [N, C] uint8

    def __post_init__(self) -> None:
        for name, ndim in (("images", 4), ("masks", 3), ("tags", 2)):
            t = getattr(self, name)
            if t.dtype != torch.uint8 or t.ndim != ndim:
                raise ValueError(f"Split.{name} must be a {ndim}-d uint8 tensor, "
                                 f"got {t.dtype} {tuple(t.shape)}")
        n, _, h, w = self.images.shape
        if tuple(self.masks.shape) != (n, h, w) or self.tags.shape[0] != n:
            raise ValueError(f"Split shapes disagree: images {tuple(self.images.shape)}, "
                             f"masks {tuple(self.masks.shape)}, tags {tuple(self.tags.shape)}")

    def __len__(self) -> int:
        return int(self.images.shape[0])


@dataclass(frozen=True, eq=False)
class SegData:
    """A weakly-supervised segmentation data set: a train and a val split over ``C`` foreground classes, and
    optionally a held-out test split (settings are chosen on val and measured on test)."""

    name: str
    class_names: tuple[str, ...]  # the C foreground classes, background not included
    train: Split
    val: Split
    test: Split | None = None

    @property
    def splits(self) -> dict[str, Split]:
        """The splits by name: train, val, and test when there is one."""
        return {"train": self.train, "val": self.val, **({"test": self.test} if self.test is not None else {})}

    def __post_init__(self) -> None:
        for split_name, split in self.splits.items():
            if split.tags.shape[1] != len(self.class_names):
                raise ValueError(f"SegData {self.name!r}: {split_name}.tags has {split.tags.shape[1]} "
                                 f"columns but there are {len(self.class_names)} class names")
        if len({split.images.shape[1] for split in self.splits.values()}) > 1:
            raise ValueError(f"SegData {self.name!r}: its splits' images differ in channels")

    @property
    def num_classes(self) -> int:
        """``C``, the number of foreground classes."""
        return len(self.class_names)

    @property
    def in_channels(self) -> int:
        """``C_in``, the number of image channels (1 for digit scenes, 3 for photos)."""
        return int(self.train.images.shape[1])


def class_pixel_counts(masks: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Pixels of background and of each class per image: ``[N, H, W]`` uint8 → ``[N, 1 + C]`` int64.

    Column 0 counts background, column ``c + 1`` class ``c``; ignore (any value above ``C``) is not counted.
    """
    n = masks.shape[0]
    labels = masks.reshape(n, -1).clamp(max=num_classes + 1).long()  # [N, H*W], ignore → C+1
    offsets = torch.arange(n).unsqueeze(1) * (num_classes + 2)  # [N, 1]
    counts = torch.bincount((labels + offsets).reshape(-1), minlength=n * (num_classes + 2))
    return counts.reshape(n, num_classes + 2)[:, : num_classes + 1]  # [N, 1 + C]


def tags_from_masks(masks: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Image-level labels of a batch of masks: ``[N, H, W]`` uint8 → ``[N, C]`` uint8 in {0, 1}.

    Class ``c`` is tagged when any pixel holds ``c + 1``; background (0) and ignore (255) tag nothing.
    """
    return (class_pixel_counts(masks, num_classes)[:, 1:] > 0).to(torch.uint8)  # [N, C]
