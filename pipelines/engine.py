"""What both training stages share: device choice, precision, the schedule, one optimisation epoch."""

from __future__ import annotations

import contextlib
import logging
import math
import time
from collections.abc import Callable, Iterable, Iterator, Sized
from dataclasses import dataclass
from typing import TypeVar

import torch
from torch import Tensor, nn

from pipelines.accel import place_batch
from pipelines.config import TrialConfig
from record import failpoint

log = logging.getLogger(__name__)


class NonFiniteLossError(RuntimeError):
    """A loss part became NaN or infinite; the trial stops rather than train on garbage."""

    def __init__(self, stage: str, epoch: int, part: str, value: float) -> None:
        super().__init__(f"non-finite loss in stage {stage!r} at epoch {epoch}: the {part!r} loss is {value} "
                         "(lower the learning rate or the OCR weight, or check the data)")
        self.stage, self.epoch, self.part, self.value = stage, epoch, part, value

    def __reduce__(self) -> tuple[type[NonFiniteLossError], tuple[str, int, str, float]]:
        return (NonFiniteLossError, (self.stage, self.epoch, self.part, self.value))  # crosses processes


def resolve_device(name: str) -> torch.device:
    """``"auto"`` → CUDA when available, else CPU; ``"cuda"`` without CUDA is an error."""
    if name == "cuda" and not torch.cuda.is_available():
        raise ValueError("device = 'cuda' but CUDA is not available here; use device=auto or device=cpu")
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


@dataclass
class Precision:
    """Mixed precision on CUDA (bf16 where supported, else fp16 with loss scaling); fp32 on CPU."""

    device: torch.device
    enabled: bool

    def __post_init__(self) -> None:
        cuda = self.device.type == "cuda" and self.enabled
        self.dtype = torch.bfloat16 if cuda and torch.cuda.is_bf16_supported() else torch.float16
        self.active = cuda
        self.scaler = torch.amp.GradScaler("cuda", enabled=cuda and self.dtype == torch.float16)

    def autocast(self) -> contextlib.AbstractContextManager[None]:
        """The autocast context for forward passes (a no-op on CPU)."""
        if not self.active:
            return contextlib.nullcontext()
        return torch.autocast("cuda", dtype=self.dtype)

    def step(self, loss: Tensor, optimizer: torch.optim.Optimizer) -> None:
        """Backward and optimiser step, with loss scaling when it is on."""
        optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        self.scaler.step(optimizer)
        self.scaler.update()


B = TypeVar("B", bound=Sized)  # a batch: an index tensor, a pipelines.data.Batch, ...


def progress_hook(report: Callable[[str, int, int], None], stage: str, offset: int,
                  total: int) -> Callable[[int], None]:
    """A per-batch callback that reports ``offset + step`` of ``total`` for ``stage``."""

    def hook(step: int) -> None:
        report(stage, offset + step, total)

    return hook


def poly_schedule(optimizer: torch.optim.Optimizer, total_steps: int,
                  power: float = 0.9) -> torch.optim.lr_scheduler.LambdaLR:
    """The "poly" learning-rate decay of DeepLab and most WSSS code: ``lr · (1 − step/total)^power``."""
    total = max(total_steps, 1)
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: max(1.0 - step / total, 0.0) ** power)


def input_feed(data: object, cfg: TrialConfig, device: torch.device) -> Callable[[Tensor], Tensor]:
    """What turns a loader's images into the network's input: channels-last on CUDA
    (:func:`~pipelines.accel.place_batch`), and ImageNet normalisation on the in-memory digits path only
    (:func:`~pipelines.models.model_input`; the disk ``Dataset`` normalises its images already)."""
    from pipelines.data import MemoryData
    from pipelines.models import model_input

    memory = isinstance(data, MemoryData)

    def feed(images: Tensor) -> Tensor:
        images = place_batch(images, device, cfg.model.channels_last)
        return model_input(images, cfg) if memory else images

    return feed


def endless(batches: Iterable[B]) -> Iterator[B]:
    """The batches of ``batches`` pass after pass, for budgets counted in optimiser steps (a new pass
    reshuffles, as a new epoch would)."""
    while True:
        empty = True
        for batch in batches:
            empty = False
            yield batch
        if empty:
            raise ValueError("the training loader yields no batch: the training split is empty")


def train_epoch(model: nn.Module, optimizer: torch.optim.Optimizer, batches: Iterable[B],
                loss_fn: Callable[[B], dict[str, Tensor]],
                precision: Precision, stage: str, epoch: int,
                schedule: torch.optim.lr_scheduler.LRScheduler | None = None,
                progress: Callable[[int], None] | None = None, seed: int | None = None) -> dict[str, float]:
    """One pass over ``batches`` (anything with a length, e.g. :class:`pipelines.data.Batch`);
    ``loss_fn(batch)`` returns loss parts with ``"total"``.

    ``epoch`` counts from 0; errors name it counting from 1, as the reports do.

    ``schedule`` (if any) steps once per batch; ``seed`` (the trial's) only selects injected faults: the
    failpoint ``train.step`` (:mod:`record._failpoints`) is passed stage, epoch (from 1), step (from 1) and
    seed; its ``return`` action makes that step's loss NaN, as a diverging run would.

    Returns the mean of every part (weighted by batch size), images per second and seconds.
    """
    model.train()
    sums: dict[str, float] = {}
    seen, start = 0, time.perf_counter()
    for step, batch in enumerate(batches):
        with precision.autocast():
            parts = loss_fn(batch)
        if failpoint("train.step", stage=stage, epoch=epoch + 1, step=step + 1, seed=seed):
            parts["total"] = parts["total"] * float("nan")
        values = {name: float(v.detach()) for name, v in parts.items()}
        for name, value in values.items():
            if not math.isfinite(value):
                raise NonFiniteLossError(stage, epoch + 1, name, value)
        precision.step(parts["total"], optimizer)
        if schedule is not None:
            schedule.step()
        for name, value in values.items():
            sums[name] = sums.get(name, 0.0) + value * len(batch)
        seen += len(batch)
        if progress is not None:
            progress(step + 1)
    seconds = time.perf_counter() - start
    means = {name: total / max(seen, 1) for name, total in sums.items()}
    return {**means, "images_per_s": seen / seconds if seconds > 0 else 0.0, "seconds": seconds}
