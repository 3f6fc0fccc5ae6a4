"""ResNet backbones from timm, dilated to an output stride, optionally with ImageNet weights.

timm is imported when a backbone is first built (about 0.6 s of every trial process otherwise; a digit-scene
trial's tiny networks never need it).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import cast

from torch import Tensor, nn

from pipelines.data._transforms import IMAGENET_MEAN, IMAGENET_STD  # one copy: the data path's
from pipelines.models._weights import load_backbone_weights


def create_backbone(name: str, output_stride: int, in_channels: int, weights: str = "",
                    freeze_bn: bool = True) -> nn.Module:
    """A timm ResNet without its classifier, its last stages dilated so features are at ``output_stride``.

    Args:
        name: a timm ResNet name (``resnet50``, ``resnet101``, …).
        output_stride: 8 (stages 3 and 4 dilated) or 16 (stage 4 dilated).
        in_channels: input channels (3 for RGB; weights are adapted for other counts).
        weights: a local state-dict file to load, or ``""`` for random initialisation.
        freeze_bn: turn its batch norms into frozen ones (fixed statistics and affine terms), as the
            WSSS codebases (DeepLab, IRN, the OCR authors' code) train their backbones.

    ``forward_features(x)`` of the result maps ``(B, in_channels, H, W)`` to
    ``(B, num_features, ⌈H/s⌉, ⌈W/s⌉)``.
    """
    import timm
    from timm.layers import freeze_batch_norm_2d

    backbone = timm.create_model(name, pretrained=False, num_classes=0, global_pool="",
                                 output_stride=output_stride, in_chans=in_channels)
    if weights:
        load_backbone_weights(backbone, weights)
    return freeze_batch_norm_2d(backbone) if freeze_bn else backbone


def normalize_imagenet(images: Tensor) -> Tensor:
    """``(B, C, H, W)`` floats in [0, 1] → normalised with the ImageNet mean and std (what the nets expect).

    RGB (``C = 3``) per channel; other channel counts (the grey digit scenes) with the average of the
    three channels' mean and std.
    """
    if images.shape[1] == 3:
        mean = images.new_tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
        std = images.new_tensor(IMAGENET_STD).view(1, 3, 1, 1)
        return (images - mean) / std
    return (images - sum(IMAGENET_MEAN) / 3) / (sum(IMAGENET_STD) / 3)


def forward_features(backbone: nn.Module, x: Tensor) -> Tensor:
    """The backbone's last feature map ``(B, num_features, h, w)`` (timm's ``forward_features``)."""
    return cast(Callable[[Tensor], Tensor], backbone.forward_features)(x)


def feature_channels(backbone: nn.Module) -> int:
    """Channels of the backbone's last feature map (timm's ``num_features``)."""
    return int(cast(int, backbone.num_features))


def trainable(module: nn.Module) -> list[nn.Parameter]:
    """The parameters of ``module`` that receive gradients."""
    return [p for p in module.parameters() if p.requires_grad]
