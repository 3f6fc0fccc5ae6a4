"""What a study will run, before it runs: its cells, trial counts, epoch budgets and resources.

Pure arithmetic over a validated :class:`~study.spec.StudySpec` (no Ray, no torch): the dry run prints
:func:`format_plan`, and the tuner takes each cell's base config from :func:`cell_config`.
"""

from __future__ import annotations

import textwrap
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from pipelines.config import to_flat
from record import Phase, PhaseDoc, StudyDoc, asha_rungs, cell_id, planned_epochs
from study.spec import Scalar, SearchParam, SpecError, StudySpec, spec_hash


@dataclass(frozen=True)
class CellPlan:
    """One cell of the grid, the one cell type of a study: its id, grid values, flat base config, the search
    parameters sampled in it, and its trial count.

    ``settings`` is ``search.samples`` where a parameter applies and 1 where none does; ``trials`` is
    ``settings × len(seeds)``, before any ``budget.max_trials`` cap. ``base`` is the spec's trial with the
    cell's grid values as flat dotted keys (the searcher adds the sampled values and the seed).
    """

    id: str
    values: tuple[tuple[str, Scalar], ...]
    search: tuple[SearchParam, ...]
    settings: int
    trials: int
    base: Mapping[str, Any] = field(default_factory=dict, compare=False)

    @property
    def grid_values(self) -> dict[str, Scalar]:
        """The cell's grid values as ``{key: value}``."""
        return dict(self.values)

    @property
    def params(self) -> tuple[str, ...]:
        """The keys of the parameters sampled in this cell."""
        return tuple(p.key for p in self.search)


@dataclass(frozen=True)
class StudyPlan:
    """The cells and totals of a study, with epoch budgets and the resources asked."""

    spec: StudySpec
    cells: tuple[CellPlan, ...]
    requested_trials: int
    trials: int
    max_epochs: int
    rungs: tuple[int, ...]
    epochs_full: int
    epochs_expected: float
    confirm_trials: int = 0
    confirm_epochs: int = 0

    @property
    def capped(self) -> bool:
        """Whether ``budget.max_trials`` cut the number of trials."""
        return self.trials < self.requested_trials

    @property
    def concurrency(self) -> int:
        """How many trials can run at once: ``max_concurrent``, or fewer when there are fewer trials."""
        return min(self.spec.max_concurrent, self.trials)

    @property
    def cpus_at_once(self) -> float:
        """CPUs asked with :attr:`concurrency` trials running."""
        return self.spec.resources.cpus * self.concurrency

    @property
    def gpus_at_once(self) -> float:
        """GPUs asked with :attr:`concurrency` trials running."""
        return self.spec.resources.gpus * self.concurrency


# ---------------------------------------------------------------------------------------------------
# The cell rules
# ---------------------------------------------------------------------------------------------------

def asha_epochs_per_trial(grace_period: int, reduction_factor: int, max_epochs: int) -> float:
    """The mean epochs a trial runs under ASHA, by synchronous successive halving (an estimate).

    A fraction ``1/rf^k`` of the trials reaches rung ``k`` and ``1/rf`` of those go on to the next rung
    (or to ``max_epochs`` after the last). Asynchronous promotion lets early trials through more often,
    so the real number is somewhat higher.
    """
    rungs = asha_rungs(grace_period, reduction_factor, max_epochs)
    stops = [*rungs, max_epochs]
    epochs, previous = 0.0, 0
    for k, stop in enumerate(stops):
        epochs += (stop - previous) / reduction_factor**k
        previous = stop
    return epochs


def cell_config(cell: CellPlan, seed: int | None = None) -> dict[str, Any]:
    """The base trial config of a cell as flat dotted keys (a copy), with ``seed`` set when given."""
    flat = dict(cell.base)
    if seed is not None:
        flat["seed"] = seed
    return flat


def _plan_cell(spec: StudySpec, cell: dict[str, Scalar]) -> CellPlan:
    search = spec.cell_params(cell)
    settings = spec.search.samples if search and spec.search is not None else 1
    return CellPlan(id=cell_id(cell), values=tuple(cell.items()), search=search, settings=settings,
                    trials=settings * len(spec.seeds), base={**to_flat(spec.trial), **cell})


