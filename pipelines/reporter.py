"""How a trial tells the outside world what it did.

A :class:`Reporter` receives one metrics dict per epoch (with the folder of the checkpoint written for
that epoch) and progress ticks within a stage. Ray Tune, MLflow and the command line each implement it;
:class:`ListReporter` collects everything for tests.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol


class Reporter(Protocol):
    """What a trial calls: ``report`` once per epoch, ``progress`` as batches go by."""

    def report(self, metrics: Mapping[str, float], checkpoint_dir: Path | None = None) -> None:
        """One epoch's metrics and, if one was written, the checkpoint folder."""

    def progress(self, stage: str, done: int, total: int) -> None:
        """``done`` of ``total`` steps of ``stage`` (``"cam"``, ``"pseudo"``, ``"seg"``) are finished."""


@dataclass
class ListReporter:
    """Collects reports in memory (for tests and notebooks)."""

    reports: list[dict[str, float]] = field(default_factory=list)
    checkpoints: list[Path | None] = field(default_factory=list)

    def report(self, metrics: Mapping[str, float], checkpoint_dir: Path | None = None) -> None:
        """Append a copy of the metrics."""
        self.reports.append(dict(metrics))
        self.checkpoints.append(checkpoint_dir)

    def progress(self, stage: str, done: int, total: int) -> None:
        """Ignored."""
