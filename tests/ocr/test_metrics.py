"""Metrics: confusion matrix, IoU, OC rates and oracle mIoU on hand-made predictions."""

from __future__ import annotations

import math

import pytest
import torch

from ocr import SegMetrics, confusion_matrix, mean_iou, per_class_iou


def _logits_for(pred: torch.Tensor, k: int) -> torch.Tensor:
    """Logits ``(B, K, H, W)`` whose argmax is ``pred``; the runner-up is always background/class 1."""
    z = torch.zeros(*pred.shape, k)
    z[..., 1] = 0.5
    z.scatter_(-1, pred.unsqueeze(-1), 1.0)
    return z.permute(0, 3, 1, 2)


def test_confusion_and_iou() -> None:
    target = torch.tensor([[0, 0, 1, 1, 255]])
    pred = torch.tensor([[0, 1, 1, 1, 2]])
    conf = confusion_matrix(pred, target, 3)
    assert conf.tolist() == [[1, 1, 0], [0, 2, 0], [0, 0, 0]]
    iou = per_class_iou(conf)
    assert iou[0].item() == pytest.approx(0.5) and iou[1].item() == pytest.approx(2 / 3)
    assert math.isnan(iou[2].item())  # class 2 in neither (its prediction sat on an ignored pixel)
    assert mean_iou(conf) == pytest.approx((0.5 + 2 / 3) / 2)


def test_out_of_range_class_raises() -> None:
    with pytest.raises(ValueError, match="num_classes"):
        confusion_matrix(torch.tensor([3]), torch.tensor([0]), 3)


def test_oc_rates_and_oracle() -> None:
    # 1 image, tags = {class 0 → channel 1}; 4 pixels: gt [1, 1, 0, 0]; pred [1, 2, 2, 0].
    target = torch.tensor([[[1, 1, 0, 0]]])
    pred = torch.tensor([[[1, 2, 2, 0]]])
    tags = torch.tensor([[1, 0]])
    m = SegMetrics(3)
    m.update(_logits_for(pred, 3), target, tags)
    out = m.compute()
    assert out["oc_rate"] == pytest.approx(2 / 4)
    assert out["oc_rate_fg"] == pytest.approx(2 / 3)
    assert out["oc_image_rate"] == 1.0
    # oracle: channel 2 masked, the runner-up (channel 1, logit 0.5) wins both OC pixels.
    oracle_conf = confusion_matrix(torch.tensor([1, 1, 1, 0]), target.flatten(), 3)
    assert out["oracle_miou"] == pytest.approx(mean_iou(oracle_conf))
    assert out["miou"] == pytest.approx(mean_iou(confusion_matrix(pred, target, 3)))
    assert out["oracle_miou"] > out["miou"]


def test_accumulates_over_batches() -> None:
    gen = torch.Generator().manual_seed(0)
    target = torch.randint(0, 4, (4, 6, 6), generator=gen)
    logits = torch.randn(4, 4, 6, 6, generator=gen)
    tags = torch.randint(0, 2, (4, 3), generator=gen)
    whole, parts = SegMetrics(4), SegMetrics(4)
    whole.update(logits, target, tags)
    parts.update(logits[:2], target[:2], tags[:2])
    parts.update(logits[2:], target[2:], tags[2:])
    assert whole.compute() == parts.compute()
