"""The networks (tiny and DeepLab/IRN on timm ResNets), their weights files, the optimiser and schedule.

Fast: ResNet-18 with random weights at 64-96 px, one thread.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import save_file
from torch import Tensor, nn

from ocr import OCRLoss, prior_matrix
from pipelines.accel import place_batch, place_model
from pipelines.config import TrialConfig, from_flat
from pipelines.models import (
    CAMNet,
    DeepLab,
    DeepLabV3Plus,
    ResNetCAM,
    SegNet,
    WeightsError,
    backbone_of,
    build_cam_model,
    build_seg_model,
    check_weights,
    create_backbone,
    model_input,
    normalize_imagenet,
)
from pipelines.models._backbone import forward_features
from pipelines.optim import make_optimizer
from pipelines.presets import load_preset

C = 5  # foreground classes
HEADS = ("v2", "v1", "v3plus")


@pytest.fixture(autouse=True)
def _one_thread() -> None:
    torch.set_num_threads(1)
    torch.manual_seed(0)


def deeplab(**model: Any) -> TrialConfig:
    """A DeepLab trial config on ResNet-18 (``model.*`` overrides given without the prefix)."""
    values = {"model.name": "deeplab", "model.backbone": "resnet18", "model.cam_backbone": "resnet18",
              "seg.init": "scratch", "device": "cpu"}
    return from_flat({**values, **{f"model.{k}": v for k, v in model.items()}})


def batch(b: int = 2, size: tuple[int, int] = (64, 64)) -> tuple[Tensor, Tensor, Tensor]:
    """Normalised images, pseudo-masks of two of the C classes each (with ignored pixels), their tags."""
    images = normalize_imagenet(torch.rand(b, 3, *size))
    tags = torch.zeros(b, C, dtype=torch.long)
    masks = torch.zeros(b, *size, dtype=torch.long)
    for i in range(b):
        present = torch.tensor([i % C, (i + 2) % C])
        tags[i, present] = 1
        masks[i] = torch.cat([torch.zeros(1, dtype=torch.long), present + 1])[torch.randint(0, 3, size)]
    masks[:, :4] = 255
    return images, masks, tags


def ocr_term() -> OCRLoss:
    tags = torch.tensor([[1, 0, 1, 0, 0], [0, 1, 0, 0, 1], [1, 1, 0, 0, 0]])
    return OCRLoss(prior_matrix(tags, "cooc_minmax"), delta=6.0, tau=0.2, selection="all", group="paper")


def snapshot(params: list[nn.Parameter]) -> list[Tensor]:
    return [p.detach().clone() for p in params]


def changed(before: list[Tensor], params: list[nn.Parameter]) -> bool:
    return any(not torch.equal(b, p.detach()) for b, p in zip(before, params, strict=True))


@pytest.mark.parametrize("head", HEADS)
def test_one_training_iteration_with_ce_and_ocr_moves_backbone_and_head(head: str) -> None:
    cfg = deeplab(head=head, output_stride=16)
    model = build_seg_model(cfg, C, 3)
    optimizer, schedule = make_optimizer(model, cfg, "seg", total_iterations=10)
    groups = model.parameter_groups()
    before = {name: snapshot(ps) for name, ps in groups.items()}
    images, masks, tags = batch()
    model.train()
    logits = model(images)  # (B, C+1, H, W)
    ce = F.cross_entropy(logits, masks, ignore_index=255)
    ocr = ocr_term()(logits, tags, masks != 255)
    (ce + ocr).backward()
    assert torch.isfinite(ce) and float(ocr.detach()) > 0
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in groups["head"][:1])
    optimizer.step()
    schedule.step()
    assert changed(before["backbone"], groups["backbone"]) and changed(before["head"], groups["head"])


def test_cam_network_trains_with_ocr_on_its_pixel_logits() -> None:
    cfg = deeplab()
    model = build_cam_model(cfg, C, 3)
    assert isinstance(model, ResNetCAM)
    optimizer, _ = make_optimizer(model, cfg, "cam", total_iterations=10)
    images, _, tags = batch()
    logits, cams = model(images)
    assert logits.shape == (2, C) and cams.shape == (2, C, 4, 4)  # IRN's stride 16 on 64 px
    pixel = model.pixel_logits(cams)  # (B, C+1, h, w)
    assert pixel.shape == (2, C + 1, 4, 4)
    bce = F.binary_cross_entropy_with_logits(logits, tags.float())
    ocr = ocr_term()(pixel, tags, None)
    (bce + ocr).backward()
    assert model.bg_logit.grad is not None and float(model.bg_logit.grad.abs()) > 0
    before = snapshot(model.parameter_groups()["backbone"])
    optimizer.step()
    assert changed(before, model.parameter_groups()["backbone"])


def test_cam_image_logits_are_the_pooled_cams_through_a_bias_free_classifier() -> None:
    model = build_cam_model(deeplab(), C, 3)
    assert model.classifier.bias is None
    logits, cams = model(batch()[0])
    assert torch.allclose(logits, cams.mean(dim=(2, 3)), atol=1e-6)


@pytest.mark.parametrize("head", HEADS)
@pytest.mark.parametrize("stride", [8, 16])
def test_logits_come_at_input_resolution_for_odd_sizes(head: str, stride: int) -> None:
    model = build_seg_model(deeplab(head=head, output_stride=stride), C, 3).eval()
    with torch.no_grad():
        for size in ((65, 77), (96, 71)):
            assert model(torch.randn(1, 3, *size)).shape == (1, C + 1, *size)


@pytest.mark.parametrize("stride", [8, 16])
def test_output_stride_is_the_backbone_feature_stride(stride: int) -> None:
    backbone = create_backbone("resnet18", stride, 3)
    with torch.no_grad():
        assert backbone.forward_features(torch.randn(1, 3, 96, 96)).shape[2:] == (96 // stride, 96 // stride)


def test_backbone_batch_norms_are_frozen_and_left_out_of_the_groups() -> None:
    model = build_seg_model(deeplab(freeze_bn=True), C, 3)
    model.train()
    names = {type(m).__name__ for m in model.backbone.modules()}
    assert "BatchNorm2d" not in names and "FrozenBatchNorm2d" in names
    trainable = {id(p) for ps in model.parameter_groups().values() for p in ps}
    assert trainable == {id(p) for p in model.parameters() if p.requires_grad}
    unfrozen = build_seg_model(deeplab(freeze_bn=False), C, 3)
    assert any(isinstance(m, nn.BatchNorm2d) for m in unfrozen.backbone.modules())


def test_batch_norms_are_frozen_by_default_only_over_trained_weights(tmp_path: Path) -> None:
    path = tmp_path / "r18.safetensors"
    save_file(create_backbone("resnet18", 32, 3, freeze_bn=False).state_dict(), str(path))
    random = deeplab()  # no model.weights: batch norms whose statistics were never estimated are trained
    assert random.model.freeze_bn == "auto" and not random.freeze_bn("seg") and not random.freeze_bn("cam")
    assert any(isinstance(m, nn.BatchNorm2d) for m in build_seg_model(random, C, 3).backbone.modules())
    loaded = deeplab(weights=str(path))  # ImageNet weights for both networks (same backbone): frozen
    assert loaded.freeze_bn("seg") and loaded.freeze_bn("cam")
    names = {type(m).__name__ for m in build_seg_model(loaded, C, 3).backbone.modules()}
    assert "BatchNorm2d" not in names and "FrozenBatchNorm2d" in names
    copied = from_flat({"model.name": "deeplab", "model.backbone": "resnet18", "model.cam_backbone": "resnet18"})
    assert copied.seg_init == "cam" and copied.freeze_bn("seg") and not copied.freeze_bn("cam")  # the trained CAM
    assert not deeplab(weights=str(path), freeze_bn="false").freeze_bn("seg")  # forced either way
    assert deeplab(freeze_bn="yes").freeze_bn("seg") and deeplab(freeze_bn=True).model.freeze_bn == "true"
    with pytest.raises(ValueError, match=r"model.freeze_bn = 'maybe' must be auto, true or false"):
        deeplab(freeze_bn="maybe")


def test_tiny_is_the_default_and_builds_todays_networks() -> None:
    cfg = from_flat({"cam.width": 4, "seg.width": 4})
    seg, cam = build_seg_model(cfg, C, 1), build_cam_model(cfg, C, 1)
    assert isinstance(seg, SegNet) and isinstance(cam, CAMNet)
    assert backbone_of(seg) is seg.encoder
    torch.manual_seed(3)
    direct = SegNet(1, C, 4)
    torch.manual_seed(3)
    built = build_seg_model(cfg, C, 1)
    pairs = zip(direct.state_dict().values(), built.state_dict().values(), strict=True)
    assert all(torch.equal(a, b) for a, b in pairs)


def test_cam_backbone_copies_into_the_segmentation_backbone() -> None:
    cfg = deeplab(head="v3plus")
    cam, seg = build_cam_model(cfg, C, 3), build_seg_model(cfg, C, 3)
    assert isinstance(seg, DeepLabV3Plus)
    backbone_of(seg).load_state_dict(backbone_of(cam).state_dict())
    assert torch.equal(seg.backbone.conv1.weight, cam.backbone.conv1.weight)


# ---- weights files ---------------------------------------------------------------------------------------


def imagenet_like(tmp_path: Path, fmt: str, **edit: Any) -> tuple[Path, dict[str, Tensor]]:
    """A ResNet-18 state dict with an ImageNet classifier, written as ``fmt`` (safetensors or torch)."""
    source = create_backbone("resnet18", 32, 3, freeze_bn=False)  # stride 32: the undilated ImageNet net
    state = {k: v.clone() for k, v in source.state_dict().items()}
    state["fc.weight"], state["fc.bias"] = torch.randn(1000, 512), torch.randn(1000)
    for key, value in edit.items():
        if value is None:
            state.pop(key.replace("__", "."))
        else:
            state[key.replace("__", ".")] = value
    path = tmp_path / ("resnet18.safetensors" if fmt == "safetensors" else "resnet18.pth")
    if fmt == "safetensors":
        save_file(state, str(path))
    else:
        torch.save({"state_dict": {f"module.{k}": v for k, v in state.items()}}, path)
    return path, state


@pytest.mark.parametrize("fmt", ["safetensors", "torch"])
@pytest.mark.parametrize("head", ["v2", "v3plus"])
def test_weights_file_loads_into_the_backbone(tmp_path: Path, fmt: str, head: str) -> None:
    path, state = imagenet_like(tmp_path, fmt)
    model = build_seg_model(deeplab(head=head, weights=str(path)), C, 3)
    own = backbone_of(model).state_dict()
    assert torch.equal(own["conv1.weight"], state["conv1.weight"])
    assert torch.equal(own["layer4.1.bn2.running_var"], state["layer4.1.bn2.running_var"])
    cam = build_cam_model(deeplab(weights=str(path)), C, 3)  # cam_weights defaults to weights: same backbone
    assert torch.equal(backbone_of(cam).state_dict()["layer3.0.conv1.weight"], state["layer3.0.conv1.weight"])


def test_torchvision_layout_loads(tmp_path: Path) -> None:
    torchvision = pytest.importorskip("torchvision")
    path = tmp_path / "tv.pth"
    torch.save(torchvision.models.resnet18(weights=None).state_dict(), path)
    model = build_seg_model(deeplab(weights=str(path)), C, 3)
    assert torch.equal(model.backbone.conv1.weight, torch.load(path, weights_only=True)["conv1.weight"])


def test_grey_inputs_adapt_the_rgb_stem(tmp_path: Path) -> None:
    path, state = imagenet_like(tmp_path, "safetensors")
    model = build_seg_model(deeplab(weights=str(path)), C, 1)
    assert model.backbone.conv1.weight.shape[1] == 1
    assert torch.allclose(model.backbone.conv1.weight[:, 0], state["conv1.weight"].sum(dim=1), atol=1e-6)


@pytest.mark.parametrize(("edit", "match"), [
    ({"layer1__0__conv1__weightx": torch.zeros(1)}, r"unexpected keys \(1\): \['layer1.0.conv1.weightx'\]"),
    ({"layer2__1__conv2__weight": None}, r"missing keys \(1\): \['layer2.1.conv2.weight'\]"),
    ({"layer1__0__conv1__weight": torch.zeros(64, 64, 1, 1)},
     r"shape mismatches \(1\): \['layer1.0.conv1.weight: file \(64, 64, 1, 1\) vs network \(64, 64, 3, 3\)'\]"),
])
def test_a_file_that_does_not_fit_names_the_file_and_the_keys(tmp_path: Path, edit: dict[str, Any],
                                                              match: str) -> None:
    path, _ = imagenet_like(tmp_path, "safetensors", **edit)
    with pytest.raises(WeightsError, match=match) as err:
        build_seg_model(deeplab(weights=str(path)), C, 3)
    assert str(path) in str(err.value)


def test_a_deeper_resnets_file_fails(tmp_path: Path) -> None:
    path = tmp_path / "r34.safetensors"
    save_file(create_backbone("resnet34", 32, 3, freeze_bn=False).state_dict(), str(path))
    with pytest.raises(WeightsError, match=r"unexpected keys \(\d+\).*layer1.2"):
        build_seg_model(deeplab(weights=str(path)), C, 3)


def test_a_missing_or_unreadable_file_is_named(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere.safetensors"
    with pytest.raises(WeightsError, match=f"weights file {missing} does not exist"):
        build_seg_model(deeplab(weights=str(missing)), C, 3)
    junk = tmp_path / "junk.pth"
    junk.write_bytes(b"not a checkpoint")
    with pytest.raises(WeightsError, match=f"weights file {junk} could not be read"):
        build_cam_model(deeplab(weights=str(junk)), C, 3)


# ---- optimiser and schedule ----------------------------------------------------------------------------


def test_sgd_groups_put_the_head_at_ten_times_the_rate() -> None:
    cfg = from_flat({"seg.lr": 0.01, "seg.weight_decay": 5e-4, "model.name": "deeplab",
                     "model.backbone": "resnet18", "seg.init": "scratch"})
    model = build_seg_model(cfg, C, 3)
    optimizer, _ = make_optimizer(model, cfg, "seg", total_iterations=100)
    assert isinstance(optimizer, torch.optim.SGD)
    backbone, head = optimizer.param_groups
    assert (backbone["name"], backbone["lr"], head["name"], head["lr"]) == ("backbone", 0.01, "head", 0.1)
    assert backbone["momentum"] == head["momentum"] == 0.9
    assert backbone["weight_decay"] == head["weight_decay"] == 5e-4
    assert [id(p) for p in head["params"]] == [id(p) for p in model.head.parameters()]
    assert len(backbone["params"]) == len(model.parameter_groups()["backbone"]) > 0


def test_cam_stage_uses_the_cam_rates() -> None:
    cfg = from_flat({"model.name": "deeplab", "model.cam_backbone": "resnet18", "cam.lr": 0.1,
                     "cam.weight_decay": 1e-4, "seg.init": "scratch", "model.head_lr_mult": 5.0})
    optimizer, _ = make_optimizer(build_cam_model(cfg, C, 3), cfg, "cam", total_iterations=10)
    assert [g["lr"] for g in optimizer.param_groups] == [0.1, pytest.approx(0.5)]
    with pytest.raises(ValueError, match=r"stage = 'stage2' is not allowed"):
        make_optimizer(build_cam_model(cfg, C, 3), cfg, "stage2", total_iterations=10)


def test_tiny_keeps_adamw_over_every_parameter() -> None:
    cfg = from_flat({"seg.width": 4, "cam.width": 4, "seg.lr": 3e-3})
    model = build_seg_model(cfg, C, 1)
    optimizer, _ = make_optimizer(model, cfg, "seg", total_iterations=10)
    assert isinstance(optimizer, torch.optim.AdamW) and len(optimizer.param_groups) == 1
    assert len(optimizer.param_groups[0]["params"]) == len(list(model.parameters()))


def test_poly_schedule_values_per_iteration() -> None:
    cfg = from_flat({"model.name": "deeplab", "model.backbone": "resnet18", "seg.init": "scratch",
                     "seg.lr": 0.01})
    model = build_seg_model(cfg, C, 3)
    optimizer, schedule = make_optimizer(model, cfg, "seg", total_iterations=10)
    seen = []
    for _ in range(10):
        seen.append([g["lr"] for g in optimizer.param_groups])
        optimizer.step()
        schedule.step()
    for i, (lr_backbone, lr_head) in enumerate(seen):
        factor = (1 - i / 10) ** 0.9
        assert lr_backbone == pytest.approx(0.01 * factor) and lr_head == pytest.approx(0.1 * factor)
    assert seen[5][0] == pytest.approx(0.01 * 0.5 ** 0.9)
    assert [g["lr"] for g in optimizer.param_groups] == [0.0, 0.0]


# ---- config and preset ---------------------------------------------------------------------------------


@pytest.mark.parametrize(("values", "match"), [
    ({"model.name": "unet"}, r"model.name = 'unet' is not allowed; choose one of \['tiny', 'deeplab'\]"),
    ({"model.backbone": "resnet38"}, r"model.backbone = 'resnet38' is not allowed"),
    ({"model.head": "v4"}, r"model.head = 'v4' is not allowed; choose one of \['v2', 'v1', 'v3plus'\]"),
    ({"model.output_stride": 32}, r"model.output_stride = 32 is not allowed; choose one of \[8, 16\]"),
    ({"model.weights": "r50.safetensors"}, r"model.name = 'tiny' has no pretrained backbone"),
    ({"model.name": "deeplab", "seg.init": "cam"}, r"seg.init = 'cam' copies the CAM backbone"),
    ({"model.momentum": 1.5}, r"model.momentum = 1.5 must be in"),
])
def test_model_config_errors_name_the_field(values: dict[str, Any], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        from_flat(values)


def test_cam_weights_default_to_the_segmentation_weights_only_for_the_same_backbone() -> None:
    same = from_flat({"model.name": "deeplab", "model.cam_backbone": "resnet101", "model.weights": "w"})
    assert same.model.cam_weights_path == "w"
    other = from_flat({"model.name": "deeplab", "model.weights": "w", "seg.init": "scratch"})
    assert other.model.cam_weights_path == ""


def test_paper_preset_validates_as_a_trial_config() -> None:
    cfg = from_flat(load_preset("paper"))
    assert (cfg.seg.lr, cfg.seg.batch_size, cfg.ocr.weight, cfg.ocr.delta, cfg.ocr.tau) == (7e-4, 16, 1.0, 6.0, 0.2)
    assert (cfg.model.name, cfg.model.head, cfg.model.optimizer) == ("deeplab", "v1", "sgd")
    with pytest.raises(ValueError, match=r"preset 'papr' is not shipped; choose one of \[.*'paper'.*\]"):
        load_preset("papr")


def test_deeplab_v1_head_is_the_authors_two_dilated_convolutions() -> None:
    model = build_seg_model(deeplab(head="v1"), C, 3)
    assert isinstance(model, DeepLab)
    convs = [m for m in model.head.modules() if isinstance(m, nn.Conv2d)]
    assert [(c.out_channels, c.kernel_size, c.dilation) for c in convs] == [(512, (3, 3), (12, 12)),
                                                                             (C + 1, (3, 3), (12, 12))]
    v2 = build_seg_model(deeplab(head="v2"), C, 3)
    assert [c.dilation[0] for c in v2.head.branches] == [6, 12, 18, 24]


def test_imagenet_normalisation_per_channel_and_for_grey_images() -> None:
    rgb = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1).expand(2, 3, 4, 4)
    assert torch.allclose(normalize_imagenet(rgb), torch.zeros(2, 3, 4, 4), atol=1e-6)
    grey = normalize_imagenet(torch.ones(2, 1, 4, 4))
    assert grey.shape == (2, 1, 4, 4) and torch.allclose(grey, torch.full_like(grey, (1 - 0.449) / 0.226), atol=1e-3)


def test_check_weights_fails_up_front_on_the_cam_or_segmentation_file(tmp_path: Path) -> None:
    good, _ = imagenet_like(tmp_path, "safetensors")
    check_weights(deeplab(weights=str(good)))  # both stages read it: same backbone
    bad = tmp_path / "r34.safetensors"
    save_file(create_backbone("resnet34", 32, 3, freeze_bn=False).state_dict(), str(bad))
    with pytest.raises(WeightsError, match=r"r34\.safetensors"):
        check_weights(deeplab(weights=str(good), cam_weights=str(bad)))
    check_weights(from_flat({}))  # tiny: nothing to read


def test_model_input_normalises_only_for_pretrained_backbones() -> None:
    images = torch.rand(2, 3, 8, 8)
    assert torch.equal(model_input(images, from_flat({})), images)
    assert torch.equal(model_input(images, deeplab()), normalize_imagenet(images))


@pytest.mark.parametrize("channels_last", [True, False])
def test_cpu_layout_follows_the_option_and_gives_the_same_logits(channels_last: bool) -> None:
    cpu = torch.device("cpu")
    torch.manual_seed(0)
    reference = SegNet(3, C, 4).eval()
    placed = place_model(SegNet(3, C, 4), cpu, channels_last).eval()
    placed.load_state_dict(reference.state_dict())
    images = torch.rand(2, 3, 20, 20)
    x = place_batch(images, cpu, channels_last)
    conv = placed.encoder.stem[0].weight
    assert conv.is_contiguous(memory_format=torch.channels_last) is channels_last
    assert x.is_contiguous(memory_format=torch.channels_last) is channels_last
    with torch.no_grad():
        torch.testing.assert_close(placed(x), reference(images), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("head", HEADS)
def test_logits_are_upsampled_in_float32_under_autocast(head: str) -> None:
    model = build_seg_model(deeplab(head=head, output_stride=16), C, 3).eval()
    images = batch(1, (64, 48))[0]
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        logits = model(images)
        if head != "v3plus":
            coarse = model.head(forward_features(model.backbone, images))  # (1, C+1, 4, 3)
            assert coarse.dtype == torch.bfloat16  # autocast is on: the head itself runs in bf16
    assert logits.dtype == torch.float32 and logits.shape == (1, C + 1, 64, 48)
    # upsampled in bf16, every value would be a bf16 number; in float32, blends of them mostly are not
    assert not torch.equal(logits, logits.bfloat16().float())
    if head != "v3plus":
        expected = F.interpolate(coarse.float(), size=(64, 48), mode="bilinear", align_corners=False)
        assert torch.equal(logits, expected)
