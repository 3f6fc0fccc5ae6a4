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

from ocr.options import GROUPS, IC_MASKINGS, REDUCTIONS, SELECTIONS

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

    Computed from maxima (``argmax`` over channels is some 50× slower than ``amax`` on CPU): see
    :func:`_oc_from_maxima`.
    """
    b, k, h, w = logits.shape
    z = logits.detach().reshape(b, k, h * w)  # (B, K, P)
    top, top_i = _maxima(z, tags)
    return _oc_from_maxima(z, candidate_mask(tags), top, top_i).view(b, h, w)


def _maxima(z: Tensor, tags: Tensor) -> tuple[Tensor, Tensor]:
    """Per pixel of ``z (B, K, P)``, the maximum over all channels and over the candidates: ``(B, P)`` each."""
    idx, ic_valid = _candidate_index(tags)  # (B, I)
    z_i = torch.gather(z, 1, idx.unsqueeze(2).expand(-1, -1, z.shape[2]))  # (B, I, P)
    top_i = z_i.masked_fill_(~ic_valid.unsqueeze(2), float("-inf")).amax(dim=1)
    return z.amax(dim=1), top_i


def _oc_from_maxima(z: Tensor, cand: Tensor, top: Tensor, top_i: Tensor) -> Tensor:
    """The OC test, the one place it is made: ``(B, P)`` True where ``argmax_k z_k`` is not a candidate.

    ``top`` is the maximum over all channels and ``top_i`` over the candidates ``cand (B, K)``. A pixel is
    OC when its maximum is above every candidate's logit; where the maximum is reached twice and a
    candidate shares it, the argmax of those pixels alone decides (ties go to the lowest id, as
    ``argmax`` does).
    """
    oc = top > top_i  # (B, P)
    ties = (top == top_i) & ((z == top.unsqueeze(1)).sum(dim=1) > 1)
    if bool(ties.any()):
        bi, pi = ties.nonzero(as_tuple=True)
        pred = z[bi, :, pi].argmax(dim=1)  # (N,) over the tied pixels only
        oc[bi, pi] = ~cand[bi, pred]
    return oc


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


# One helper per group term: each returns the term (B, P) and the weights w with ∂term/∂z = ±w.

def _oc_logsumexp(zo: Tensor, m_o: Tensor) -> tuple[Tensor, Tensor]:
    """``paper``'s OC term ``T_O = logsumexp_{j∈O} z_j`` and ``w_O = softmax_O(z)`` ``(B, K, P)`` (0 off O).

    ``zo`` is ``z`` with candidates at −inf (overwritten); ``m_o`` its max, 0 where ``O`` is empty.
    """
    e_o = zo.sub_(m_o.unsqueeze(1)).exp_()  # (B, K, P) in place; 0 on candidates
    s_o = e_o.sum(dim=1)  # (B, P); 0 where O is empty
    scale = torch.where(s_o > 0, 1.0 / s_o, torch.zeros_like(s_o))
    return m_o + torch.log(s_o), e_o.mul_(scale.unsqueeze(1))


def _oc_max(zo: Tensor, m_o: Tensor) -> tuple[Tensor, Tensor]:
    """``top1``/``rank_bg``'s OC term ``T_O = max_{j∈O} z_j`` and the channel of that max ``(B, P)``
    (``w_O`` is one-hot there)."""
    return m_o, zo.argmax(dim=1)


def _ic_top1(m_i: Tensor, top_i: Tensor, z_i: Tensor) -> tuple[Tensor, Tensor]:
    """``top1``'s IC term ``T_I = −max_{k∈I} z_k`` and ``w_I``, one-hot at that max ``(B, I, P)``."""
    return -m_i, torch.zeros_like(z_i).scatter_(1, top_i.unsqueeze(1), 1.0)


def _ic_paper(z_i: Tensor, ic_valid: Tensor, m_i: Tensor, oc_term: Tensor, prior_i: Tensor | None, tau: float,
              ic_masking: str) -> tuple[Tensor, Tensor]:
    """``paper``'s IC term ``T_I = logsumexp_{k∈I}(−g_k)`` over the keep set of the prior, and
    ``w_I = softmax(−g)`` on the kept entries."""
    if prior_i is None:
        raise ValueError("group='paper' needs a prior matrix")
    lse_i = m_i + torch.log(torch.exp(z_i - m_i.unsqueeze(1)).sum(dim=1))  # (B, P) logsumexp over I
    keep = _paper_keep(z_i, ic_valid, torch.logaddexp(oc_term, lse_i), prior_i, tau)
    return _ic_term(z_i, ic_valid, keep, ic_masking)


def _ic_rank_bg(z_i: Tensor, ic_valid: Tensor, ic_masking: str) -> tuple[Tensor, Tensor]:
    """``rank_bg``'s IC term over the released code's keep set, and its weights."""
    return _ic_term(z_i, ic_valid, _rank_bg_keep(z_i, ic_valid), ic_masking)


