"""The choices the OCR loss and its priors accept, defined once (standard library only).

``pipelines.config`` validates trial configs against these without loading torch: importing this module
does not import the loss (``ocr/__init__`` loads its torch parts on first use).
"""

from __future__ import annotations

SELECTIONS = ("oc", "all", "none")  # which pixels the loss acts on
GROUPS = ("paper", "top1", "rank_bg")  # how the in-candidate group is formed
IC_MASKINGS = ("zero", "drop")  # what happens to in-candidate logits left out of the group
REDUCTIONS = ("pixels", "selected")  # the mean over all valid pixels, or over the selected ones
PRIOR_VARIANTS = (
    "cooc_raw",
    "cooc_minmax",
    "cooc_conditional",
    "uniform",
    "identity",
    "posterior",
    "shuffled",
)
