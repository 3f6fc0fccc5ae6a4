"""ImageNet mean/std normalisation of natural images (training and evaluation), and its inverse for pictures.

The training augmentation is in :mod:`pipelines.data._augment` (torchvision, imported only by the disk
data sets: a digit-scene trial never loads it).
"""

from __future__ import annotations

import torch
from torch import Tensor

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def normalize(image: Tensor) -> Tensor:
    """uint8 ``(3, H, W)`` (or ``(B, 3, H, W)``) → float normalised with the ImageNet mean and std."""
    mean = torch.tensor(IMAGENET_MEAN, device=image.device).view(-1, 1, 1)
    std = torch.tensor(IMAGENET_STD, device=image.device).view(-1, 1, 1)
    return (image.float() / 255.0 - mean) / std


def denormalize(image: Tensor) -> Tensor:
    """The inverse of :func:`normalize`, as float in 0..1 (for pictures)."""
    mean = torch.tensor(IMAGENET_MEAN, device=image.device).view(-1, 1, 1)
    std = torch.tensor(IMAGENET_STD, device=image.device).view(-1, 1, 1)
    return (image * std + mean).clamp(0.0, 1.0)
