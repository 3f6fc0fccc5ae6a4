"""The configuration of one trial: frozen dataclasses, validated on construction.

A trial is described by a nested :class:`TrialConfig`. Ray Tune and the command line speak in flat
dotted keys (``"ocr.delta"``); :func:`from_flat` and :func:`to_flat` are the one place that turns one
into the other, and unknown keys are rejected there with a did-you-mean.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NewType, TypeVar

from ocr.options import GROUPS, IC_MASKINGS, PRIOR_VARIANTS, REDUCTIONS, SELECTIONS
from pipelines._keys import ConfigError, nested_to_flat
from pipelines.presets import PRESETS, load_preset
from record import trial_reports

PRIORS = PRIOR_VARIANTS
OCR_STAGES = ("seg", "cam", "both")
UNCERTAIN = ("exclude", "include")  # ocr.uncertain: what OCR does with 255 (uncertain) pseudo-mask pixels
DATASETS = ("digits", "voc", "coco", "folder")
STAGE1_SOURCES = ("cam", "masks")
COOCCURRENCES = ("exclusive", "paired", "random")
DEVICES = ("auto", "cpu", "cuda")
TAG_SOURCES = ("auto", "gt", "masks", "file")  # data.tags: auto = file when data.labels is set, else gt
AutoBool = NewType("AutoBool", str)  # "auto", "true" or "false"; YAML/CLI booleans are accepted
AUTO_BOOLS = ("auto", "true", "false")
FUSIONS = ("prob", "logit")


def _key(owner: str, name: str) -> str:
    """The flat key of field ``name`` of section ``owner`` (``trial`` is the top level)."""
    return name if owner == "trial" else f"{owner}.{name}"


def _choice(owner: str, name: str, value: object, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise ConfigError(_key(owner, name),
                          f"{owner}.{name} = {value!r} is not allowed; choose one of {list(allowed)}")


def _at_least(owner: str, name: str, value: float, low: float) -> None:
    if not (isinstance(value, (int, float)) and math.isfinite(value) and value >= low):
        raise ConfigError(_key(owner, name), f"{owner}.{name} = {value!r} must be a finite number >= {low}")


def _in_range(owner: str, name: str, value: float, low: float, high: float) -> None:
    if not (isinstance(value, (int, float)) and math.isfinite(value) and low <= value <= high):
        raise ConfigError(_key(owner, name), f"{owner}.{name} = {value!r} must be in [{low}, {high}]")


@dataclass(frozen=True)
class DigitsConfig:
    """The offline digit-scenes data set (glyphs from ``sklearn.datasets.load_digits``)."""

    image_size: int = 48
    num_classes: int = 10
    objects_min: int = 1
    objects_max: int = 3
    glyph_min: int = 14
    glyph_max: int = 22
    mask_threshold: float = 0.35
    tag_min_pixels: int = 10
    cooccurrence: str = "exclusive"
    pair_prob: float = 0.5
    person_prob: float = 0.2
    clutter_prob: float = 0.3
    noise_std: float = 0.05
    train_size: int = 3000
    val_size: int = 500
    test_size: int = 500  # 0: no test split
    glyph_split: float = 0.8
    seed: int = 0

    def __post_init__(self) -> None:
        o = "data.digits"
        _at_least(o, "image_size", self.image_size, 16)
        _in_range(o, "num_classes", self.num_classes, 2, 10)
        _at_least(o, "objects_min", self.objects_min, 1)
        _at_least(o, "objects_max", self.objects_max, self.objects_min)
        _at_least(o, "glyph_min", self.glyph_min, 4)
        _in_range(o, "glyph_max", self.glyph_max, self.glyph_min, self.image_size)
        _in_range(o, "mask_threshold", self.mask_threshold, 0.0, 1.0)
        _at_least(o, "tag_min_pixels", self.tag_min_pixels, 1)
        _choice(o, "cooccurrence", self.cooccurrence, COOCCURRENCES)
        for name in ("pair_prob", "person_prob", "clutter_prob", "glyph_split"):
            _in_range(o, name, getattr(self, name), 0.0, 1.0)
        _at_least(o, "noise_std", self.noise_std, 0.0)
        _at_least(o, "train_size", self.train_size, 1)
        _at_least(o, "val_size", self.val_size, 1)
        _at_least(o, "test_size", self.test_size, 0)


@dataclass(frozen=True)
class DataConfig:
    """Which data set a trial reads, and where from."""

    name: str = "digits"
    root: str = ""
    train_split: str = "train_aug"
    val_split: str = "val"
    max_images: int = 0
    labels: str = ""  # a class-label file (cls_labels.npy or CSV) for the training tags (data.tags: file)
    tags: str = "auto"  # where training tags come from: gt masks, the pseudo-masks, data.labels; see tag_source
    workers: int = -1  # DataLoader worker processes; -1 = the trial's threads
    crop_size: int = 321
    scale_min: float = 0.5
    scale_max: float = 1.5
    flip: bool = True
    digits: DigitsConfig = field(default_factory=DigitsConfig)

    def __post_init__(self) -> None:
        _choice("data", "name", self.name, DATASETS)
        if self.name != "digits" and not self.root:
            raise ConfigError("data.root", f"data.root is empty: data.name = {self.name!r} is read from disk; "
                                           "set data.root to the data set's folder")
        _at_least("data", "max_images", self.max_images, 0)
        _choice("data", "tags", self.tags, TAG_SOURCES)
        if self.tags == "file" and not self.labels:
            raise ConfigError("data.labels", "data.tags = 'file' reads the training tags from data.labels, which "
                                             "is empty; set data.labels to a cls_labels.npy or CSV file")
        if self.tags in ("gt", "masks") and self.labels:
            raise ConfigError("data.tags", f"data.labels is set but data.tags = {self.tags!r} does not read it; "
                                           "set data.tags=file (or auto), or drop data.labels")
        _at_least("data", "workers", self.workers, -1)
        _at_least("data", "crop_size", self.crop_size, 8)
        _in_range("data", "scale_min", self.scale_min, 0.05, 10.0)
        _in_range("data", "scale_max", self.scale_max, self.scale_min, 10.0)

    @property
    def on_disk(self) -> bool:
        """Whether the data set is read from files (VOC, COCO, folder) rather than generated."""
        return self.name != "digits"

    @property
    def tag_source(self) -> str:
        """Where the training split's tags (so the candidate sets and the prior) come from: ``gt`` (the
        ground-truth masks), ``masks`` (the pseudo-masks of ``stage1.masks_dir``, as the OCR authors'
        dataset does), ``file`` (``data.labels``); ``auto`` is ``file`` when ``data.labels`` is set, else
        ``gt``. Validation tags always come from the ground truth."""
        if self.tags != "auto":
            return self.tags
        return "file" if self.labels else "gt"


@dataclass(frozen=True)
class Stage1Config:
    """Where stage 2's pseudo-masks come from: the CAM classifier (``cam``) or a folder of PNGs (``masks``).

    ``masks_dir`` holds one index/palette PNG per training image id (0 background, 1..C classes,
    255 uncertain), the format IRN, SEAM, MCTformer and CLIP-ES write. ``cam_scales`` (comma-separated)
    and ``cam_flip``: the views whose ReLU'd CAMs are summed before thresholding (IRN infers at
    ``"1,0.5,1.5,2"`` with flip; the default is one plain view).
    """

    source: str = "cam"
    masks_dir: str = ""
    cam_scales: str = "1"
    cam_flip: bool = False

    def __post_init__(self) -> None:
        _choice("stage1", "source", self.source, STAGE1_SOURCES)
        try:
            scales = parse_scales(self.cam_scales) or (-1.0,)
        except ValueError:
            scales = (-1.0,)
        if not all(0.1 <= s <= 4.0 for s in scales):
            raise ConfigError("stage1.cam_scales", f"stage1.cam_scales = {self.cam_scales!r} must list scales "
                                                   "in [0.1, 4] separated by commas, e.g. '1,0.5,1.5,2'")
        if self.source == "masks" and not self.masks_dir:
            raise ConfigError(
                "stage1.masks_dir",
                "stage1.masks_dir is empty but stage1.source = 'masks'; set it to the folder "
                "of pseudo-mask PNGs (one <image id>.png per training image)")


@dataclass(frozen=True)
class EvalConfig:
    """Validation: every ``every`` epochs (and the last), at each image's full resolution.

    The input scales run from ``scale_min`` to ``scale_max`` in steps of ``scale_step`` (0.5, 1.5, 0.25:
    the usual 0.5, 0.75, 1.0, 1.25, 1.5; the default is 1.0 alone); with ``flip`` each scale is also run
    mirrored; the class probabilities of all views are averaged. ``crf`` adds dense-CRF post-processing
    (needs the optional ``pydensecrf2``), reported next to the raw figures. With ``test`` the last report also
    scores the data set's held-out test split (``test_*`` metrics; the digit scenes have one, VOC and COCO
    report on val as papers do): the confirm phase sets it, so settings chosen on val are measured on test.
    ``fusion`` averages the views' class probabilities (``prob``) or their logits (``logit``, as the OCR
    authors' ``tta_inference``). ``final_scales`` (comma-separated, e.g. ``"0.5,0.75,1,1.25,1.5"``; empty:
    none) makes the last report also evaluate as papers report: those scales, mirrored too with
    ``final_flip``, dense CRF with ``final_crf``, as ``<split>_final_*`` metrics beside the cheap ones.
    """

    every: int = 1
    scale_min: float = 1.0
    scale_max: float = 1.0
    scale_step: float = 0.25
    flip: bool = False
    crf: bool = False
    test: bool = False
    fusion: str = "prob"
    final_scales: str = ""
    final_flip: bool = True
    final_crf: bool = False

    def __post_init__(self) -> None:
        _at_least("eval", "every", self.every, 1)
        _choice("eval", "fusion", self.fusion, FUSIONS)
        try:
            scales = parse_scales(self.final_scales)
        except ValueError:
            scales = (-1.0,)
        for scale in scales:
            if not 0.1 <= scale <= 4.0:
                raise ConfigError("eval.final_scales", f"eval.final_scales = {self.final_scales!r} must list "
                                                       "scales in [0.1, 4] separated by commas, e.g. '0.5,1,1.5'")
        _in_range("eval", "scale_min", self.scale_min, 0.1, 4.0)
        _in_range("eval", "scale_max", self.scale_max, self.scale_min, 4.0)
        _in_range("eval", "scale_step", self.scale_step, 0.01, 4.0)

    @property
    def scale_list(self) -> tuple[float, ...]:
        """The input scales, ``scale_min`` first."""
        count = math.floor((self.scale_max - self.scale_min) / self.scale_step + 1e-9) + 1
        return tuple(round(self.scale_min + i * self.scale_step, 6) for i in range(count))

    @property
    def per_report(self) -> Protocol:
        """How every report evaluates."""
        return Protocol(self.scale_list, self.flip, self.crf, self.fusion)

    @property
    def final(self) -> Protocol | None:
        """How the last report also evaluates (``None``: as the others only)."""
        scales = parse_scales(self.final_scales)
        return Protocol(scales, self.final_flip, self.final_crf, self.fusion) if scales else None


@dataclass(frozen=True)
class Protocol:
    """One evaluation protocol: input ``scales``, each also mirrored with ``flip``, dense CRF with ``crf``,
    the views fused by averaging probabilities or logits (``fusion``)."""

    scales: tuple[float, ...]
    flip: bool
    crf: bool
    fusion: str = "prob"

    def describe(self) -> str:
        """``"scales 0.5/1/1.5, flip, prob fusion, CRF"``: the protocol in a few words (report footnotes)."""
        parts = ["scales " + "/".join(f"{s:g}" for s in self.scales)] + (["flip"] if self.flip else [])
        if len(self.scales) > 1 or self.flip:
            parts.append(f"{self.fusion} fusion")
        return ", ".join(parts + (["CRF"] if self.crf else []))


def parse_scales(text: str) -> tuple[float, ...]:
    """``"0.5, 1,1.5"`` → ``(0.5, 1.0, 1.5)``; ``""`` → ``()``; ``ValueError`` for anything else."""
    return tuple(float(part) for part in text.split(",")) if text.strip() else ()


@dataclass(frozen=True)
class CamConfig:
    """Stage 1: the CAM classifier and how pseudo-masks are made from it.

    ``ink_threshold`` keeps foreground only on bright pixels: a stand-in for saliency refinement that
    fits the digit scenes (bright ink on a dark canvas) and is ignored for photos (data on disk).
    The training budget is ``epochs`` passes over the training split, or, when ``iterations > 0``,
    that many optimiser steps (``epochs`` is then unused).
    """

    width: int = 16
    epochs: int = 8
    batch_size: int = 32
    lr: float = 3e-3
    weight_decay: float = 1e-4
    bg_threshold: float = 0.1
    ink_threshold: float = 0.45
    iterations: int = 0

    def __post_init__(self) -> None:
        _at_least("cam", "width", self.width, 1)
        _at_least("cam", "epochs", self.epochs, 0)
        _at_least("cam", "iterations", self.iterations, 0)
        _at_least("cam", "batch_size", self.batch_size, 1)
        _in_range("cam", "lr", self.lr, 0.0, 10.0)
        _at_least("cam", "weight_decay", self.weight_decay, 0.0)
        _in_range("cam", "bg_threshold", self.bg_threshold, 0.0, 1.0)
        _in_range("cam", "ink_threshold", self.ink_threshold, 0.0, 1.0)


SEG_INITS = ("auto", "cam", "scratch")


@dataclass(frozen=True)
class SegConfig:
    """Stage 2: the segmentation network trained on the pseudo-masks.

    ``init="cam"`` starts its encoder from the stage-1 classifier's (the role an ImageNet-pretrained
    backbone plays in WSSS on natural images); it needs ``seg.width == cam.width``. ``"scratch"`` starts
    from ``model.weights`` (random without). ``"auto"`` (default) is ``cam`` where stage 1 trains a CAM
    encoder that fits, else ``scratch`` (:attr:`TrialConfig.seg_init`).

    The budget: ``epochs`` passes over the training split, one report (evaluation, checkpoint, ASHA
    step) each; or, as WSSS code counts it, ``iterations`` optimiser steps (when > 0 it wins and
    ``epochs`` is unused) with a report every ``report_every`` steps and after the last (0: only after
    the last). Either way the study's "epoch" is one report: :attr:`reports` of them.
    """

    width: int = 16
    epochs: int = 10
    batch_size: int = 32
    lr: float = 3e-3
    weight_decay: float = 1e-4
    init: str = "auto"
    iterations: int = 0
    report_every: int = 0

    def __post_init__(self) -> None:
        _choice("seg", "init", self.init, SEG_INITS)
        _at_least("seg", "width", self.width, 1)
        _at_least("seg", "epochs", self.epochs, 1)
        _at_least("seg", "iterations", self.iterations, 0)
        _at_least("seg", "report_every", self.report_every, 0)
        _at_least("seg", "batch_size", self.batch_size, 1)
        _in_range("seg", "lr", self.lr, 0.0, 10.0)
        _at_least("seg", "weight_decay", self.weight_decay, 0.0)
        if self.report_every and not self.iterations:
            raise ConfigError("seg.report_every", f"seg.report_every = {self.report_every} applies to a "
                                                  "budget in iterations; set seg.iterations too, or drop it "
                                                  "(a budget in epochs reports once per epoch)")
        if self.report_every > self.iterations > 0:
            raise ConfigError("seg.report_every", f"seg.report_every = {self.report_every} exceeds "
                                                  f"seg.iterations = {self.iterations}; make it at most that")

    @property
    def reports(self) -> int:
        """How many times stage 2 reports (evaluates and checkpoints): the study's epochs of a trial."""
        return trial_reports(self.epochs, self.iterations, self.report_every)

    @property
    def total_steps(self) -> int | None:
        """Optimiser steps of the whole stage for a budget in iterations, ``None`` for one in epochs."""
        return self.iterations or None


