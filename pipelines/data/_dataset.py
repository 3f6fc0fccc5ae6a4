"""A ``torch.utils.data.Dataset`` over image files and index-PNG masks, read one item at a time.

Paths are held in numpy string arrays (not Python lists), so ``DataLoader`` workers forked from the
trial share them without copy-on-access growth; a trial's memory does not grow with the data set.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from torch import Tensor
from torch.utils.data import Dataset

from pipelines.data._disk import read_mask
from pipelines.data._transforms import normalize
from pipelines.data._types import DataError

if TYPE_CHECKING:
    from torchvision.transforms import v2

Item = tuple[Tensor, Tensor, Tensor, Tensor, int]  # image (3, H, W) float, mask (H, W) uint8, padding (H, W)
#                                                   bool, tags (C,), index


def read_image(path: str | Path) -> Tensor:
    """An image file as ``(3, H, W)`` uint8 RGB (grey, palette and CMYK images converted)."""
    try:
        with Image.open(path) as image:
            rgb = np.array(image.convert("RGB"))  # (H, W, 3), writable
    except (OSError, UnidentifiedImageError) as err:
        raise DataError(f"{path} cannot be read as an image ({err}); replace or remove the file") from err
    return torch.from_numpy(rgb).permute(2, 0, 1).contiguous()


class SegDataset(Dataset[Item]):
    """Items ``(image, mask, padding, tags, index)``: the image normalised with the ImageNet mean/std, its mask
    (ground truth, pseudo-mask or, without masks, zeros; padding is 255), where the crop padded (True; all
    False for a whole image), its tags.

    Args:
        images: image files.
        masks: mask files (index PNGs, one per image), or ``None`` for an all-background placeholder
            (the CAM stage needs no mask; after a crop its 255 padding still marks what is not image).
        tags: ``(N, C)`` uint8 image-level labels.
        transform: a joint training transform (:func:`pipelines.data._augment.train_transform`), or
            ``None`` for the whole image.
    """

    def __init__(self, images: Sequence[Path], masks: Sequence[Path] | None, tags: Tensor,
                 transform: v2.Compose | None) -> None:
        self.images = np.array([str(p) for p in images])
        self.masks = None if masks is None else np.array([str(p) for p in masks])
        self.tags = tags
        self.num_classes = int(tags.shape[1])
        self.transform = transform
        if transform is not None:  # torchvision: loaded by whoever made the transform; bound once, not per item
            from pipelines.data._augment import apply_train

            self._apply_train = apply_train

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> Item:
        image = read_image(self.images[index])  # (3, H, W) uint8
        if self.masks is None:
            mask = torch.zeros(image.shape[1:], dtype=torch.uint8)
        else:
            mask = torch.from_numpy(read_mask(Path(self.masks[index]), self.num_classes))  # (H, W)
            if tuple(mask.shape) != tuple(image.shape[1:]):
                raise DataError(f"{self.masks[index]} is {mask.shape[1]}×{mask.shape[0]} but its image "
                                f"{self.images[index]} is {image.shape[2]}×{image.shape[1]}; a mask must "
                                "match its image")
        padding = torch.zeros(mask.shape, dtype=torch.bool)
        if self.transform is not None:
            image, mask, padding = self._apply_train(self.transform, image, mask)
        return normalize(image), mask, padding, self.tags[index], index

