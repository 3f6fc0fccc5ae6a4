"""Validation as papers report it: mIoU at each image's original resolution, optionally over several
input scales with flips, optionally refined by a dense CRF, with the OC rate and oracle-tag mIoU on the
same full-resolution predictions.

Each view (a scale, mirrored or not) runs the network on the rescaled image; its logits are upsampled
bilinearly to the full image (and un-mirrored). With one view the logits are used as they are; with
several, ``fusion="prob"`` averages their class probabilities and the log of that average stands in for
the logits (argmax and the oracle's argmax over tagged classes then follow the averaged probabilities);
``fusion="logit"`` averages the logits themselves, as the OCR authors' ``tta_inference`` does.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import torch
import torch.nn.functional as F
from torch import Tensor

from ocr import SegMetrics
from pipelines.config import EvalConfig, Protocol
from pipelines.data import Batch

Predict = Callable[[Tensor], Tensor]


def _full_size(logits: Tensor, size: tuple[int, int]) -> Tensor:
    if tuple(logits.shape[2:]) == size:
        return logits
    return F.interpolate(logits, size=size, mode="bilinear", align_corners=False)


def _view_scores(predict: Predict, images: Tensor, scale: float, mirrored: bool,
                 size: tuple[int, int], fusion: str) -> Tensor:
    """Class probabilities (``fusion="prob"``) or logits ``(B, K, H, W)`` of one view, back at the full size
    and orientation."""
    x = images if scale == 1.0 else F.interpolate(images, scale_factor=scale, mode="bilinear",
                                                  align_corners=False, recompute_scale_factor=True)
    logits = predict(x.flip(-1) if mirrored else x).float()
    logits = _full_size(logits.flip(-1) if mirrored else logits, size)
    return logits.softmax(dim=1) if fusion == "prob" else logits


@torch.no_grad()
def predict_full(predict: Predict, images: Tensor, scales: tuple[float, ...], flip: bool,
                 fusion: str = "prob") -> Tensor:
    """Scores ``(B, K, H, W)`` float at the input's resolution over every scale (and mirror) of ``images``.

    Args:
        predict: the network, ``(B, C_in, h, w)`` → logits ``(B, K, h', w')``.
        images: ``(B, C_in, H, W)`` network input.
        scales: input scale factors; ``(1.0,)`` with ``flip=False`` is a single plain pass.
        flip: also run each scale mirrored left-right.
        fusion: ``"prob"`` (log of the mean probability) or ``"logit"`` (mean logit) over the views.
    """
    if fusion not in ("prob", "logit"):
        raise ValueError(f"fusion = {fusion!r} is not allowed; choose one of ['prob', 'logit']")
    size = (int(images.shape[2]), int(images.shape[3]))
    views = [(s, m) for s in scales for m in ((False, True) if flip else (False,))]
    if len(views) == 1 and views[0] == (1.0, False):
        return _full_size(predict(images).float(), size)
    total = sum((_view_scores(predict, images, scale, mirrored, size, fusion) for scale, mirrored in views),
                torch.zeros((), device=images.device))
    mean = total / len(views)
    return mean.clamp_min(1e-12).log() if fusion == "prob" else mean


@torch.no_grad()
def evaluate(predict: Predict, batches: Iterable[Batch], num_channels: int, cfg: EvalConfig | Protocol,
             pictures: Callable[[Tensor], Tensor] | None = None) -> dict[str, SegMetrics]:
    """Metrics of ``predict`` over ``batches`` (ground-truth masks at full resolution).

    ``cfg``: the protocol (an :class:`EvalConfig` stands for its per-report one). Returns ``{"": raw}``
    and, with ``cfg.crf``, ``"crf"``: the same after dense-CRF post-processing, which needs ``pictures``
    (network input → ``(B, H, W, 3)`` uint8 RGB for the CRF's colour term).
    """
    if isinstance(cfg, EvalConfig):
        cfg = cfg.per_report
    results = {"": SegMetrics(num_channels)}
    if cfg.crf:
        from pipelines.crf import crf_scores

        results["crf"] = SegMetrics(num_channels)
    for batch in batches:
        if batch.masks is None:
            raise ValueError("evaluation needs ground-truth masks")
        scores = predict_full(predict, batch.images, cfg.scales, cfg.flip, cfg.fusion)  # (B, K, H, W)
        tags = batch.tags.cpu()
        results[""].update(scores.cpu(), batch.masks.cpu(), tags)
        if cfg.crf:
            if pictures is None:
                raise ValueError("eval.crf needs the images as RGB")
            refined = crf_scores(pictures(batch.images), scores.softmax(dim=1).cpu())
            results["crf"].update(refined, batch.masks.cpu(), tags)
    return results
