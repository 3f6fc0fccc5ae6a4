"""The Out-of-Candidate Rectification (OCR) loss, its prior matrices, and segmentation metrics.

Pure torch/numpy: copy this package into any training loop. The option tuples (:mod:`ocr.options`) load
without torch; the loss, priors and metrics load on first use (so that validating a config stays light).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from ocr.options import GROUPS, IC_MASKINGS, PRIOR_VARIANTS, REDUCTIONS, SELECTIONS

if TYPE_CHECKING:
    from ocr._loss import (
        OCRLoss,
        candidate_mask,
        oc_pixels,
        ocr_loss,
        ocr_pixel_loss,
        reduce_pixel_loss,
        select_pixels,
    )
    from ocr._metrics import (
        SegMetrics,
        confusion_matrix,
        mean_iou,
        oracle_prediction,
        per_class_iou,
    )
    from ocr._prior import (
        PosteriorPrior,
        cooccurrence_counts,
        prior_matrix,
        shuffle_permutation,
    )
    from ocr._prior_plot import (
        draw_prior_heatmaps,
    )

_WHERE = {
    "OCRLoss": "ocr._loss",
    "candidate_mask": "ocr._loss",
    "oc_pixels": "ocr._loss",
    "ocr_loss": "ocr._loss",
    "ocr_pixel_loss": "ocr._loss",
    "reduce_pixel_loss": "ocr._loss",
    "select_pixels": "ocr._loss",
    "SegMetrics": "ocr._metrics",
    "confusion_matrix": "ocr._metrics",
    "mean_iou": "ocr._metrics",
    "oracle_prediction": "ocr._metrics",
    "per_class_iou": "ocr._metrics",
    "PosteriorPrior": "ocr._prior",
    "cooccurrence_counts": "ocr._prior",
    "prior_matrix": "ocr._prior",
    "shuffle_permutation": "ocr._prior",
    "draw_prior_heatmaps": "ocr._prior_plot",
}


def __getattr__(name: str) -> Any:
    """Load the torch parts on first use: ``ocr.OCRLoss`` imports :mod:`ocr._loss` then."""
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module 'ocr' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


__all__ = [
    "GROUPS",
    "IC_MASKINGS",
    "PRIOR_VARIANTS",
    "REDUCTIONS",
    "SELECTIONS",
    "OCRLoss",
    "PosteriorPrior",
    "SegMetrics",
    "candidate_mask",
    "confusion_matrix",
    "cooccurrence_counts",
    "draw_prior_heatmaps",
    "mean_iou",
    "oc_pixels",
    "ocr_loss",
    "ocr_pixel_loss",
    "oracle_prediction",
    "per_class_iou",
    "prior_matrix",
    "reduce_pixel_loss",
    "select_pixels",
    "shuffle_permutation",
]
