"""IRN's CAM classifier on a timm ResNet: global average pooling and a 1×1 classifier without bias."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from pipelines.models._backbone import feature_channels, forward_features, trainable


class ResNetCAM(nn.Module):
    """Multi-label classifier whose class activation maps are the 1×1 classifier applied before pooling.

    The interface of the tiny :class:`~pipelines.models.CAMNet`: ``forward`` gives image logits and the
    CAMs, :meth:`pixel_logits` adds a learned background level as channel 0 so OCR can act on the CAMs.
    """

    def __init__(self, backbone: nn.Module, num_classes: int) -> None:
        super().__init__()
        self.backbone = backbone
        self.classifier = nn.Conv2d(feature_channels(backbone), num_classes, 1, bias=False)
        self.bg_logit = nn.Parameter(torch.zeros(()))

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Image logits ``(B, C)`` (pooling then the linear classifier) and CAMs ``(B, C, H/s, W/s)``."""
        cams = self.classifier(forward_features(self.backbone, x))  # (B, C, h, w)
        return cams.mean(dim=(2, 3)), cams

    def pixel_logits(self, cams: Tensor) -> Tensor:
        """``(B, C+1, h, w)``: the learned background level as channel 0, then the CAM scores."""
        bg = self.bg_logit.to(cams.dtype).expand(cams.shape[0], 1, *cams.shape[2:])
        return torch.cat([bg, cams], dim=1)

    def parameter_groups(self) -> dict[str, list[nn.Parameter]]:
        """Trainable parameters: the pretrained ``backbone``; the classifier and background level."""
        return {"backbone": trainable(self.backbone), "head": [*trainable(self.classifier), self.bg_logit]}