@dataclass(frozen=True)
class OCRConfig:
    """Every argument of :func:`ocr.ocr_loss`, its weight, and where it is applied.

    ``uncertain``: the pseudo-mask's 255 (uncertain) pixels are left out of OCR (``exclude``) or count like
    any other (``include``, as the authors' released loss, which averages over every pixel); a crop's
    padding is left out either way.
    """

    selection: str = "oc"
    group: str = "paper"
    prior: str = "cooc_minmax"
    delta: float = 6.0
    tau: float = 0.2
    ic_masking: str = "zero"
    reduction: str = "pixels"
    weight: float = 1.0
    stage: str = "seg"
    posterior_momentum: float = 0.99
    uncertain: str = "exclude"

    def __post_init__(self) -> None:
        _choice("ocr", "selection", self.selection, SELECTIONS)
        _choice("ocr", "group", self.group, GROUPS)
        _choice("ocr", "prior", self.prior, PRIORS)
        _choice("ocr", "ic_masking", self.ic_masking, IC_MASKINGS)
        _choice("ocr", "reduction", self.reduction, REDUCTIONS)
        _choice("ocr", "stage", self.stage, OCR_STAGES)
        _choice("ocr", "uncertain", self.uncertain, UNCERTAIN)
        _in_range("ocr", "delta", self.delta, -100.0, 100.0)
        _in_range("ocr", "tau", self.tau, -1.0, 2.0)
        _in_range("ocr", "weight", self.weight, 0.0, 1000.0)
        _in_range("ocr", "posterior_momentum", self.posterior_momentum, 0.0, 1.0)


