"""The GPU path: real iterations under autocast, the OCR loss on CUDA against the CPU, GPU → CPU checkpoints.

Marked ``gpu``: skipped without CUDA (CI has none). Written to run as they are on a CUDA machine.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor

from ocr import OCRLoss, ocr_loss, prior_matrix
from pipelines.accel import configure_backend, place_batch, place_model
from pipelines.engine import Precision
from pipelines.models import build_cam_model, build_seg_model
from pipelines.optim import make_optimizer
from tests.pipelines.test_models import HEADS, C, batch, deeplab

pytestmark = pytest.mark.gpu
CUDA = torch.device("cuda")


def _prior() -> Tensor:
    tags = torch.tensor([[1, 0, 1, 0, 0], [0, 1, 0, 0, 1], [1, 1, 0, 0, 0]])
    return prior_matrix(tags, "cooc_minmax")


@pytest.mark.parametrize("selection", ["oc", "all"])
@pytest.mark.parametrize("head", HEADS)
def test_iterations_of_each_head_with_ocr_under_autocast(head: str, selection: str) -> None:
    torch.manual_seed(0)
    cfg = deeplab(head=head, output_stride=8)
    configure_backend(CUDA)
    model = place_model(build_seg_model(cfg, C, 3), CUDA, channels_last=True)
    optimizer, schedule = make_optimizer(model, cfg, "seg", total_iterations=3)
    precision = Precision(CUDA, enabled=True)
    ocr = OCRLoss(_prior(), delta=6.0, tau=0.2, selection=selection).to(CUDA)
    first = [p.detach().clone() for p in model.parameters()]
    model.train()
    for _ in range(3):
        images, masks, tags = batch(4, (96, 96))
        x = place_batch(images, CUDA, channels_last=True)
        masks, tags = masks.to(CUDA), tags.to(CUDA)
        with precision.autocast():
            logits = model(x)  # (B, C+1, H, W), bf16 or fp16
            loss = F.cross_entropy(logits.float(), masks, ignore_index=255) + ocr(logits, tags, masks != 255)
        assert logits.dtype == (precision.dtype if precision.active else torch.float32)
        assert torch.isfinite(loss)
        precision.step(loss, optimizer)
        schedule.step()
    assert any(not torch.equal(a, b.detach()) for a, b in zip(first, model.parameters(), strict=True))


def test_cam_network_with_ocr_under_autocast() -> None:
    torch.manual_seed(0)
    cfg = deeplab()
    model = place_model(build_cam_model(cfg, C, 3), CUDA, channels_last=True)
    optimizer, schedule = make_optimizer(model, cfg, "cam", total_iterations=2)
    precision = Precision(CUDA, enabled=True)
    ocr = OCRLoss(_prior(), delta=6.0, tau=0.2, selection="all").to(CUDA)
    for _ in range(2):
        images, _, tags = batch(4, (96, 96))
        tags = tags.to(CUDA)
        with precision.autocast():
            logits, cams = model(place_batch(images, CUDA, channels_last=True))
            loss = (F.binary_cross_entropy_with_logits(logits.float(), tags.float())
                    + ocr(model.pixel_logits(cams), tags, None))
        assert torch.isfinite(loss)
        precision.step(loss, optimizer)
        schedule.step()
    assert model.bg_logit.grad is not None and torch.isfinite(model.bg_logit.grad)


@pytest.mark.parametrize("selection", ["oc", "all"])
@pytest.mark.parametrize("group", ["paper", "top1", "rank_bg"])
def test_ocr_loss_and_gradient_on_cuda_match_the_cpu(selection: str, group: str) -> None:
    gen = torch.Generator().manual_seed(1)
    logits = torch.randn(3, C + 1, 40, 40, generator=gen) * 3
    tags = torch.tensor([[1, 0, 1, 0, 0], [0, 1, 0, 0, 1], [0, 0, 0, 1, 0]])
    valid = torch.rand(3, 40, 40, generator=gen) > 0.1
    results = []
    for device in ("cpu", "cuda"):
        z = logits.to(device).requires_grad_(True)
        loss = ocr_loss(z, tags.to(device), _prior().to(device), delta=6.0, tau=0.2, selection=selection,
                        group=group, valid=valid.to(device))
        loss.backward()
        assert z.grad is not None
        results.append((loss.detach().cpu(), z.grad.cpu()))
    (cpu_loss, cpu_grad), (gpu_loss, gpu_grad) = results
    assert float(cpu_loss) > 0
    torch.testing.assert_close(gpu_loss, cpu_loss, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(gpu_grad, cpu_grad, rtol=1e-4, atol=1e-7)


def test_a_checkpoint_written_on_the_gpu_resumes_on_the_cpu(tmp_path: Path) -> None:
    torch.manual_seed(0)
    cfg = deeplab(head="v2")
    model = place_model(build_seg_model(cfg, C, 3), CUDA, channels_last=True)
    optimizer, schedule = make_optimizer(model, cfg, "seg", total_iterations=5)
    images, masks, _ = batch(2, (64, 64))
    F.cross_entropy(model(place_batch(images, CUDA, True)), masks.to(CUDA), ignore_index=255).backward()
    optimizer.step()
    schedule.step()
    path = tmp_path / "state.pt"
    torch.save({"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                "schedule": schedule.state_dict()}, path)

    blob = torch.load(path, map_location="cpu", weights_only=True)
    cpu_model = build_seg_model(cfg, C, 3)
    cpu_model.load_state_dict(blob["model"])
    cpu_optimizer, cpu_schedule = make_optimizer(cpu_model, cfg, "seg", total_iterations=5)
    cpu_optimizer.load_state_dict(blob["optimizer"])
    cpu_schedule.load_state_dict(blob["schedule"])
    for key, value in model.state_dict().items():
        assert torch.equal(cpu_model.state_dict()[key], value.cpu()), key
    assert [g["lr"] for g in cpu_optimizer.param_groups] == [g["lr"] for g in optimizer.param_groups]
    F.cross_entropy(cpu_model(images), masks, ignore_index=255).backward()
    cpu_optimizer.step()  # momentum buffers came from the GPU and step on the CPU
    cpu_schedule.step()
    assert all(p.device.type == "cpu" for p in cpu_model.parameters())
