"""The OCR term of a stage: the loss from config, its prior matrix, and the posterior's updates."""

from __future__ import annotations

import torch
from torch import Tensor

from ocr import OCRLoss, PosteriorPrior, prior_matrix
from pipelines.config import OCRConfig


class OCRTerm:
    """``weight · OCRLoss(...)`` with every argument from :class:`OCRConfig`.

    The prior comes from the training split's tags; with ``prior="posterior"`` it is an EMA of the
    network's own predictions, updated after each batch.
    """

    def __init__(self, cfg: OCRConfig, train_tags: Tensor, seed: int, device: torch.device) -> None:
        self.cfg = cfg
        self.static = prior_matrix(train_tags, cfg.prior, seed=seed).to(device)  # (C+1, C+1)
        k = self.static.shape[0]
        self.posterior = (PosteriorPrior(k, cfg.posterior_momentum, init=self.static)
                          if cfg.prior == "posterior" else None)
        self.loss = OCRLoss(self.static, delta=cfg.delta, tau=cfg.tau, selection=cfg.selection, group=cfg.group,
                            ic_masking=cfg.ic_masking, reduction=cfg.reduction).to(device)

    @property
    def enabled(self) -> bool:
        """False for the baseline (``selection="none"``) or a zero weight."""
        return self.cfg.selection != "none" and self.cfg.weight > 0

    @property
    def matrix(self) -> Tensor:
        """The prior matrix in force now."""
        return self.posterior.matrix if self.posterior is not None else self.static

    def __call__(self, logits: Tensor, tags: Tensor, valid: Tensor | None) -> Tensor:
        """The weighted loss for a batch; updates the posterior afterwards."""
        loss = self.loss(logits, tags, valid, prior=self.matrix.to(logits.device))
        if self.posterior is not None:
            self.posterior.update(logits, valid)
        return self.cfg.weight * loss

    def state_dict(self) -> dict[str, Tensor]:
        """The posterior matrix (empty when the prior is static)."""
        return self.posterior.state_dict() if self.posterior is not None else {}

    def load_state_dict(self, state: dict[str, Tensor]) -> None:
        """Restore the posterior matrix."""
        if self.posterior is not None and state:
            self.posterior.load_state_dict(state)