MODEL_NAMES = ("tiny", "deeplab")
BACKBONES = ("resnet18", "resnet34", "resnet50", "resnet101", "resnet152")
OUTPUT_STRIDES = (8, 16)
HEADS = ("v2", "v1", "v3plus")
OPTIMIZERS = ("auto", "sgd", "adamw")
LR_SCHEDULES = ("poly", "step", "constant")


@dataclass(frozen=True)
class ModelConfig:
    """The networks of both stages and how they are optimised.

    ``name="tiny"``: the small CNNs of the digit scenes (sized by ``cam.width`` / ``seg.width``), AdamW.
    ``name="deeplab"``: stage 2 is DeepLab (``head``: ``v2`` ASPP, ``v1`` the authors' two dilated
    convolutions, ``v3plus`` from segmentation-models-pytorch) on a timm ResNet ``backbone`` dilated to
    ``output_stride``; stage 1 is a CAM classifier (IRN's) on ``cam_backbone`` at ``cam_output_stride``; SGD
    with momentum, poly decay and ``head_lr_mult`` on the new layers. ``weights`` / ``cam_weights`` are
    local ImageNet state dicts (safetensors or torch; ``""`` = random init; ``cam_weights`` defaults to
    ``weights`` when both backbones are the same). With ``seg.init="scratch"`` the segmentation network
    starts from ``weights``; ``seg.init="cam"`` copies the trained CAM backbone (same backbone needed).
    ``freeze_bn``: ``auto`` (default) freezes a network's backbone batch norms only where it starts from
    trained weights (``weights`` / ``cam_weights``, or the CAM backbone ``seg.init="cam"`` copies), and trains
    them over random ones (statistics that were never estimated are not worth keeping); ``true``/``false``
    force it (:meth:`TrialConfig.freeze_bn`).
    ``lr_schedule``: ``poly`` (``poly_power``), ``step`` (× ``lr_step_gamma`` from ``lr_step_at`` of the
    stage's steps on) or ``constant``. ``head_bias_lr_mult`` > 0 trains the head's biases at that multiple
    of the rate (kazuto1011's DeepLab-v2: 20), else like the head's weights; ``head_bias_decay`` false
    exempts them from weight decay.
    """

    name: str = "tiny"
    backbone: str = "resnet101"
    output_stride: int = 8
    head: str = "v2"
    weights: str = ""
    cam_backbone: str = "resnet50"
    cam_output_stride: int = 16
    cam_weights: str = ""
    freeze_bn: AutoBool = AutoBool("auto")
    channels_last: bool = True
    optimizer: str = "auto"
    momentum: float = 0.9
    head_lr_mult: float = 10.0
    poly_power: float = 0.9
    lr_schedule: str = "poly"
    lr_step_at: float = 0.667
    lr_step_gamma: float = 0.1
    head_bias_lr_mult: float = 0.0
    head_bias_decay: bool = True

    def __post_init__(self) -> None:
        _choice("model", "name", self.name, MODEL_NAMES)
        _choice("model", "lr_schedule", self.lr_schedule, LR_SCHEDULES)
        _in_range("model", "lr_step_at", self.lr_step_at, 0.0, 1.0)
        _in_range("model", "lr_step_gamma", self.lr_step_gamma, 0.0, 1.0)
        _in_range("model", "head_bias_lr_mult", self.head_bias_lr_mult, 0.0, 1000.0)
        _choice("model", "backbone", self.backbone, BACKBONES)
        _choice("model", "cam_backbone", self.cam_backbone, BACKBONES)
        _choice("model", "head", self.head, HEADS)
        _choice("model", "optimizer", self.optimizer, OPTIMIZERS)
        given: object = self.freeze_bn
        if isinstance(given, bool):  # built in Python with a bool
            object.__setattr__(self, "freeze_bn", AutoBool(str(given).lower()))
        _choice("model", "freeze_bn", self.freeze_bn, AUTO_BOOLS)
        for name in ("output_stride", "cam_output_stride"):
            if getattr(self, name) not in OUTPUT_STRIDES:
                raise ConfigError(f"model.{name}", f"model.{name} = {getattr(self, name)!r} is not allowed; "
                                                   f"choose one of {list(OUTPUT_STRIDES)}")
        if self.name == "tiny" and (self.weights or self.cam_weights):
            raise ConfigError(
                "model.weights",
                "model.weights / model.cam_weights are set but model.name = 'tiny' has no "
                "pretrained backbone; set model.name=deeplab or leave them empty")
        _in_range("model", "momentum", self.momentum, 0.0, 0.999)
        _in_range("model", "head_lr_mult", self.head_lr_mult, 0.0, 1000.0)
        _in_range("model", "poly_power", self.poly_power, 0.0, 10.0)

    @property
    def cam_weights_path(self) -> str:
        """The CAM backbone's weights file: ``cam_weights``, else ``weights`` when the backbones match."""
        if self.cam_weights or self.cam_backbone != self.backbone:
            return self.cam_weights
        return self.weights


