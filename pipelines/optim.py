"""The optimiser and learning-rate schedule of a stage, as the WSSS codebases train their networks.

- ``tiny`` networks: AdamW over every parameter (what the digit-scenes figures were measured with).
- Pretrained networks (``model.name="deeplab"``): SGD with momentum ``model.momentum`` (0.9), the
  backbone at the stage's learning rate and the new layers (head, CAM classifier) at
  ``model.head_lr_mult`` (10×) that rate; weight decay on every trainable parameter, biases included.
  This is what the OCR authors' DeepLab-v1 code and IRN do; with frozen batch norms (``model.freeze_bn``,
  as both codebases freeze them) there are no batch-norm parameters to decay. (kazuto1011's DeepLab-v2
  port additionally trains the ASPP biases at 20× without decay; not reproduced.)
- Both: the poly decay ``lr · (1 − i/total)^power`` (power ``model.poly_power`` = 0.9), stepped once per
  iteration.
"""

from __future__ import annotations

import torch
from torch import nn

from pipelines.config import TrialConfig
from pipelines.engine import poly_schedule

STAGES = ("cam", "seg")


def _stage_rates(cfg: TrialConfig, stage: str) -> tuple[float, float]:
    if stage not in STAGES:
        raise ValueError(f"stage = {stage!r} is not allowed; choose one of {list(STAGES)}")
    part = cfg.cam if stage == "cam" else cfg.seg
    return part.lr, part.weight_decay


def parameter_groups(model: nn.Module, lr: float, head_lr_mult: float) -> list[dict[str, object]]:
    """Optimiser groups: the backbone at ``lr``, the head at ``head_lr_mult · lr``.

    Networks without :meth:`parameter_groups` (the tiny ones) give one group of all their parameters.
    """
    split = getattr(model, "parameter_groups", None)
    if split is None:
        return [{"params": list(model.parameters()), "lr": lr, "name": "all"}]
    groups = split()
    return [{"params": groups["backbone"], "lr": lr, "name": "backbone"},
            {"params": groups["head"], "lr": lr * head_lr_mult, "name": "head"}]


def make_optimizer(model: nn.Module, cfg: TrialConfig, stage: str, total_iterations: int,
                   ) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LambdaLR]:
    """The optimiser and its per-iteration poly schedule for ``model`` in ``stage`` (``"cam"``/``"seg"``).

    Args:
        model: the stage's network (already on its device).
        cfg: the trial config (``model.*`` and the stage's ``lr`` and ``weight_decay``).
        stage: ``"cam"`` or ``"seg"``: whose learning rate and weight decay apply.
        total_iterations: optimiser steps of the whole stage (the schedule reaches 0 there).
    """
    lr, decay = _stage_rates(cfg, stage)
    m = cfg.model
    kind = m.optimizer if m.optimizer != "auto" else ("adamw" if m.name == "tiny" else "sgd")
    if m.name == "tiny" and kind == "adamw":  # exactly the optimiser the digit-scenes figures come from
        optimizer: torch.optim.Optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=decay)
    else:
        groups = parameter_groups(model, lr, m.head_lr_mult)
        optimizer = (torch.optim.SGD(groups, lr=lr, momentum=m.momentum, weight_decay=decay) if kind == "sgd"
                     else torch.optim.AdamW(groups, lr=lr, weight_decay=decay))
    return optimizer, poly_schedule(optimizer, total_iterations, m.poly_power)
