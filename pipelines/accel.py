"""The GPU path's building blocks: cuDNN autotuning, channels-last layout, non-blocking copies.

Mixed precision is :class:`pipelines.engine.Precision` (bf16 autocast where the GPU supports it, else
fp16 with loss scaling; fp32 on the CPU). Channels-last applies on the CPU too: the digit scenes' small
networks train about 1.4x faster per step in it (``benchmarks/cpu_layout.py``), a ResNet about the same.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn


def configure_backend(device: torch.device) -> None:
    """On CUDA let cuDNN pick the fastest convolution algorithms for the (fixed) crop size."""
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True


def uses_channels_last(device: torch.device, channels_last: bool) -> bool:
    """Whether tensors go channels-last: asked for (``model.channels_last``), on CUDA or the CPU."""
    return channels_last and device.type in ("cuda", "cpu")


def place_model(model: nn.Module, device: torch.device, channels_last: bool) -> nn.Module:
    """``model`` on ``device``, its 4-D weights channels-last when :func:`uses_channels_last`."""
    model = model.to(device)
    if uses_channels_last(device, channels_last):
        model = model.to(memory_format=torch.channels_last)
    return model


def place_batch(images: Tensor, device: torch.device, channels_last: bool) -> Tensor:
    """A batch ``(B, C, H, W)`` on ``device`` (non-blocking from pinned memory), channels-last when asked."""
    images = images.to(device, non_blocking=True)
    if images.dim() == 4 and uses_channels_last(device, channels_last):
        images = images.contiguous(memory_format=torch.channels_last)
    return images
