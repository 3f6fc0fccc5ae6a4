"""The Out-of-Candidate Rectification (OCR) loss, as fixed by ``docs/ocr-spec.md``.

Notation (shapes): ``logits`` z is ``(B, C+1, H, W)`` with channel 0 the background and channel c+1 the
foreground class c; ``tags`` y is ``(B, C)`` in {0, 1}; the prior ``M`` is ``(C+1, C+1)`` over global
channel ids. The in-candidate set of an image is ``I = {0} ∪ {c+1 : y_c = 1}``, the out-of-candidate set
``O = {c+1 : y_c = 0}``.

Per pixel (``group="paper"``)::

    OC pixel      argmax_k z_k ∈ O
    p             softmax(z) (no gradient)
    anchor a      argmax_{k ∈ I} p_k  (ties to the lowest id)
    keep K        {a} ∪ {k ∈ I : p_a − M[a, k]·p_k < τ}
    IC group g_k  z_k if k ∈ K, else 0 ("zero") or left out ("drop")
    ℓ             softplus(logsumexp_{k∈I}(−g_k) + logsumexp_{j∈O}(z_j) + δ)
                  = log(1 + Σ_I exp(−g_k) · Σ_O exp(z_j + δ))

``group="top1"``:    ℓ = softplus(max_O z − max_I z + δ).
``group="rank_bg"``: IC logits ranked; background alone is kept if it is the top IC logit, otherwise the IC
classes above background are kept and background is dropped; dropped entries are masked as
``ic_masking`` says; ℓ = softplus(logsumexp(−g) + max_O z + δ).

The anchor, the keep set and the OC test are decisions: no gradient flows through them. Everything is
computed in float32 (or float64 if the logits are float64) with finite sentinels, so logits of ±1e4 give
finite losses and gradients, and a pixel whose image has every class tagged (``O`` empty) has loss 0 and
zero gradient.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

SELECTIONS = ("oc", "all", "none")
GROUPS = ("paper", "top1", "rank_bg")
IC_MASKINGS = ("zero", "drop")
REDUCTIONS = ("pixels", "selected")


def _check_choice(name: str, value: str, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise ValueError(f"{name}={value!r} is not allowed; choose one of {list(allowed)}")


def _check_inputs(logits: Tensor, tags: Tensor, prior: Tensor | None, valid: Tensor | None,
                  group: str) -> None:
    if logits.dim() != 4:
        raise ValueError(f"logits must be (B, C+1, H, W); got shape {tuple(logits.shape)}")
    b, k, h, w = logits.shape
    if tags.shape != (b, k - 1):
        raise ValueError(f"tags must be (B, C) = {(b, k - 1)} for logits {tuple(logits.shape)}; "
                         f"got {tuple(tags.shape)}")
    if group == "paper":
        if prior is None:
            raise ValueError("prior is required for group='paper' (a (C+1, C+1) matrix)")
        if prior.shape != (k, k):
            raise ValueError(f"prior must be (C+1, C+1) = {(k, k)}; got {tuple(prior.shape)}")
    if valid is not None and valid.shape != (b, h, w):
        raise ValueError(f"valid must be (B, H, W) = {(b, h, w)}; got {tuple(valid.shape)}")


def candidate_mask(tags: Tensor) -> Tensor:
    """In-candidate channels per image: ``(B, C+1)`` bool, background always a candidate."""
    bg = torch.ones_like(tags[:, :1], dtype=torch.bool)  # (B, 1)
    return torch.cat([bg, tags.bool()], dim=1)  # (B, C+1)


def oc_pixels(logits: Tensor, tags: Tensor) -> Tensor:
    """Out-of-candidate pixels: ``(B, H, W)`` bool, True where the argmax is not a candidate."""
    cand = candidate_mask(tags)  # (B, C+1)
    pred = logits.detach().argmax(dim=1)  # (B, H, W)
    return ~torch.gather(cand, 1, pred.flatten(1)).view_as(pred)  # (B, H, W)


def _paper_keep(z: Tensor, cand: Tensor, prior: Tensor, tau: float) -> Tensor:
    """The keep set K of step 5 as a ``(B, C+1, H, W)`` bool mask (computed without gradient)."""
    with torch.no_grad():
        p = torch.softmax(z, dim=1)  # (B, K, H, W)
        p_ic = p.masked_fill(~cand, -1.0)  # non-candidates can never be the anchor
        p_a, anchor = p_ic.max(dim=1, keepdim=True)  # (B, 1, H, W); first max = lowest id
        m_row = prior.to(z.dtype)[anchor.squeeze(1)].permute(0, 3, 1, 2)  # (B, K, H, W) = M[a, k]
        keep = (p_a - m_row * p) < tau  # (B, K, H, W)
        keep |= torch.arange(z.shape[1], device=z.device).view(1, -1, 1, 1) == anchor
        return keep & cand


def _rank_bg_keep(z: Tensor, cand: Tensor) -> Tensor:
    """Released-code keep set: background alone if it tops the IC logits, else the IC classes above it."""
    with torch.no_grad():
        bg = z[:, :1]  # (B, 1, H, W)
        above = (z > bg) & cand  # (B, K, H, W) IC classes ranked above background
        bg_top = ~above[:, 1:].any(dim=1, keepdim=True)  # (B, 1, H, W)
        keep = above.clone()
        keep[:, :1] = bg_top
        return keep


def _masked_lse(x: Tensor, mask: Tensor) -> Tensor:
    """logsumexp over channels where ``mask``; a finite very negative value where none is."""
    fill = torch.finfo(x.dtype).min / 4
    return torch.logsumexp(x.masked_fill(~mask, fill), dim=1)  # (B, H, W)


def _masked_max(x: Tensor, mask: Tensor) -> Tensor:
    fill = torch.finfo(x.dtype).min / 4
    return x.masked_fill(~mask, fill).amax(dim=1)  # (B, H, W)


def _ic_term(z: Tensor, cand: Tensor, keep: Tensor, ic_masking: str) -> Tensor:
    """logsumexp_{k ∈ I}(−g_k) with non-kept entries zeroed or dropped."""
    if ic_masking == "zero":
        g = torch.where(keep, z, torch.zeros_like(z))  # (B, K, H, W)
        return _masked_lse(-g, cand.expand_as(z))
    return _masked_lse(-z, keep)


def ocr_pixel_loss(logits: Tensor, tags: Tensor, prior: Tensor | None, *, delta: float, tau: float,
                   group: str = "paper", ic_masking: str = "zero") -> Tensor:
    """Per-pixel OCR loss ``(B, H, W)`` for every pixel (before pixel selection and reduction).

    Args:
        logits: ``(B, C+1, H, W)`` segmentation logits, channel 0 background.
        tags: ``(B, C)`` image-level labels in {0, 1}.
        prior: ``(C+1, C+1)`` prior correlation matrix (used by ``group="paper"`` only).
        delta: the margin δ.
        tau: the keep threshold τ (``group="paper"`` only).
        group: ``"paper"``, ``"top1"`` or ``"rank_bg"``.
        ic_masking: ``"zero"`` or ``"drop"`` for IC classes outside the keep set.
    """
    _check_choice("group", group, GROUPS)
    _check_choice("ic_masking", ic_masking, IC_MASKINGS)
    _check_inputs(logits, tags, prior, None, group)
    z = logits if logits.dtype == torch.float64 else logits.float()  # (B, K, H, W)
    cand = candidate_mask(tags)[:, :, None, None]  # (B, K, 1, 1)
    non_cand = ~cand
    has_oc = non_cand.any(dim=1)  # (B, 1, 1)
    if group == "top1":
        arg = _masked_max(z, non_cand.expand_as(z)) - _masked_max(z, cand.expand_as(z)) + delta
    else:
        if group == "paper" and prior is not None:
            keep = _paper_keep(z, cand, prior, tau)  # (B, K, H, W)
            oc_term = _masked_lse(z, non_cand.expand_as(z))  # (B, H, W)
        else:
            keep = _rank_bg_keep(z, cand)
            oc_term = _masked_max(z, non_cand.expand_as(z))
        arg = _ic_term(z, cand, keep, ic_masking) + oc_term + delta
    arg = torch.where(has_oc, arg, torch.zeros_like(arg))  # keep the sentinel out of softplus
    return torch.where(has_oc, F.softplus(arg), torch.zeros_like(arg))  # (B, H, W)


def ocr_loss(logits: Tensor, tags: Tensor, prior: Tensor | None, *, delta: float, tau: float,
             selection: str = "oc", group: str = "paper", ic_masking: str = "zero",
             reduction: str = "pixels", valid: Tensor | None = None) -> Tensor:
    """The OCR loss (a scalar) as ``docs/ocr-spec.md`` defines it.

    Args:
        logits: ``(B, C+1, H, W)`` segmentation logits, channel 0 background.
        tags: ``(B, C)`` image-level labels in {0, 1}.
        prior: ``(C+1, C+1)`` prior correlation matrix, global channel ids (``group="paper"``).
        delta: the margin δ.
        tau: the keep threshold τ.
        selection: ``"oc"`` (only out-of-candidate pixels), ``"all"``, or ``"none"`` (loss off: a
            constant zero without a graph).
        group: ``"paper"``, ``"top1"`` or ``"rank_bg"`` (see the module docstring).
        ic_masking: ``"zero"`` (non-kept IC logits become 0) or ``"drop"`` (they leave the group).
        reduction: ``"pixels"`` (sum over selected pixels / number of valid pixels) or ``"selected"``
            (sum / number of selected pixels, 0 when none).
        valid: optional ``(B, H, W)`` bool mask; invalid pixels count in neither the sum nor the divisor.
    """
    _check_choice("selection", selection, SELECTIONS)
    _check_choice("reduction", reduction, REDUCTIONS)
    _check_choice("group", group, GROUPS)
    _check_choice("ic_masking", ic_masking, IC_MASKINGS)
    _check_inputs(logits, tags, prior, valid, group)
    if selection == "none":
        return logits.new_zeros((), dtype=torch.float32)
    pixel = ocr_pixel_loss(logits, tags, prior, delta=delta, tau=tau, group=group,
                           ic_masking=ic_masking)  # (B, H, W)
    return reduce_pixel_loss(pixel, select_pixels(logits, tags, selection, valid), valid, reduction)


def select_pixels(logits: Tensor, tags: Tensor, selection: str, valid: Tensor | None) -> Tensor:
    """The pixels a selection strategy lets contribute: ``(B, H, W)`` bool."""
    _check_choice("selection", selection, SELECTIONS)
    b, _, h, w = logits.shape
    if selection == "none":
        chosen = torch.zeros(b, h, w, dtype=torch.bool, device=logits.device)
    elif selection == "oc":
        chosen = oc_pixels(logits, tags)
    else:
        chosen = torch.ones(b, h, w, dtype=torch.bool, device=logits.device)
    return chosen if valid is None else chosen & valid.bool()


def reduce_pixel_loss(pixel: Tensor, chosen: Tensor, valid: Tensor | None, reduction: str) -> Tensor:
    """Sum the chosen pixels' losses and divide as ``reduction`` says (see :func:`ocr_loss`)."""
    total = torch.where(chosen, pixel, torch.zeros_like(pixel)).sum()
    if reduction == "pixels":
        count = pixel.numel() if valid is None else int(valid.bool().sum())
    else:
        count = int(chosen.sum())
    return total / count if count > 0 else total * 0.0


