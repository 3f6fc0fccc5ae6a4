"""The optimiser and learning-rate schedule of a stage, as the WSSS codebases train their networks.

- ``tiny`` networks: AdamW over every parameter (what the digit-scenes figures were measured with).
- Pretrained networks (``model.name="deeplab"``): SGD with momentum ``model.momentum`` (0.9), the
  backbone at the stage's learning rate and the new layers (head, CAM classifier) at
  ``model.head_lr_mult`` (10×) that rate; weight decay on every trainable parameter, biases included.
  This is what the OCR authors' DeepLab-v1 code and IRN do; with frozen batch norms (``model.freeze_bn``,
  as both codebases freeze them) there are no batch-norm parameters to decay. With
  ``model.head_bias_lr_mult`` > 0 the head's convolution biases form a group of their own at that multiple
  of the rate, without weight decay when ``model.head_bias_decay`` is false: kazuto1011's DeepLab-v2 port
  (``main.py``, the ``"20x"`` group) trains the ASPP biases at 20× with weight decay 0.
- Both, stepped once per iteration (``model.lr_schedule``): the poly decay ``lr · (1 − i/total)^power``
  (power ``model.poly_power`` = 0.9); a step decay, ``lr · gamma`` from step ``lr_step_at · total`` on (the
  OCR authors' ``LR_SCHEDULER_NAME: step``, ×0.1 after epoch 20 of 30); or a constant rate.
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


def _conv_biases(model: nn.Module) -> set[int]:
    return {id(m.bias) for m in model.modules()
            if isinstance(m, (nn.Conv2d, nn.Linear)) and m.bias is not None}


def parameter_groups(model: nn.Module, lr: float, head_lr_mult: float, head_bias_lr_mult: float = 0.0,
                     head_bias_decay: float | None = None) -> list[dict[str, object]]:
    """Optimiser groups: the backbone at ``lr``, the head at ``head_lr_mult · lr``.

    With ``head_bias_lr_mult`` > 0 or ``head_bias_decay`` given, the head's convolution biases are a third
    group (``"head_bias"``) at ``head_bias_lr_mult · lr`` (``head_lr_mult`` when 0) with weight decay
    ``head_bias_decay`` (the optimiser's when ``None``). Networks without :meth:`parameter_groups` (the
    tiny ones) give one group of all their parameters.
    """
    split = getattr(model, "parameter_groups", None)
    if split is None:
        return [{"params": list(model.parameters()), "lr": lr, "name": "all"}]
    groups = split()
    out: list[dict[str, object]] = [{"params": groups["backbone"], "lr": lr, "name": "backbone"}]
    head = groups["head"]
    if head_bias_lr_mult > 0 or head_bias_decay is not None:
        biases = _conv_biases(model)
        bias_group: dict[str, object] = {"params": [p for p in head if id(p) in biases],
                                         "lr": lr * (head_bias_lr_mult or head_lr_mult), "name": "head_bias"}
        if head_bias_decay is not None:
            bias_group["weight_decay"] = head_bias_decay
        head = [p for p in head if id(p) not in biases]
        out.append({"params": head, "lr": lr * head_lr_mult, "name": "head"})
        out.append(bias_group)
        return out
    out.append({"params": head, "lr": lr * head_lr_mult, "name": "head"})
    return out


def lr_schedule(optimizer: torch.optim.Optimizer, cfg: TrialConfig,
                total_iterations: int) -> torch.optim.lr_scheduler.LambdaLR:
    """The per-iteration schedule ``model.lr_schedule`` over ``total_iterations`` steps."""
    m = cfg.model
    if m.lr_schedule == "poly":
        return poly_schedule(optimizer, total_iterations, m.poly_power)
    if m.lr_schedule == "constant":
        return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
    at, gamma = m.lr_step_at * max(total_iterations, 1), m.lr_step_gamma
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: gamma if step >= at else 1.0)


def make_optimizer(model: nn.Module, cfg: TrialConfig, stage: str, total_iterations: int,
                   ) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LambdaLR]:
    """The optimiser and its per-iteration schedule for ``model`` in ``stage`` (``"cam"``/``"seg"``).

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
        groups = parameter_groups(model, lr, m.head_lr_mult, m.head_bias_lr_mult,
                                  None if m.head_bias_decay else 0.0)
        optimizer = (torch.optim.SGD(groups, lr=lr, momentum=m.momentum, weight_decay=decay) if kind == "sgd"
                     else torch.optim.AdamW(groups, lr=lr, weight_decay=decay))
    return optimizer, lr_schedule(optimizer, cfg, total_iterations)