class _PixelLoss(torch.autograd.Function):
    """Per-pixel OCR loss over ``z (B, K, P)`` with a hand-written backward.

    Forward, per pixel: ``A = T_I(z) + T_O(z) + δ`` and ``ℓ = softplus(A)`` (``ℓ = 0`` where ``O`` is empty),
    with the terms of each group from the helpers above. The full-width work is a handful of passes over
    ``z``; everything that depends on the keep set runs over the gathered candidates ``(B, I, P)``, I ≪ K.
    """

    @staticmethod
    def forward(ctx: Any, z: Tensor, cand: Tensor, idx: Tensor, ic_valid: Tensor, prior: Tensor | None,
                delta: float, tau: float, group: str, ic_masking: str) -> tuple[Tensor, Tensor]:
        b, k, p = z.shape
        cand3, has_oc = cand.unsqueeze(2), (~cand).any(dim=1, keepdim=True)  # (B, K, 1), (B, 1)
        zo = z + torch.zeros_like(cand3, dtype=z.dtype).masked_fill_(cand3, float("-inf"))  # (B, K, P), one pass
        m_o = zo.amax(dim=1)  # (B, P); −inf where O is empty
        z_i = torch.gather(z, 1, idx.unsqueeze(2).expand(-1, -1, p))  # (B, I, P)
        z_i = z_i.masked_fill_(~ic_valid, float("-inf"))  # padding out of every max and sum
        m_i, top_i = z_i.max(dim=1)  # (B, P)
        oc = _oc_from_maxima(z, cand, torch.maximum(m_o, m_i), m_i) & has_oc
        m_o = torch.where(has_oc, m_o, torch.zeros_like(m_o))
        oc_term, w_o = _oc_logsumexp(zo, m_o) if group == "paper" else _oc_max(zo, m_o)
        if group == "top1":
            ic_term, w_i = _ic_top1(m_i, top_i, z_i)
        elif group == "paper":
            prior_i = None if prior is None else prior.to(z.device, z.dtype)[idx.unsqueeze(2), idx.unsqueeze(1)]
            ic_term, w_i = _ic_paper(z_i, ic_valid, m_i, oc_term, prior_i, tau, ic_masking)  # prior_i (B, I, I)
        elif group == "rank_bg":
            ic_term, w_i = _ic_rank_bg(z_i, ic_valid, ic_masking)
        else:
            raise ValueError(f"group={group!r} is not allowed; choose one of {list(GROUPS)}")
        arg = torch.where(has_oc, ic_term + oc_term + delta, torch.zeros_like(ic_term))  # (B, P) = A
        ctx.group, ctx.shape = group, (b, k, p)
        ctx.save_for_backward(w_o, idx, w_i, torch.sigmoid(arg) * has_oc)
        ctx.mark_non_differentiable(oc)
        return F.softplus(arg) * has_oc, oc

    @staticmethod
    def backward(ctx: Any, *grads: Tensor) -> tuple[Tensor | None, ...]:
        """The gradient of ``ℓ = softplus(A)``, ``A = T_I + T_O + δ``, with respect to ``z``::

            ∂ℓ/∂z_j = σ(A) · (∂T_O/∂z_j + ∂T_I/∂z_j)          (0 where O is empty)
            ∂T_O/∂z_j = softmax_O(z)_j                        paper  (T_O = logsumexp_O z)
                      = [j = argmax_O z]                      top1, rank_bg  (T_O = max_O z)
            ∂T_I/∂z_k = −softmax_{k'∈I}(−g)_k · [k ∈ K]        paper, rank_bg  (T_I = logsumexp_I(−g))
                      = −[k = argmax_I z]                     top1  (T_I = −max_I z)

        The anchor, the keep set K and the OC test are decisions (no gradient); a zeroed entry
        (``g_k = 0``) is a constant. So ``∂ℓ/∂z = σ(A) · (w_O − w_I)``, with ``w_O`` on the OC channels and
        ``w_I`` scattered back from the candidates' positions.
        """
        w_o, idx, w_i, sig = ctx.saved_tensors
        c = grads[0] * sig  # (B, P) = ∂L/∂ℓ · σ(A)
        if ctx.group == "paper":
            grad = w_o * c.unsqueeze(1)  # (B, K, P)
        else:
            grad = c.new_zeros(ctx.shape).scatter_(1, w_o.unsqueeze(1), c.unsqueeze(1))
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
    z_d = logits.detach().reshape(b, k, h * w)  # (B, K, P)
    top, top_i = _maxima(z_d, tags)  # (B, P) each
    if float((top > top_i).float().mean()) > PACK_BELOW:  # most pixels OC (early training): packing won't pay
        pixel, oc = _pixel_terms(logits, tags, prior, delta, tau, group, ic_masking)  # (B, H, W) each
        return reduce_pixel_loss(pixel, oc if valid is None else oc & valid.bool(), valid, reduction)
    chosen = _oc_from_maxima(z_d, candidate_mask(tags), top, top_i)  # (B, P)
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