def _check_model(cfg: TrialConfig) -> None:
    m = cfg.model
    if cfg.seg.init == "cam" and m.name != "tiny" and m.cam_backbone != m.backbone:
        raise ConfigError(
            "seg.init",
            f"seg.init = 'cam' copies the CAM backbone (model.cam_backbone = {m.cam_backbone!r}) "
            f"into the segmentation network (model.backbone = {m.backbone!r}); set seg.init=scratch "
            "to start from model.weights, or make the two backbones equal")


@dataclass(frozen=True)
class TrialConfig:
    """Everything one trial depends on. ``cache_dir`` holds data and stage-1 caches shared by trials (by
    default one folder per machine, ``~/.ocr-study/cache``: entries are keyed by everything they depend on,
    checksummed and built under a lock, so every study and clone on the machine can share them);
    ``shared_cache`` (a store URI such as ``s3://bucket/studies/x/cache``, empty for none) shares stage 1
    with the other nodes of a cluster through the store, ``cache_dir`` keeping each node's local copy.
    ``preset`` names the shipped training recipe (``pipelines/presets/<name>.yaml``) whose keys
    :func:`from_flat` applies under the keys given with it; it stays in the config as the record of it."""

    data: DataConfig = field(default_factory=DataConfig)
    cam: CamConfig = field(default_factory=CamConfig)
    seg: SegConfig = field(default_factory=SegConfig)
    ocr: OCRConfig = field(default_factory=OCRConfig)
    stage1: Stage1Config = field(default_factory=Stage1Config)
    eval: EvalConfig = field(default_factory=EvalConfig)
    seed: int = 0
    device: str = "auto"
    threads: int = 1
    amp: bool = True
    cache_dir: str = "~/.ocr-study/cache"  # one per machine: studies in any folder reuse its entries
    shared_cache: str = ""
    model: ModelConfig = field(default_factory=ModelConfig)
    preset: str = ""

    def __post_init__(self) -> None:
        _check_preset(self.preset)
        _check_model(self)
        _at_least("trial", "seed", self.seed, 0)
        if self.seg.init == "cam" and self.seg.width != self.cam.width:
            raise ConfigError("seg.width", f"seg.width = {self.seg.width} differs from cam.width = "
                                           f"{self.cam.width}, but seg.init = 'cam' copies the CAM encoder; "
                                           "make them equal or set seg.init=scratch")
        _choice("trial", "device", self.device, DEVICES)
        _at_least("trial", "threads", self.threads, 1)
        _check_stage1(self)
        if self.shared_cache and "://" not in self.shared_cache:
            raise ConfigError("shared_cache", f"shared_cache = {self.shared_cache!r} is not a store URI: give "
                                              "s3://BUCKET/PREFIX (or another URI), or leave it empty")

    @property
    def cache_path(self) -> Path:
        """The cache folder as a path."""
        return Path(self.cache_dir).expanduser()

    @property
    def seg_init(self) -> str:
        """``seg.init`` resolved: ``auto`` is ``cam`` when stage 1 trains a CAM encoder that fits the
        segmentation network (``stage1.source: cam``; equal widths for ``tiny``, equal backbones otherwise),
        else ``scratch``."""
        if self.seg.init != "auto":
            return self.seg.init
        m = self.model
        fits = self.seg.width == self.cam.width if m.name == "tiny" else m.cam_backbone == m.backbone
        return "cam" if self.stage1.source == "cam" and fits else "scratch"

    def freeze_bn(self, stage: str) -> bool:
        """Whether the backbone batch norms of ``stage``'s network (``"cam"`` or ``"seg"``) are frozen:
        ``model.freeze_bn``, or for ``auto`` whether that network starts from trained weights."""
        if self.model.freeze_bn != "auto":
            return self.model.freeze_bn == "true"
        if stage == "cam":
            return bool(self.model.cam_weights_path)
        return self.seg_init == "cam" or bool(self.model.weights)


