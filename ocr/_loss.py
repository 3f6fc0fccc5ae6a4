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

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

SELECTIONS = ("oc", "all", "none")
GROUPS = ("paper", "top1", "rank_bg")
IC_MASKINGS = ("zero", "drop")
REDUCTIONS = ("pixels", "selected")
PACK_BELOW = 0.5  # selection="oc" packs the OC pixels before the loss when they are at most this share


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
    """Out-of-candidate pixels: ``(B, H, W)`` bool, True where the argmax is not a candidate.

    Computed from maxima (``argmax`` over channels is some 50× slower than ``amax`` on CPU): a pixel is OC when
    its maximum is above every candidate's logit; where the maximum is reached twice, the argmax of those
    pixels alone decides (ties go to the lowest id, as ``argmax`` does).
    """
    z = logits.detach()
    top, top_i = _maxima(z, tags)
    return _resolve_ties(z, tags, top, top_i)


def _maxima(z: Tensor, tags: Tensor) -> tuple[Tensor, Tensor]:
    """Per pixel, the maximum over all channels and over the candidates: ``(B, H, W)`` each."""
    b, k, h, w = z.shape
    idx, ic_valid = _candidate_index(tags)  # (B, I)
    z_i = torch.gather(z.reshape(b, k, h * w), 1, idx.unsqueeze(2).expand(-1, -1, h * w))  # (B, I, P)
    top_i = z_i.masked_fill_(~ic_valid.unsqueeze(2), float("-inf")).amax(dim=1).view(b, h, w)
    return z.amax(dim=1), top_i


def _resolve_ties(z: Tensor, tags: Tensor, top: Tensor, top_i: Tensor) -> Tensor:
    """OC from the maxima, with pixels whose maximum is reached twice settled by their own argmax."""
    oc = top > top_i  # (B, H, W)
    ties = (top == top_i) & ((z == top.unsqueeze(1)).sum(dim=1) > 1)  # a candidate shares the maximum
    if bool(ties.any()):
        bi, hi, wi = ties.nonzero(as_tuple=True)
        pred = z[bi, :, hi, wi].argmax(dim=1)  # (N,) over the tied pixels only
        oc[bi, hi, wi] = ~candidate_mask(tags)[bi, pred]
    return oc


def _fill(dtype: torch.dtype) -> float:
    """A finite stand-in for −inf: exp() of it is 0, sums with it stay finite, gradients stay finite."""
    return torch.finfo(dtype).min / 4


def _candidate_index(tags: Tensor) -> tuple[Tensor, Tensor]:
    """Each image's in-candidate channel ids in ascending order, padded: ``(B, I)`` long and ``(B, I)`` bool.

    ``I`` is the largest candidate count in the batch (1 + most tags); background is always position 0.
    """
    cand = candidate_mask(tags)  # (B, K)
    k = cand.shape[1]
    width = int(cand.sum(dim=1).max())
    key = (~cand).long() * k + torch.arange(k, device=cand.device)  # candidates first, by id
    idx = key.argsort(dim=1)[:, :width]  # (B, I)
    return idx, torch.gather(cand, 1, idx)


def _oc_decision(z: Tensor, cand: Tensor, m_o: Tensor, m_i: Tensor) -> Tensor:
    """``(B, P)`` True where argmax over all channels is out of candidate (exact on ties: lowest id wins)."""
    oc = m_o > m_i
    tie = m_o == m_i
    if bool(tie.any()):
        pred = z.argmax(dim=1)  # (B, P)
        oc = oc | (tie & ~torch.gather(cand, 1, pred))
    return oc


def _paper_keep(z_i: Tensor, ic_valid: Tensor, lse_all: Tensor, prior_i: Tensor, tau: float) -> Tensor:
    """Keep set K (step 5) over candidates ``z_i (B, I, P)`` (padding at −inf); ``prior_i (B, I, I)``."""
    p = torch.exp(z_i - lse_all.unsqueeze(1))  # (B, I, P) softmax over all K; 0 on padding
    p_a, anchor = p.max(dim=1, keepdim=True)  # (B, 1, P); first max = lowest id (ids ascend)
    m_row = torch.gather(prior_i.transpose(1, 2), 2, anchor.expand(-1, p.shape[1], -1))  # (B, I, P) M[a, k]
    keep = torch.gt(m_row.mul_(p), p_a - tau)  # p_a − M[a, k]·p_k < τ
    return keep.scatter_(1, anchor, True).logical_and_(ic_valid)


def _rank_bg_keep(z_i: Tensor, ic_valid: Tensor) -> Tensor:
    """Released-code keep set: background alone if it tops the IC logits, else the IC classes above it."""
    above = (z_i > z_i[:, :1]) & ic_valid  # (B, I, P); position 0 is background
    keep = above.clone()
    keep[:, 0] = ~above[:, 1:].any(dim=1)
    return keep