def plan(spec: StudySpec) -> StudyPlan:
    """Count what ``spec`` will run: trials per cell, the total (capped by ``budget.max_trials``), epochs.

    ``epochs_full`` is trials × max_epochs (no early stopping); ``epochs_expected`` is the ASHA estimate
    of :func:`asha_epochs_per_trial` × trials (equal to ``epochs_full`` without a scheduler).
    """
    cells = tuple(_plan_cell(spec, cell) for cell in spec.cells)
    requested = sum(cell.trials for cell in cells)
    cap = spec.budget.max_trials
    trials = requested if cap is None else min(requested, cap)
    sched = spec.scheduler
    asha = sched.type == "asha"
    rungs = asha_rungs(sched.grace_period, sched.reduction_factor, sched.max_epochs) if asha else ()
    per_trial = (asha_epochs_per_trial(sched.grace_period, sched.reduction_factor, sched.max_epochs)
                 if asha else float(sched.max_epochs))
    confirm = spec.confirm
    confirm_trials = (sum(min(confirm.top_k, c.settings) for c in cells) * len(confirm.seeds)
                      if confirm is not None else 0)
    return StudyPlan(spec=spec, cells=cells, requested_trials=requested, trials=trials,
                     max_epochs=sched.max_epochs, rungs=rungs, epochs_full=trials * sched.max_epochs,
                     epochs_expected=trials * per_trial, confirm_trials=confirm_trials,
                     confirm_epochs=confirm_trials * (confirm.epochs if confirm is not None else 0))


def study_record(study: StudyPlan) -> StudyDoc:
    """The content of ``study.json`` (see :mod:`record`): phases, cells, planned trials and epochs, and the
    facts a report needs (metric, grid, searched keys, rungs), so that ``results`` never reads the spec."""
    spec, sched = study.spec, study.spec.scheduler
    search = spec.search.params if spec.search is not None else ()
    trial = to_flat(spec.trial)
    cells = tuple({"id": c.id, "values": c.grid_values, "params": list(c.params), "settings": c.settings,
                   "trials": c.trials} for c in study.cells)
    return StudyDoc(
        name=spec.name, spec_hash=spec_hash(spec), metric=sched.metric, mode=sched.mode, scheduler=sched.type,
        rungs=tuple(study.rungs), max_epochs=study.max_epochs,
        epochs_planned=planned_epochs(spec.trial.seg.reports, sched.type, sched.max_epochs),
        grid={axis.key: list(axis.values) for axis in spec.grid},
        defaults={axis.key: trial.get(axis.key) for axis in spec.grid},
        search_keys=tuple(sorted(p.key for p in search)),
        log_keys=tuple(sorted(p.key for p in search if p.type == "loguniform" or p.log)),
        seeds=tuple(spec.seeds), gpus=float(spec.resources.gpus), planned_trials=study.trials + study.confirm_trials,
        phases=(PhaseDoc(Phase.SEARCH, trials=study.trials, cells=cells), *_confirm_record(study)))


def _confirm_record(study: StudyPlan) -> tuple[PhaseDoc, ...]:
    confirm = study.spec.confirm
    if confirm is None:
        return ()
    return (PhaseDoc(Phase.CONFIRM, trials=study.confirm_trials, seeds=tuple(confirm.seeds), top_k=confirm.top_k,
                     epochs=confirm.epochs, metric=confirm.metric, mode=confirm.mode, seed_rule=confirm.rule),)


# ---------------------------------------------------------------------------------------------------
# The dry run's text
# ---------------------------------------------------------------------------------------------------

def _table(rows: list[list[str]], right: set[int]) -> list[str]:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = []
    for row in rows:
        pairs = enumerate(zip(row, widths, strict=True))
        padded = [c.rjust(w) if i in right else c.ljust(w) for i, (c, w) in pairs]
        lines.append("  ".join(padded).rstrip())
    return lines


def _cells_table(study: StudyPlan) -> list[str]:
    rows = [["cell", "searched", "settings", "trials"]]
    rows += [[c.id, ", ".join(c.params) or "-", str(c.settings), str(c.trials)] for c in study.cells]
    rows.append(["total", "", str(sum(c.settings for c in study.cells)), str(study.requested_trials)])
    lines = _table(rows, right={2, 3})
    rule = "-" * max(len(line) for line in lines)
    return [lines[0], rule, *lines[1:-1], rule, lines[-1]]


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}{'' if n == 1 else 's'}"


def _number(value: float) -> str:
    return f"{value:g}"


def _header(study: StudyPlan) -> list[str]:
    spec = study.spec
    search = spec.search
    searched = (f"{search.sampler} search, {search.samples} samples per cell over "
                f"{', '.join(p.key for p in search.params)} (seed {search.seed})" if search else "no search")
    return [
        f"study {spec.name}  (spec {spec_hash(spec)})  ->  {spec.study_dir}",
        f"{_count(len(study.cells), 'cell')} × seeds {list(spec.seeds)}; {searched}",
    ]


def _trials_line(study: StudyPlan) -> str:
    if study.capped:
        return (f"trials: {study.trials} (capped by budget.max_trials from {study.requested_trials}; "
                "the cells above are counted before the cap)")
    return f"trials: {study.trials}"


