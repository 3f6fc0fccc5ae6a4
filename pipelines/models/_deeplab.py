"""DeepLab segmentation networks on timm ResNets: v2 (ASPP), the v1-style head of the OCR authors' code,
and v3+ from segmentation-models-pytorch.

Every network maps ``(B, 3, H, W)`` ImageNet-normalised images of any size to logits
``(B, C+1, H, W)`` at input resolution (channel 0 background), and splits its trainable parameters into
``{"backbone": …, "head": …}`` through :meth:`parameter_groups` (the head trains at a higher rate).
The logits are upsampled in float32 even under autocast (:func:`upsample_fp32`): the losses and the
out-of-candidate test then see the head's scores interpolated, not rounded to bf16/fp16 a second time.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from pipelines.models._backbone import forward_features, trainable
from pipelines.models._weights import load_backbone_weights

ASPP_RATES = (6, 12, 18, 24)


def upsample_fp32(logits: Tensor, size: Sequence[int] | None = None, scale_factor: float | None = None,
                  align_corners: bool = False) -> Tensor:
    """Bilinear upsampling of ``logits (B, K, h, w)`` in float32, with autocast off (the result is float32)."""
    with torch.autocast(logits.device.type, enabled=False):
        return F.interpolate(logits.float(), size=None if size is None else tuple(size), scale_factor=scale_factor,
                             mode="bilinear", align_corners=align_corners)


class _UpsampleFP32(nn.Module):
    """smp's ``nn.Upsample`` of the segmentation head, run through :func:`upsample_fp32` (no parameters)."""

    def __init__(self, scale_factor: float, align_corners: bool) -> None:
        super().__init__()
        self.scale_factor, self.align_corners = scale_factor, align_corners

    def forward(self, x: Tensor) -> Tensor:
        """``(B, K, h, w)`` → ``(B, K, h·s, w·s)`` float32."""
        return upsample_fp32(x, scale_factor=self.scale_factor, align_corners=self.align_corners)


def _zero_bias(conv: nn.Conv2d) -> None:
    if conv.bias is not None:
        nn.init.zeros_(conv.bias)


class ASPPHead(nn.Module):
    """DeepLab-v2's classifier: parallel dilated 3×3 convolutions straight to class scores, summed."""

    def __init__(self, in_channels: int, out_channels: int, rates: Sequence[int] = ASPP_RATES) -> None:
        super().__init__()
        convs = [nn.Conv2d(in_channels, out_channels, 3, padding=r, dilation=r, bias=True) for r in rates]
        for conv in convs:
            nn.init.normal_(conv.weight, std=0.01)
            _zero_bias(conv)
        self.branches = nn.ModuleList(convs)

    def forward(self, x: Tensor) -> Tensor:
        """``(B, in, h, w)`` → ``(B, out, h, w)``."""
        out = self.branches[0](x)
        for conv in self.branches[1:]:
            out = out + conv(x)
        return out


class DilatedHead(nn.Module):
    """The head of the OCR authors' DeepLab-v1 (``deeplabv1_can.py``): a dilated 3×3 convolution to
    ``width`` channels, ReLU, and a dilated 3×3 convolution to the class scores (Xavier-initialised)."""

    def __init__(self, in_channels: int, out_channels: int, width: int = 512, dilation: int = 12) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, width, 3, padding=dilation, dilation=dilation, bias=True)
        self.conv2 = nn.Conv2d(width, out_channels, 3, padding=dilation, dilation=dilation, bias=True)
        for conv in (self.conv1, self.conv2):
            nn.init.xavier_uniform_(conv.weight)
            _zero_bias(conv)

    def forward(self, x: Tensor) -> Tensor:
        """``(B, in, h, w)`` → ``(B, out, h, w)``."""
        return self.conv2(F.relu(self.conv1(x)))


class DeepLab(nn.Module):
    """A dilated backbone (``forward_features``) and a head; logits upsampled bilinearly (in float32) to the
    input."""

    def __init__(self, backbone: nn.Module, head: nn.Module) -> None:
        super().__init__()
        self.backbone = backbone
        self.head = head

    def forward(self, x: Tensor) -> Tensor:
        """``(B, 3, H, W)`` → logits ``(B, C+1, H, W)``, channel 0 background."""
        logits = self.head(forward_features(self.backbone, x))  # (B, C+1, H/s, W/s)
        return upsample_fp32(logits, x.shape[2:])

    def parameter_groups(self) -> dict[str, list[nn.Parameter]]:
        """Trainable parameters: the pretrained ``backbone`` and the new ``head``."""
        return {"backbone": trainable(self.backbone), "head": trainable(self.head)}


class DeepLabV3Plus(nn.Module):
    """segmentation-models-pytorch's DeepLab-v3+ on a ResNet encoder (the torchvision/timm key layout).

    smp needs sides divisible by the output stride: the input is zero-padded (the mean colour after
    normalisation) at the bottom and right, and the logits are cropped back.
    """

    def __init__(self, backbone: str, output_stride: int, num_classes: int, in_channels: int,
                 weights: str = "", freeze_bn: bool = True) -> None:
        import segmentation_models_pytorch as smp  # slow to import; only this network needs it
        from timm.layers import freeze_batch_norm_2d

        super().__init__()
        rates = (6, 12, 18) if output_stride == 16 else (12, 24, 36)
        self.net = smp.DeepLabV3Plus(encoder_name=backbone, encoder_weights=None,
                                     encoder_output_stride=output_stride, decoder_atrous_rates=rates,
                                     in_channels=in_channels, classes=num_classes + 1)
        up = self.net.segmentation_head[1]  # nn.Upsample ×4 (align_corners=True): the same, in float32
        if isinstance(up, nn.Upsample) and isinstance(up.scale_factor, (int, float)):
            self.net.segmentation_head[1] = _UpsampleFP32(float(up.scale_factor), bool(up.align_corners))
        if weights:
            load_backbone_weights(self.net.encoder, weights)
        if freeze_bn:
            freeze_batch_norm_2d(self.net.encoder)
        self.stride = output_stride

    @property
    def backbone(self) -> nn.Module:
        """The ResNet encoder."""
        return self.net.encoder

    def forward(self, x: Tensor) -> Tensor:
        """``(B, 3, H, W)`` → logits ``(B, C+1, H, W)``, channel 0 background."""
        h, w = x.shape[2:]
        pad_h, pad_w = -h % self.stride, -w % self.stride
        logits = self.net(F.pad(x, (0, pad_w, 0, pad_h)) if pad_h or pad_w else x)
        return logits[:, :, :h, :w]

    def parameter_groups(self) -> dict[str, list[nn.Parameter]]:
        """Trainable parameters: the pretrained encoder, and the decoder with the segmentation head."""
        return {"backbone": trainable(self.net.encoder),
                "head": trainable(self.net.decoder) + trainable(self.net.segmentation_head)}