def _lse_and_softmax(x: Tensor) -> tuple[Tensor, Tensor]:
    """logsumexp over dim 1 ``(B, P)`` and softmax ``(B, I, P)`` of ``x`` (−inf entries allowed)."""
    m = x.amax(dim=1, keepdim=True)  # (B, 1, P); finite: every pixel has a kept candidate
    e = torch.exp(x - m)
    s = e.sum(dim=1, keepdim=True)
    return (m + torch.log(s)).squeeze(1), e.div_(s)


def _ic_term(z_i: Tensor, ic_valid: Tensor, keep: Tensor, ic_masking: str) -> tuple[Tensor, Tensor]:
    """logsumexp_{k ∈ I}(−g_k) ``(B, P)`` and its gradient weights over ``z_i`` ``(B, I, P)``.

    Zeroed entries are constants (no gradient); dropped entries leave the sum.
    """
    if ic_masking == "zero":
        neg_g = torch.where(keep, -z_i, torch.zeros_like(z_i)).masked_fill_(~ic_valid, float("-inf"))
    else:
        neg_g = (-z_i).masked_fill_(~keep, float("-inf"))
    lse, soft = _lse_and_softmax(neg_g)
    return lse, soft.mul_(keep)  # ∂lse/∂(−z_k), only on kept entries


class _PixelLoss(torch.autograd.Function):
    """Per-pixel OCR loss over ``z (B, K, P)`` with a hand-written backward.

    The full-width work is a handful of passes over ``z`` (mask, max, exp, sum; one multiply back);
    everything that depends on the keep set runs over the gathered candidates ``(B, I, P)``, I ≪ K.
    """

    @staticmethod
    def forward(ctx: Any, z: Tensor, cand: Tensor, idx: Tensor, ic_valid: Tensor, prior: Tensor | None,
                delta: float, tau: float, group: str, ic_masking: str) -> tuple[Tensor, Tensor]:
        b, k, p = z.shape
        cand3, has_oc = cand.unsqueeze(2), (~cand).any(dim=1, keepdim=True)  # (B, K, 1), (B, 1)
        zo = z + torch.zeros_like(cand3, dtype=z.dtype).masked_fill_(cand3, float("-inf"))  # (B, K, P), one pass
        m_o = zo.amax(dim=1)  # (B, P); −inf where O is empty
        m_o_safe = torch.where(has_oc, m_o, torch.zeros_like(m_o))
        z_i = torch.gather(z, 1, idx.unsqueeze(2).expand(-1, -1, p))  # (B, I, P)
        z_i = z_i.masked_fill_(~ic_valid, float("-inf"))  # padding out of every max and sum
        m_i, top_i = z_i.max(dim=1)  # (B, P)
        oc = _oc_decision(z, cand, m_o, m_i) & has_oc
        if group == "paper":
            e_o = zo.sub_(m_o_safe.unsqueeze(1)).exp_()  # (B, K, P) in place; 0 on candidates
            s_o = e_o.sum(dim=1)  # (B, P)
            oc_term = m_o_safe + torch.log(s_o)
        else:
            arg_o = zo.argmax(dim=1)  # (B, P)
            oc_term = m_o_safe
        if group == "top1":
            ic_term = -m_i
            w_i = torch.zeros_like(z_i).scatter_(1, top_i.unsqueeze(1), 1.0)  # (B, I, P)
        else:
            if group == "paper" and prior is not None:
                lse_i = m_i + torch.log(torch.exp(z_i - m_i.unsqueeze(1)).sum(dim=1))
                lse_all = torch.logaddexp(oc_term, lse_i)
                prior_i = prior.to(z.device, z.dtype)[idx.unsqueeze(2), idx.unsqueeze(1)]  # (B, I, I)
                keep = _paper_keep(z_i, ic_valid, lse_all, prior_i, tau)
            else:
                keep = _rank_bg_keep(z_i, ic_valid)
            ic_term, w_i = _ic_term(z_i, ic_valid, keep, ic_masking)
        arg = torch.where(has_oc, ic_term + oc_term + delta, torch.zeros_like(ic_term))  # (B, P)
        sig = torch.sigmoid(arg) * has_oc
        pixel = F.softplus(arg) * has_oc
        ctx.group, ctx.shape = group, (b, k, p)
        if group == "paper":
            ctx.save_for_backward(e_o, s_o, idx, w_i, sig)
        else:
            ctx.save_for_backward(arg_o, idx, w_i, sig)
        ctx.mark_non_differentiable(oc)
        return pixel, oc

    @staticmethod
    def backward(ctx: Any, *grads: Tensor) -> tuple[Tensor | None, ...]:
        c = grads[0] * ctx.saved_tensors[-1]  # (B, P) = ∂L/∂ℓ · σ(arg)
        if ctx.group == "paper":
            e_o, s_o, idx, w_i, _ = ctx.saved_tensors
            coef = torch.where(s_o > 0, c / s_o, torch.zeros_like(c))
            grad = e_o * coef.unsqueeze(1)  # (B, K, P): softmax over O
        else:
            arg_o, idx, w_i, _ = ctx.saved_tensors
            grad = c.new_zeros(ctx.shape).scatter_(1, arg_o.unsqueeze(1), c.unsqueeze(1))
        grad.scatter_add_(1, idx.unsqueeze(2).expand_as(w_i), -c.unsqueeze(1) * w_i)
        return grad, None, None, None, None, None, None, None, None


