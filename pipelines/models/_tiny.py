"""The two networks of a trial, in plain torch, sized from the config.

- :class:`CAMNet`: a convolutional encoder, a 1×1 classifier giving class activation maps (CAMs) at
  stride 4, and global average pooling to image-level logits.
- :class:`SegNet`: the same kind of encoder and a light decoder (1×1 reduction, upsampling, a skip
  connection from the full-resolution features), ending in C+1 channels (channel 0 is background).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def _block(c_in: int, c_out: int, dilation: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, 3, padding=dilation, dilation=dilation, bias=False),
        nn.BatchNorm2d(c_out),
        nn.ReLU(inplace=True),
    )


class Encoder(nn.Module):
    """Features at stride 1 (``width`` channels) and stride 4 (``4·width`` channels, last block dilated)."""

    def __init__(self, in_channels: int, width: int) -> None:
        super().__init__()
        w = width
        self.stem = _block(in_channels, w)
        self.down = nn.Sequential(
            nn.MaxPool2d(2), _block(w, 2 * w), _block(2 * w, 2 * w),
            nn.MaxPool2d(2), _block(2 * w, 4 * w), _block(4 * w, 4 * w, dilation=2),
        )
        self.out_channels = 4 * w

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """``x (B, C_in, H, W)`` → ``(B, w, H, W)`` and ``(B, 4w, H/4, W/4)``."""
        fine = self.stem(x)
        return fine, self.down(fine)


class CAMNet(nn.Module):
    """Multi-label classifier whose 1×1 head, applied before pooling, gives the CAMs.

    For OCR on this network (``ocr.stage`` = ``cam`` or ``both``) :meth:`pixel_logits` returns
    per-pixel scores with a background channel: the C class scores of the CAM, and as channel 0 one
    learned scalar (``bg_logit``) shared by every pixel, so a pixel counts as background when no class
    score rises above that learned level.
    """

    def __init__(self, in_channels: int, num_classes: int, width: int) -> None:
        super().__init__()
        self.encoder = Encoder(in_channels, width)
        self.classifier = nn.Conv2d(self.encoder.out_channels, num_classes, 1)
        self.bg_logit = nn.Parameter(torch.zeros(()))

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Image logits ``(B, C)`` and CAMs ``(B, C, H/4, W/4)``."""
        cams = self.classifier(self.encoder(x)[1])
        return cams.mean(dim=(2, 3)), cams

    def pixel_logits(self, cams: Tensor) -> Tensor:
        """``(B, C+1, h, w)``: the learned background level as channel 0, then the CAM scores."""
        bg = self.bg_logit.expand(cams.shape[0], 1, *cams.shape[2:])
        return torch.cat([bg, cams], dim=1)


class SegNet(nn.Module):
    """Encoder-decoder segmentation network: ``(B, C_in, H, W)`` → logits ``(B, C+1, H, W)``."""

    def __init__(self, in_channels: int, num_classes: int, width: int) -> None:
        super().__init__()
        self.encoder = Encoder(in_channels, width)
        self.reduce = nn.Sequential(nn.Conv2d(self.encoder.out_channels, width, 1, bias=False),
                                    nn.BatchNorm2d(width), nn.ReLU(inplace=True))
        self.fuse = _block(2 * width, width)
        self.head = nn.Conv2d(width, num_classes + 1, 1)

    def forward(self, x: Tensor) -> Tensor:
        """Per-pixel logits, channel 0 background."""
        fine, coarse = self.encoder(x)
        up = F.interpolate(self.reduce(coarse), size=fine.shape[2:], mode="bilinear", align_corners=False)
        return self.head(self.fuse(torch.cat([fine, up], dim=1)))