def auto_values(cfg: TrialConfig) -> dict[str, str]:
    """What each key left at ``auto`` stands for in this trial (``{"data.tags": "gt", ...}``): recorded
    beside the key, so a trial's params say what ran."""
    out: dict[str, str] = {}
    if cfg.data.tags == "auto":
        out["data.tags"] = cfg.data.tag_source
    if cfg.seg.init == "auto":
        out["seg.init"] = cfg.seg_init
    if cfg.model.freeze_bn == "auto" and cfg.model.name != "tiny":  # the tiny networks always train theirs
        out["model.freeze_bn"] = ", ".join(f"{s}: {str(cfg.freeze_bn(s)).lower()}" for s in ("cam", "seg"))
    return out


def _check_preset(name: str) -> None:
    if name and name not in PRESETS:
        raise ConfigError("preset", f"preset = {name!r} is not a shipped recipe; choose one of {list(PRESETS)} "
                                    "(pipelines/presets/), or leave it empty")


def _check_stage1(cfg: TrialConfig) -> None:
    if cfg.data.tags == "masks" and cfg.stage1.source != "masks":
        raise ConfigError(
            "data.tags",
            "data.tags = 'masks' reads the training tags from the pseudo-masks of stage1.masks_dir, but "
            f"stage1.source = {cfg.stage1.source!r}; set stage1.source=masks, or data.tags to gt or file")
    if cfg.stage1.source == "masks" and not cfg.data.on_disk:
        raise ConfigError(
            "stage1.source",
            "stage1.source = 'masks' reads pseudo-masks of images on disk, but data.name = "
            "'digits'; use data.name = voc, coco or folder, or stage1.source = cam")
    if cfg.stage1.source == "masks" and cfg.seg.init == "cam":
        raise ConfigError(
            "seg.init",
            "seg.init = 'cam' copies the CAM encoder, but stage1.source = 'masks' trains none; "
            "set seg.init=scratch")


