"""Study facts that the writer (``study/``) and the readers (``results/``, ``ocr-study status``) share.

Each fact is written once, here: the ``meta.`` prefix of a trial config's descriptive keys, the cell id
and its spelling of values, where OCR parameters apply, ASHA's rungs, a trial's planned epochs, why a
trial stopped, and how the best setting of a cell is chosen.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable, Mapping
from typing import Any, TypeVar

from record._vocab import UNFINISHED, StopReason, TrialStatus

META = "meta."  # config keys that describe a trial (cell, setting, study, ...) rather than configure it
CONTINUES_FROM = "continues_from"  # meta key: the checkpoint folder of the search trial a confirm trial continues
BASE_CELL = "base"  # the id of the one cell of a study without a grid
OCR_OFF = "none"  # the ocr.selection that turns the OCR loss off
K = TypeVar("K", bound=Hashable)
# Metrics that are fractions in the record and read as percent: IoU, accuracy, OC rates.
PERCENT_METRICS = ("iou", "acc", "oc_rate", "oc_image_rate")


def value_text(value: Any) -> str:
    """A grid value as a cell id spells it: ``true``/``false`` for booleans, ``str`` otherwise."""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def cell_id(cell: Mapping[str, Any]) -> str:
    """A cell's name, ``"ocr.selection=oc,ocr.prior=cooc_minmax"``; ``"base"`` for the one cell of no grid."""
    return ",".join(f"{key}={value_text(value)}" for key, value in cell.items()) or BASE_CELL


def parse_cell(cell: str) -> dict[str, str]:
    """A cell id as ``{key: value text}`` (the inverse of :func:`cell_id`; ``"base"`` gives ``{}``)."""
    out: dict[str, str] = {}
    for part in cell.split(","):
        if "=" in part:
            key, value = part.split("=", 1)
            out[key] = value
    return out


def ocr_applies(key: str, selection: Any) -> bool:
    """Whether trial key ``key`` has an effect under ``ocr.selection = selection``.

    With the OCR loss off (``none``) no ``ocr.*`` key but ``ocr.selection`` itself does anything.
    """
    return not (key.startswith("ocr.") and key != "ocr.selection" and value_text(selection) == OCR_OFF)


def asha_rungs(grace_period: int, reduction_factor: int, max_epochs: int) -> tuple[int, ...]:
    """The epochs at which ASHA may stop a trial: every ``grace · rf^k`` below ``max_epochs``."""
    rungs: list[int] = []
    epoch = max(1, grace_period)
    while epoch < max_epochs:
        rungs.append(epoch)
        epoch *= max(2, reduction_factor)
    return tuple(rungs)


def trial_reports(epochs: int, iterations: int = 0, report_every: int = 0) -> int:
    """The reports (the study's epoch-like unit) a trial's stage 2 makes.

    A budget in epochs (``seg.iterations = 0``) reports once per epoch: ``epochs``. A budget in
    iterations reports every ``report_every`` optimiser steps and after the last:
    ``ceil(iterations / report_every)`` (``report_every = 0``: once, at the end); ``epochs`` is then unused.
    """
    if iterations <= 0:
        return int(epochs)
    every = report_every if report_every > 0 else iterations
    return -(-int(iterations) // int(every))


def config_reports(config: Mapping[str, Any]) -> int | None:
    """:func:`trial_reports` of a flat trial config (``seg.epochs``, ``seg.iterations``,
    ``seg.report_every``); ``None`` when it names none of them."""
    if config.get("seg.epochs") is None and not config.get("seg.iterations"):
        return None
    return trial_reports(int(config.get("seg.epochs") or 0), int(config.get("seg.iterations") or 0),
                         int(config.get("seg.report_every") or 0))


def planned_epochs(seg_epochs: int | None, scheduler: str, max_epochs: int | None) -> int | None:
    """The epochs (reports) a trial is to run: its reports, capped by ASHA's ``max_epochs`` under ASHA.

    Args:
        seg_epochs: the trial's reports, :func:`trial_reports` (``seg.epochs`` for a budget in epochs;
            ``None`` when unknown: then ``max_epochs``).
        scheduler: ``asha``, ``none`` or ``unknown``.
        max_epochs: ASHA's ``max_t`` (the scheduler's ``max_epochs``), if known.
    """
    if seg_epochs is None:
        return max_epochs
    if scheduler == "asha" and max_epochs:
        return min(int(seg_epochs), int(max_epochs))
    return int(seg_epochs)


def stop_reason(status: str, epochs: int, planned: int | None, scheduler: str = "unknown",
                rungs: Iterable[int] = ()) -> tuple[StopReason, int | None]:
    """Why a trial stopped, and the ASHA rung (its epoch) when ASHA stopped it.

    ``status`` is a :class:`TrialStatus` (or its word). The reason: ``completed`` (every planned epoch ran),
    ``early_stopped`` (by ASHA at a rung; also any early end when the scheduler is unknown), ``stopped``
    (ended early otherwise: the time budget), or, for a trial that did not end, ``failed``, ``running``,
    ``pending``, ``paused``, ``abandoned``.
    """
    if status in UNFINISHED:
        return UNFINISHED[TrialStatus(status)], None
    if planned is None or epochs >= planned:
        return StopReason.COMPLETED, None
    if scheduler == "unknown" or (scheduler == "asha" and epochs in set(rungs)):
        return StopReason.EARLY_STOPPED, epochs
    return StopReason.STOPPED, None


def ranked(scores: Mapping[K, Iterable[float]], mode: str) -> list[tuple[K, float]]:
    """Settings best first by their mean score over seeds, with that mean; settings without a score are left
    out. The one ranking of the project: ``ocr-study status``'s best setting and the confirm phase's choice.

    Args:
        scores: per setting, the study metric of each of its seeds.
        mode: ``max`` or ``min``; ties go to the setting given first.
    """
    means = [(key, sum(values) / len(values)) for key in scores
             if (values := [float(v) for v in scores[key]])]
    sign = -1.0 if mode == "max" else 1.0
    order = sorted(range(len(means)), key=lambda i: (sign * means[i][1], i))
    return [means[i] for i in order]


def best_setting(scores: Mapping[K, Iterable[float]], mode: str) -> tuple[K, float] | None:
    """The setting with the best mean score over its seeds, and that mean (the first of :func:`ranked`);
    ``None`` when none has a score."""
    order = ranked(scores, mode)
    return order[0] if order else None


def reported_scale(metric: str) -> float:
    """What a metric is multiplied by as people read it: 100 for a share (IoU, accuracy, OC rates: percent, and
    differences in percentage points), else 1."""
    return 100.0 if any(part in metric for part in PERCENT_METRICS) else 1.0


def metric_text(metric: str, value: float) -> str:
    """A metric as people read it (``ocr-study status``, the progress line, the report): IoU, accuracy and
    OC rates in percent (``61.52 %``), others as they are (a loss is no share of anything)."""
    if reported_scale(metric) == 100.0:
        return f"{100 * value:.2f} %"
    return f"{value:.4g}"
