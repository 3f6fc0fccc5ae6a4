"""Prior correlation matrices ``M`` of shape ``(C+1, C+1)`` over global channel ids (0 = background).

All co-occurrence variants come from the training split's tag matrix ``(N, C)``: ``N[i, j]`` is the
number of training images containing both foreground classes i and j (``N[i, i]``: images with i).
Background is in every image and carries no co-occurrence signal, so row and column 0 are 0 except
``M[0, 0] = 1``.
"""

from __future__ import annotations

import torch
from torch import Tensor

from ocr.options import PRIOR_VARIANTS


def cooccurrence_counts(tags: Tensor) -> Tensor:
    """``N = tagsᵀ · tags``: ``(C, C)`` float64 counts of images holding both classes."""
    if tags.dim() != 2:
        raise ValueError(f"tags must be (N, C); got shape {tuple(tags.shape)}")
    t = tags.to(torch.float64)  # (N, C)
    return t.T @ t  # (C, C)


def _with_background(fg: Tensor) -> Tensor:
    """Embed a ``(C, C)`` foreground block into ``(C+1, C+1)`` with row/col 0 zero and ``M[0, 0] = 1``."""
    c = fg.shape[0]
    m = torch.zeros(c + 1, c + 1, dtype=fg.dtype)
    m[1:, 1:] = fg
    m[0, 0] = 1.0
    return m


def _row_minmax(n: Tensor) -> Tensor:
    lo = n.min(dim=1, keepdim=True).values  # (C, 1)
    span = n.max(dim=1, keepdim=True).values - lo  # (C, 1)
    return torch.where(span > 0, (n - lo) / span.clamp_min(1e-12), torch.zeros_like(n))


def _conditional(n: Tensor) -> Tensor:
    diag = n.diagonal().unsqueeze(1)  # (C, 1)
    return torch.where(diag > 0, n / diag.clamp_min(1.0), torch.zeros_like(n))


def shuffle_permutation(num_classes: int, seed: int) -> Tensor:
    """The fixed permutation of foreground classes used by the ``shuffled`` control."""
    gen = torch.Generator().manual_seed(seed)
    return torch.randperm(num_classes, generator=gen)


def prior_matrix(tags: Tensor, variant: str, *, seed: int = 0) -> Tensor:
    """The prior correlation matrix ``(C+1, C+1)`` (float32) for ``variant``.

    Args:
        tags: the training split's tag matrix ``(N, C)`` in {0, 1}.
        variant: one of ``cooc_raw``, ``cooc_minmax``, ``cooc_conditional``, ``uniform``, ``identity``,
            ``posterior`` (the starting matrix of :class:`PosteriorPrior`: the identity), ``shuffled``
            (``cooc_minmax`` with foreground rows and columns permuted by ``seed``).
        seed: the permutation seed of ``shuffled``.
    """
    if variant not in PRIOR_VARIANTS:
        raise ValueError(f"variant={variant!r} is not allowed; choose one of {list(PRIOR_VARIANTS)}")
    n = cooccurrence_counts(tags)  # (C, C)
    c = n.shape[0]
    if variant == "uniform":
        return torch.ones(c + 1, c + 1)
    if variant in ("identity", "posterior"):
        return torch.eye(c + 1)
    if variant == "cooc_raw":
        return _with_background(n).float()
    if variant == "cooc_conditional":
        return _with_background(_conditional(n)).float()
    fg = _row_minmax(n)
    if variant == "shuffled":
        perm = shuffle_permutation(c, seed)
        fg = fg[perm][:, perm]
    return _with_background(fg).float()


class PosteriorPrior:
    """The "posterior prediction correlation": an EMA of each class's mean softmax vector.

    Row ``k`` is ``momentum · row + (1 − momentum) · mean softmax of the pixels predicted as k`` in a
    batch; rows of classes nobody predicted in the batch stay as they were. It starts at ``init``
    (the identity by default: no cross-class correlation until predictions say otherwise).
    """

    def __init__(self, num_channels: int, momentum: float = 0.99, init: Tensor | None = None) -> None:
        if not 0.0 <= momentum <= 1.0:
            raise ValueError(f"momentum={momentum!r} must be in [0, 1]")
        start = torch.eye(num_channels) if init is None else init.detach().float().clone()
        if start.shape != (num_channels, num_channels):
            raise ValueError(f"init must be ({num_channels}, {num_channels}); got {tuple(start.shape)}")
        self.momentum = momentum
        self.matrix = start  # (K, K)

    @torch.no_grad()
    def update(self, logits: Tensor, valid: Tensor | None = None) -> Tensor:
        """Fold one batch's logits ``(B, K, H, W)`` into the matrix; returns the updated matrix."""
        k = logits.shape[1]
        p = torch.softmax(logits.detach().float(), dim=1).permute(0, 2, 3, 1).reshape(-1, k)  # (P, K)
        pred = p.argmax(dim=1)  # (P,)
        if valid is not None:
            keep = valid.reshape(-1).bool()
            p, pred = p[keep], pred[keep]
        sums = torch.zeros(k, k, dtype=p.dtype, device=p.device).index_add_(0, pred, p)  # (K, K)
        counts = torch.bincount(pred, minlength=k).to(p.dtype)  # (K,)
        seen = (counts > 0).to(self.matrix.device)
        means = (sums / counts.clamp_min(1.0).unsqueeze(1)).to(self.matrix.device)
        blended = self.momentum * self.matrix + (1.0 - self.momentum) * means
        self.matrix = torch.where(seen.unsqueeze(1), blended, self.matrix)
        return self.matrix

    def state_dict(self) -> dict[str, Tensor]:
        """The matrix, for checkpoints."""
        return {"matrix": self.matrix.clone()}

    def load_state_dict(self, state: dict[str, Tensor]) -> None:
        """Restore what :meth:`state_dict` returned."""
        self.matrix = state["matrix"].detach().float().clone()