T = TypeVar("T")


def _field_types(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _is_config(tp: Any) -> bool:
    return isinstance(tp, type) and dataclasses.is_dataclass(tp)


def flat_keys(cls: type = TrialConfig, prefix: str = "") -> dict[str, Any]:
    """Every leaf key of a config class as ``{"ocr.delta": float, ...}``."""
    keys: dict[str, Any] = {}
    for name, tp in _field_types(cls).items():
        if _is_config(tp):
            keys.update(flat_keys(tp, f"{prefix}{name}."))
        else:
            keys[f"{prefix}{name}"] = tp
    return keys


def unknown_key_message(key: str, known: list[str] | tuple[str, ...] | Any) -> str:
    """A message for an unknown key with the closest known ones as a did-you-mean."""
    close = difflib.get_close_matches(key, list(known), n=3, cutoff=0.6)
    hint = f"; did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
    return f"unknown key {key!r}{hint}"


def coerce(key: str, value: Any, tp: Any) -> Any:
    """Convert ``value`` to the leaf type ``tp`` (YAML/CLI strings included), or raise :class:`ConfigError`."""
    if isinstance(tp, types.UnionType) or typing.get_origin(tp) is typing.Union:
        tp = next(a for a in typing.get_args(tp) if a is not type(None))
    if tp is AutoBool:
        if isinstance(value, bool):
            return AutoBool("true" if value else "false")
        text = value.lower() if isinstance(value, str) else None
        words = {"auto": "auto", "true": "true", "false": "false", "1": "true", "0": "false", "yes": "true",
                 "no": "false"}
        if text in words:
            return AutoBool(words[text])
        raise ConfigError(key, f"{key} = {value!r} must be auto, true or false")
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false", "1", "0", "yes", "no"):
            return value.lower() in ("true", "1", "yes")
        raise ConfigError(key, f"{key} = {value!r} must be true or false")
    if tp is int:
        if isinstance(value, bool):
            raise ConfigError(key, f"{key} = {value!r} must be an integer")
        if isinstance(value, int):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, str):
            try:
                return int(value)
            except ValueError:
                pass
        raise ConfigError(key, f"{key} = {value!r} must be an integer")
    if tp is float:
        if isinstance(value, bool):
            raise ConfigError(key, f"{key} = {value!r} must be a number")
        if isinstance(value, (int, float)):
            return float(value)
        if isinstance(value, str):
            try:
                return float(value)
            except ValueError:
                pass
        raise ConfigError(key, f"{key} = {value!r} must be a number")
    if tp is str:
        if isinstance(value, (str, int, float)) and not isinstance(value, bool):
            return str(value)
        raise ConfigError(key, f"{key} = {value!r} must be a string")
    raise ConfigError(key, f"{key}: unsupported type {tp!r}")


