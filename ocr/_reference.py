"""A literal, per-pixel Python implementation of ``docs/ocr-spec.md``.

Slow on purpose: it follows the spec's steps one pixel at a time, with Python loops, so the vectorised
:func:`ocr.ocr_loss` can be checked against it and benchmarked over it. Not for training.
"""

from __future__ import annotations

import torch
from torch import Tensor


def _lse(values: list[Tensor]) -> Tensor:
    return torch.logsumexp(torch.stack(values), dim=0)


def _pixel_group_paper(z: Tensor, ic: list[int], oc: list[int], prior: Tensor, tau: float,
                       ic_masking: str) -> tuple[Tensor, Tensor]:
    p = torch.softmax(z.detach(), dim=0)
    anchor = max(ic, key=lambda k: (float(p[k]), -k))  # ties go to the lowest id
    neg_g: list[Tensor] = []
    for k in ic:
        kept = k == anchor or float(p[anchor] - prior[anchor, k] * p[k]) < tau
        if kept:
            neg_g.append(-z[k])
        elif ic_masking == "zero":
            neg_g.append(torch.zeros((), dtype=z.dtype))
    return _lse(neg_g), _lse([z[j] for j in oc])


def _pixel_group_rank_bg(z: Tensor, ic: list[int], oc: list[int], ic_masking: str) -> tuple[Tensor, Tensor]:
    above = [k for k in ic if k != 0 and float(z[k]) > float(z[0])]
    kept = above if above else [0]
    neg_g: list[Tensor] = []
    for k in ic:
        if k in kept:
            neg_g.append(-z[k])
        elif ic_masking == "zero":
            neg_g.append(torch.zeros((), dtype=z.dtype))
    return _lse(neg_g), torch.stack([z[j] for j in oc]).max()


def reference_pixel_loss(z: Tensor, tag: Tensor, prior: Tensor | None, delta: float, tau: float,
                         group: str, ic_masking: str) -> Tensor:
    """The loss of one pixel: ``z (C+1,)`` logits, ``tag (C,)`` labels."""
    ic = [0] + [c + 1 for c in range(tag.numel()) if int(tag[c]) == 1]
    oc = [c + 1 for c in range(tag.numel()) if int(tag[c]) == 0]
    if not oc:
        return torch.zeros((), dtype=z.dtype)
    if group == "top1":
        arg = torch.stack([z[j] for j in oc]).max() - torch.stack([z[k] for k in ic]).max() + delta
        return torch.nn.functional.softplus(arg)
    if group == "paper":
        if prior is None:
            raise ValueError("prior is required for group='paper'")
        ic_term, oc_term = _pixel_group_paper(z, ic, oc, prior, tau, ic_masking)
    else:
        ic_term, oc_term = _pixel_group_rank_bg(z, ic, oc, ic_masking)
    return torch.nn.functional.softplus(ic_term + oc_term + delta)


def ocr_loss_reference(logits: Tensor, tags: Tensor, prior: Tensor | None, *, delta: float, tau: float,
                       selection: str = "oc", group: str = "paper", ic_masking: str = "zero",
                       reduction: str = "pixels", valid: Tensor | None = None) -> Tensor:
    """Same arguments and meaning as :func:`ocr.ocr_loss`, one pixel at a time."""
    b, _, h, w = logits.shape
    total = torch.zeros((), dtype=logits.dtype)
    n_valid = n_selected = 0
    for i in range(b):
        cand = {0} | {c + 1 for c in range(tags.shape[1]) if int(tags[i, c]) == 1}
        for y in range(h):
            for x in range(w):
                if valid is not None and not bool(valid[i, y, x]):
                    continue
                n_valid += 1
                z = logits[i, :, y, x]
                is_oc = int(z.detach().argmax()) not in cand
                if selection == "none" or (selection == "oc" and not is_oc):
                    continue
                n_selected += 1
                total = total + reference_pixel_loss(z, tags[i], prior, delta, tau, group, ic_masking)
    count = n_valid if reduction == "pixels" else n_selected
    return total / count if count > 0 else total * 0.0
