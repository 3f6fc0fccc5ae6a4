"""The networks of a trial: the tiny CNNs of the digit scenes, and DeepLab / IRN's CAM classifier on
timm ResNets with ImageNet weights from local files. :func:`build_seg_model` and :func:`build_cam_model`
pick one from the trial config."""

from pipelines.models._backbone import IMAGENET_MEAN, IMAGENET_STD, create_backbone, normalize_imagenet
from pipelines.models._build import backbone_of, build_cam_model, build_seg_model, check_weights, model_input
from pipelines.models._cam import ResNetCAM
from pipelines.models._deeplab import ASPPHead, DeepLab, DeepLabV3Plus, DilatedHead
from pipelines.models._tiny import CAMNet, Encoder, SegNet
from pipelines.models._weights import WeightsError, load_backbone_weights, read_state_dict

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "ASPPHead",
    "CAMNet",
    "DeepLab",
    "DeepLabV3Plus",
    "DilatedHead",
    "Encoder",
    "ResNetCAM",
    "SegNet",
    "WeightsError",
    "backbone_of",
    "build_cam_model",
    "build_seg_model",
    "check_weights",
    "create_backbone",
    "load_backbone_weights",
    "model_input",
    "normalize_imagenet",
    "read_state_dict",
]