def _build(cls: type[T], values: Mapping[str, Any], prefix: str) -> T:
    kwargs: dict[str, Any] = {}
    for name, tp in _field_types(cls).items():
        if _is_config(tp):
            kwargs[name] = _build(tp, values, f"{prefix}{name}.")
        elif f"{prefix}{name}" in values:
            kwargs[name] = coerce(f"{prefix}{name}", values[f"{prefix}{name}"], tp)
    return cls(**kwargs)


def from_flat(values: Mapping[str, Any], base: TrialConfig | None = None) -> TrialConfig:
    """Build a :class:`TrialConfig` from flat dotted keys over ``base`` (defaults when ``None``).

    Raises :class:`ConfigError` (a ``ValueError``) whose ``key`` is the key at fault, for an unknown key, a
    wrong type or an out-of-range value.
    """
    known = flat_keys()
    for key in values:
        if key not in known:
            raise ConfigError(key, unknown_key_message(key, known))
    merged = to_flat(base) if base is not None else {}
    if values.get("preset"):  # the recipe's keys first, every key given with it over them
        _check_preset(str(values["preset"]))
        merged.update(load_preset(str(values["preset"])))
    merged.update(values)
    return _build(TrialConfig, merged, "")


def to_flat(config: Any, prefix: str = "") -> dict[str, Any]:
    """The config as flat dotted keys with plain values (the inverse of :func:`from_flat`)."""
    return nested_to_flat(dataclasses.asdict(config), prefix)