class OCRLoss(nn.Module):
    """:func:`ocr_loss` as a module; the prior matrix is a buffer (moves with ``.to(device)``).

    Call with ``(logits (B, C+1, H, W), tags (B, C), valid (B, H, W) | None)``; a different prior can
    be passed per call (the posterior variant changes during training).
    """

    prior: Tensor

    def __init__(self, prior: Tensor | None, *, delta: float = 6.0, tau: float = 0.2,
                 selection: str = "oc", group: str = "paper", ic_masking: str = "zero",
                 reduction: str = "pixels") -> None:
        super().__init__()
        for name, value, allowed in (("selection", selection, SELECTIONS), ("group", group, GROUPS),
                                     ("ic_masking", ic_masking, IC_MASKINGS),
                                     ("reduction", reduction, REDUCTIONS)):
            _check_choice(name, value, allowed)
        if group == "paper" and prior is None:
            raise ValueError("prior is required for group='paper' (a (C+1, C+1) matrix)")
        self.register_buffer("prior", prior.detach().clone().float() if prior is not None
                             else torch.empty(0))
        self.delta, self.tau = float(delta), float(tau)
        self.selection, self.group = selection, group
        self.ic_masking, self.reduction = ic_masking, reduction

    def forward(self, logits: Tensor, tags: Tensor, valid: Tensor | None = None,
                prior: Tensor | None = None) -> Tensor:
        """The scalar loss; ``prior`` overrides the stored matrix for this call."""
        m = prior if prior is not None else (self.prior if self.prior.numel() else None)
        return ocr_loss(logits, tags, m, delta=self.delta, tau=self.tau, selection=self.selection,
                        group=self.group, ic_masking=self.ic_masking, reduction=self.reduction,
                        valid=valid)

    def extra_repr(self) -> str:
        return (f"group={self.group!r}, selection={self.selection!r}, delta={self.delta}, tau={self.tau}, "
                f"ic_masking={self.ic_masking!r}, reduction={self.reduction!r}")
