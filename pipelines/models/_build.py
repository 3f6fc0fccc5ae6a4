"""The one place that turns the trial config into the networks of both stages."""

from __future__ import annotations

from torch import Tensor, nn

from pipelines.config import TrialConfig
from pipelines.models._backbone import create_backbone, feature_channels, normalize_imagenet
from pipelines.models._cam import ResNetCAM
from pipelines.models._deeplab import ASPPHead, DeepLab, DeepLabV3Plus, DilatedHead
from pipelines.models._tiny import CAMNet, SegNet


def build_seg_model(cfg: TrialConfig, num_classes: int, in_channels: int) -> nn.Module:
    """The stage-2 network: logits ``(B, num_classes + 1, H, W)`` at input resolution, channel 0 background.

    ``model.name="tiny"``: :class:`SegNet` of width ``seg.width``. ``"deeplab"``: DeepLab with
    ``model.head`` on ``model.backbone`` at ``model.output_stride``, backbone from ``model.weights``.
    Raises :class:`~pipelines.models.WeightsError` when the weights file is missing or does not fit.
    """
    m = cfg.model
    if m.name == "tiny":
        return SegNet(in_channels, num_classes, cfg.seg.width)
    if m.head == "v3plus":
        return DeepLabV3Plus(m.backbone, m.output_stride, num_classes, in_channels, m.weights,
                             cfg.freeze_bn("seg"))
    backbone = create_backbone(m.backbone, m.output_stride, in_channels, m.weights, cfg.freeze_bn("seg"))
    features = feature_channels(backbone)
    head = ASPPHead(features, num_classes + 1) if m.head == "v2" else DilatedHead(features, num_classes + 1)
    return DeepLab(backbone, head)


def build_cam_model(cfg: TrialConfig, num_classes: int, in_channels: int) -> nn.Module:
    """The stage-1 classifier: ``forward(x) -> (logits (B, C), cams (B, C, h, w))`` and ``pixel_logits``.

    ``model.name="tiny"``: :class:`CAMNet` of width ``cam.width``. Otherwise IRN's recipe:
    :class:`ResNetCAM` on ``model.cam_backbone`` at ``model.cam_output_stride`` (weights from
    ``model.cam_weights``, or ``model.weights`` when the two backbones are the same).
    """
    m = cfg.model
    if m.name == "tiny":
        return CAMNet(in_channels, num_classes, cfg.cam.width)
    backbone = create_backbone(m.cam_backbone, m.cam_output_stride, in_channels, m.cam_weights_path,
                               cfg.freeze_bn("cam"))
    return ResNetCAM(backbone, num_classes)


def model_input(images: Tensor, cfg: TrialConfig) -> Tensor:
    """Images ``(B, C, H, W)`` in [0, 1] as the configured networks take them: unchanged for ``tiny``
    (trained on [0, 1], as the digit-scenes figures were), ImageNet-normalised for pretrained backbones."""
    return images if cfg.model.name == "tiny" else normalize_imagenet(images)


def check_weights(cfg: TrialConfig, in_channels: int = 3) -> None:
    """Load every weights file the trial names into a throwaway backbone.

    For a trial's start: a missing or misfit ``model.weights`` then fails before stage 1 trains, not
    hours later when stage 2 builds its network. Raises :class:`~pipelines.models.WeightsError`.
    """
    m = cfg.model
    if m.name == "tiny":
        return
    checks = {(m.backbone, m.weights), (m.cam_backbone, m.cam_weights_path)}
    for backbone, path in sorted(checks):
        if path:
            create_backbone(backbone, 32, in_channels, path, freeze_bn=False)


def backbone_of(model: nn.Module) -> nn.Module:
    """The part of a network ``seg.init="cam"`` copies: the tiny nets' ``encoder``, else the ``backbone``."""
    part = getattr(model, "encoder", None) if isinstance(model, (CAMNet, SegNet)) else model.backbone
    if not isinstance(part, nn.Module):
        raise TypeError(f"{type(model).__name__} has no backbone to copy")
    return part