def _epochs_lines(study: StudyPlan) -> list[str]:
    sched = study.spec.scheduler
    full = f"epochs: {study.epochs_full} without early stopping ({study.trials} trials × {study.max_epochs})"
    if sched.type != "asha":
        return [full, f"scheduler: none (every trial runs {study.max_epochs} epochs; "
                      f"{sched.metric} ({sched.mode}) ranks them)"]
    rungs = ", ".join(str(r) for r in study.rungs) or "none below max_epochs"
    return [full,
            f"        about {study.epochs_expected:.0f} with ASHA (an estimate: successive halving, "
            f"rungs at epochs {rungs})",
            f"scheduler: ASHA on {sched.metric} ({sched.mode}), grace period {sched.grace_period}, "
            f"reduction factor {sched.reduction_factor}, max {study.max_epochs} epochs"]


def _resources_lines(study: StudyPlan) -> list[str]:
    res = study.spec.resources
    budget = study.spec.budget
    time_s = "none" if budget.time_s is None else f"{_number(budget.time_s)} s"
    return [
        f"resources: {_number(res.cpus)} CPU, {_number(res.gpus)} GPU per trial; "
        f"{_number(study.cpus_at_once)} CPU, {_number(study.gpus_at_once)} GPU with {study.concurrency} "
        f"at once (max_concurrent {study.spec.max_concurrent})",
        f"time budget: {time_s}",
        f"tracking: {study.spec.tracking_uri}  (experiment {study.spec.tracking.experiment})",
    ]


def _confirm_lines(study: StudyPlan) -> list[str]:
    confirm = study.spec.confirm
    if confirm is None:
        return ["confirm phase: none (add a `confirm:` section to measure the chosen settings on several seeds)"]
    if confirm.rule is not None:
        from results._sequential import plan_lines, rule_text

        rule = confirm.rule
        chosen = sum(min(confirm.top_k, c.settings) for c in study.cells)
        least = chosen * rule.min
        return [f"confirm phase: each cell's best {_count(confirm.top_k, 'setting')} by {confirm.metric} "
                f"({confirm.mode}), seeds added until the answer is clear, {confirm.epochs} epochs, no early "
                "stopping",
                *(f"        {line}" for line in textwrap.wrap(rule_text(rule), 104)),
                f"        trials: {least} to {study.confirm_trials}; epochs: {least * confirm.epochs} to "
                f"{study.confirm_epochs}",
                *(f"        {line}" for line in plan_lines(rule, chosen - 1, study.concurrency, mode=confirm.mode))]
    return [f"confirm phase: each cell's best {_count(confirm.top_k, 'setting')} by {confirm.metric} "
            f"({confirm.mode}) × seeds {list(confirm.seeds)}, {confirm.epochs} epochs, no early stopping",
            f"        trials: {study.confirm_trials}; epochs: {study.confirm_epochs}"]


def format_plan(study: StudyPlan) -> str:
    """The dry run's text: a table of cells, then totals, epoch budgets and resources of both phases, and
    the placeholder values a user must set before a real run."""
    lines = [*_header(study), "", *_cells_table(study), "", "search phase:", _trials_line(study),
             *_epochs_lines(study), *_iterations_lines(study), "", *_confirm_lines(study), "",
             *_resources_lines(study), *_placeholder_lines(study.spec)]
    return "\n".join(lines)


PLACEHOLDER = "<set"  # a shipped spec's value that its user replaces: "<set: what it is>"


def placeholders(spec: StudySpec) -> dict[str, str]:
    """The trial keys whose value is a placeholder (``"<set: ...>"``), with that value."""
    return {key: value for key, value in to_flat(spec.trial).items()
            if isinstance(value, str) and value.startswith(PLACEHOLDER)}


def check_placeholders(spec: StudySpec) -> None:
    """Raise :class:`SpecError` naming every placeholder key (a real run cannot start with them)."""
    found = placeholders(spec)
    if found:
        keys = ", ".join(f"trial.{key}" for key in found)
        raise SpecError(next(iter(found)), f"set {keys} first: the spec holds placeholders "
                                           f"({'; '.join(found.values())}); copy the spec and put your paths "
                                           "there (see README, Reproducing the paper's setting)")


def _placeholder_lines(spec: StudySpec) -> list[str]:
    found = placeholders(spec)
    if not found:
        return []
    return ["to set before a real run (placeholders; a run exits 2 until they are set):",
            *(f"  trial.{key}: {value}" for key, value in found.items())]


def _iterations_lines(study: StudyPlan) -> list[str]:
    seg = study.spec.trial.seg
    if not seg.iterations:
        return []
    every = seg.report_every or seg.iterations
    per_trial = min(study.max_epochs * every, seg.iterations)
    expected = min(study.epochs_expected * every, study.trials * per_trial)
    return [f"iterations: {seg.iterations} per trial (batch {seg.batch_size}), a report (epoch above) every "
            f"{every}: {study.trials * per_trial} optimiser steps without early stopping, about "
            f"{expected:.0f} with the scheduler"]
