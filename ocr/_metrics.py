"""Segmentation metrics: confusion matrix, per-class IoU, mIoU, out-of-candidate (OC) rates, and
mIoU with the image's tags as an oracle filter (the most OCR could recover)."""

from __future__ import annotations

import torch
from torch import Tensor

from ocr._loss import candidate_mask


def confusion_matrix(pred: Tensor, target: Tensor, num_classes: int, ignore_index: int = 255) -> Tensor:
    """``(K, K)`` int64 counts, rows = ground truth, columns = prediction; ``ignore_index`` skipped."""
    valid = target != ignore_index
    t = target[valid].long()
    p = pred[valid].long()
    if t.numel() and (int(t.max()) >= num_classes or int(p.max()) >= num_classes):
        raise ValueError(f"a class index is >= num_classes={num_classes}")
    idx = t * num_classes + p
    return torch.bincount(idx, minlength=num_classes * num_classes).view(num_classes, num_classes)


def per_class_iou(conf: Tensor) -> Tensor:
    """IoU per class ``(K,)`` float64: TP / (TP + FP + FN); NaN where a class is in neither."""
    c = conf.double()
    tp = c.diagonal()
    union = c.sum(0) + c.sum(1) - tp
    return torch.where(union > 0, tp / union.clamp_min(1.0), torch.full_like(tp, float("nan")))


def mean_iou(conf: Tensor) -> float:
    """Mean IoU over the classes present in the ground truth or the prediction."""
    iou = per_class_iou(conf)
    present = ~torch.isnan(iou)
    return float(iou[present].mean()) if bool(present.any()) else float("nan")


def oracle_prediction(logits: Tensor, tags: Tensor) -> Tensor:
    """Argmax over the in-candidate channels only (the image's tags as an oracle filter): ``(B, H, W)``."""
    cand = candidate_mask(tags)[:, :, None, None]  # (B, K, 1, 1)
    return logits.detach().masked_fill(~cand, float("-inf")).argmax(dim=1)


class SegMetrics:
    """Accumulates validation metrics over batches; :meth:`compute` returns them as floats.

    OC rates are the share of valid pixels, and of foreground-predicted valid pixels, whose predicted
    class is not among the image's tags. Tags are used for the OC rates and the oracle mIoU only; the
    plain prediction never sees them.
    """

    def __init__(self, num_channels: int, ignore_index: int = 255) -> None:
        self.k = num_channels
        self.ignore_index = ignore_index
        self.conf = torch.zeros(num_channels, num_channels, dtype=torch.int64)
        self.oracle_conf = torch.zeros_like(self.conf)
        self.counts = torch.zeros(6, dtype=torch.int64)  # valid, oc, fg_pred, oc_fg, images, images_oc

    @torch.no_grad()
    def update(self, logits: Tensor, target: Tensor, tags: Tensor) -> None:
        """Add a batch: ``logits (B, K, H, W)``, ``target (B, H, W)``, ``tags (B, C)``."""
        pred = logits.argmax(dim=1)  # (B, H, W)
        valid = target != self.ignore_index  # (B, H, W)
        self.conf += confusion_matrix(pred, target, self.k, self.ignore_index).cpu()
        oracle = oracle_prediction(logits, tags)
        self.oracle_conf += confusion_matrix(oracle, target, self.k, self.ignore_index).cpu()
        cand = candidate_mask(tags)  # (B, K)
        oc = ~torch.gather(cand, 1, pred.flatten(1)).view_as(pred) & valid  # (B, H, W)
        fg = (pred > 0) & valid
        per_image_oc = oc.flatten(1).any(dim=1)  # (B,)
        batch = torch.stack([valid.sum(), oc.sum(), fg.sum(), (oc & fg).sum(),
                             torch.tensor(pred.shape[0], device=pred.device), per_image_oc.sum()])
        self.counts += batch.cpu()

    def compute(self) -> dict[str, float]:
        """``miou``, ``oracle_miou``, ``oc_rate`` (of valid pixels), ``oc_rate_fg`` (of foreground-
        predicted pixels), ``oc_image_rate`` (images with any OC pixel) and ``pixel_acc``."""
        valid, oc, fg, oc_fg, images, images_oc = (int(x) for x in self.counts)
        total = int(self.conf.sum())
        return {
            "miou": mean_iou(self.conf),
            "oracle_miou": mean_iou(self.oracle_conf),
            "oc_rate": oc / valid if valid else 0.0,
            "oc_rate_fg": oc_fg / fg if fg else 0.0,
            "oc_image_rate": images_oc / images if images else 0.0,
            "pixel_acc": float(self.conf.diagonal().sum()) / total if total else 0.0,
        }

    def class_iou(self) -> Tensor:
        """Per-class IoU ``(K,)`` of the plain prediction (NaN for classes never seen)."""
        return per_class_iou(self.conf)