def _pixel_terms(logits: Tensor, tags: Tensor, prior: Tensor | None, delta: float, tau: float,
                 group: str, ic_masking: str) -> tuple[Tensor, Tensor]:
    """Per-pixel loss and OC mask, both ``(B, H, W)``."""
    b, k, h, w = logits.shape
    z = (logits if logits.dtype == torch.float64 else logits.float()).reshape(b, k, h * w)  # (B, K, P)
    idx, ic_valid = _candidate_index(tags)  # (B, I)
    pixel, oc = _PixelLoss.apply(z, candidate_mask(tags), idx, ic_valid.unsqueeze(2), prior, float(delta),
                                 float(tau), group, ic_masking)
    return pixel.view(b, h, w), oc.view(b, h, w)


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
    return _pixel_terms(logits, tags, prior, delta, tau, group, ic_masking)[0]


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
    if selection == "oc":
        return _oc_only_loss(logits, tags, prior, delta, tau, group, ic_masking, reduction, valid)
    pixel, _ = _pixel_terms(logits, tags, prior, delta, tau, group, ic_masking)  # (B, H, W)
    chosen = torch.ones_like(pixel, dtype=torch.bool) if valid is None else valid.bool()
    return reduce_pixel_loss(pixel, chosen, valid, reduction)


def _pack(chosen: Tensor) -> tuple[Tensor, Tensor]:
    """Each image's chosen pixels packed to the front: indices ``(B, Q)`` into its ``P`` pixels (in pixel order)
    and a ``(B, Q)`` mask of the real entries; ``Q`` is the largest count in the batch."""
    b = chosen.shape[0]
    counts = chosen.sum(dim=1)  # (B,)
    q = int(counts.max()) if b else 0
    rows, cols = chosen.nonzero(as_tuple=True)  # row-major: by image, then pixel
    slot = (chosen.cumsum(dim=1) - 1)[rows, cols]  # each chosen pixel's place in its image's pack
    index = torch.zeros(b, q, dtype=torch.long, device=chosen.device)
    index[rows, slot] = cols
    real = torch.arange(q, device=chosen.device).unsqueeze(0) < counts.unsqueeze(1)  # (B, Q)
    return index, real


def _oc_only_loss(logits: Tensor, tags: Tensor, prior: Tensor | None, delta: float, tau: float, group: str,
                  ic_masking: str, reduction: str, valid: Tensor | None) -> Tensor:
    """``selection="oc"``: the pixel loss computed on the out-of-candidate pixels alone.

    The OC test (from per-pixel maxima, see :func:`oc_pixels`) picks the pixels first; when they are at most
    ``PACK_BELOW`` of all, only those are gathered ``(B, K, Q)`` and go through the loss, so the cost follows
    the OC share (a few percent once a network trains). Otherwise every pixel is computed and masked.
    Same value and gradient either way.
    """
    b, k, h, w = logits.shape
    top, top_i = _maxima(logits.detach(), tags)  # (B, H, W) each
    if float((top > top_i).float().mean()) > PACK_BELOW:  # most pixels OC (early training): packing won't pay
        pixel, oc = _pixel_terms(logits, tags, prior, delta, tau, group, ic_masking)  # (B, H, W) each
        return reduce_pixel_loss(pixel, oc if valid is None else oc & valid.bool(), valid, reduction)
    chosen = _resolve_ties(logits.detach(), tags, top, top_i).view(b, h * w)  # (B, P)
    if valid is not None:
        chosen = chosen & valid.bool().view(b, h * w)
    index, real = _pack(chosen)  # (B, Q) each
    z = (logits if logits.dtype == torch.float64 else logits.float()).reshape(b, k, h * w)  # (B, K, P)
    z_oc = torch.gather(z, 2, index.unsqueeze(1).expand(-1, k, -1))  # (B, K, Q)
    idx, ic_valid = _candidate_index(tags)  # (B, I)
    pixel, _ = _PixelLoss.apply(z_oc, candidate_mask(tags), idx, ic_valid.unsqueeze(2), prior, float(delta),
                                float(tau), group, ic_masking)  # (B, Q)
    total = torch.where(real, pixel, torch.zeros_like(pixel)).sum()
    pixels = b * h * w if valid is None else int(valid.bool().sum())
    count = int(chosen.sum()) if reduction == "selected" else pixels
    return total / count if count > 0 else total * 0.0


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
