"""The Out-of-Candidate Rectification (OCR) loss, its prior matrices, and segmentation metrics.

Pure torch/numpy: copy this package into any training loop.
"""

from ocr._loss import (
    GROUPS,
    IC_MASKINGS,
    REDUCTIONS,
    SELECTIONS,
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
    PRIOR_VARIANTS,
    PosteriorPrior,
    cooccurrence_counts,
    prior_matrix,
    shuffle_permutation,
)
from ocr._prior_plot import draw_prior_heatmaps

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
