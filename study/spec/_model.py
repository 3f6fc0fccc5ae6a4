"""The study spec as frozen dataclasses, each validated on construction."""

from __future__ import annotations

import functools
import itertools
import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

from pipelines.config import (
    SegConfig,
    TrialConfig,
    to_flat,
)
from record import MLFLOW_DB, SeedRule, cell_id, ocr_applies
from storage import is_remote, join_uri, local_path
from study.spec._checks import (
    MAX_CELLS,
    MAX_SEED,
    METRIC_PATTERN,
    MODES,
    PARAM_KEYS,
    SAMPLERS,
    SCHEDULERS,
    SEARCH_TYPES,
    Scalar,
    SpecError,
    _build_trial,
    _check_choice,
    _check_int,
    _check_name,
    _check_number,
    _check_optional_text,
    _check_seeds,
    _check_text,
    _check_type_fits,
    _check_values,
    _constant,
    _show,
    _trial_key,
    _unknown,
)


@dataclass(frozen=True)
class GridAxis:
    """One categorical axis of the grid: a trial key and the values it takes (coerced to its type)."""

    key: str
    values: tuple[Scalar, ...]

    def __post_init__(self) -> None:
        _check_values(f"grid.{self.key}", self.values)


@dataclass(frozen=True)
class SearchParam:
    """One parameter Optuna samples inside each cell where it applies.

    ``uniform``/``loguniform`` use ``low``/``high``; ``int`` uses ``low``/``high``/``step``/``log``;
    ``choice`` uses ``values``.
    """

    key: str
    type: str
    low: float | None = None
    high: float | None = None
    step: int = 1
    log: bool = False
    values: tuple[Scalar, ...] = ()

    @property
    def path(self) -> str:
        """The key path of this parameter in a spec."""
        return f"search.params.{self.key}"

    def __post_init__(self) -> None:
        _check_choice(f"{self.path}.type", self.type, SEARCH_TYPES)
        self._check_unused()
        if self.type == "choice":
            _check_values(f"{self.path}.values", self.values)
        else:
            self._check_range()

    def _check_unused(self) -> None:
        given = {"low": self.low is not None, "high": self.high is not None, "step": self.step != 1,
                 "log": self.log is not False, "values": bool(self.values)}
        for name, is_given in given.items():
            if is_given and name not in PARAM_KEYS[self.type]:
                raise SpecError(f"{self.path}.{name}", f"does not apply to type {self.type}")

    def _check_range(self) -> None:
        check = _check_int if self.type == "int" else _check_number
        check(f"{self.path}.low", self.low)
        check(f"{self.path}.high", self.high)
        low, high = cast(float, self.low), cast(float, self.high)
        if not low < high:
            raise SpecError(f"{self.path}.low", f"must be less than high = {high}, got {low}")
        if self.type == "loguniform" and low <= 0:
            raise SpecError(f"{self.path}.low", f"must be > 0 for loguniform, got {low}")
        if self.type == "int":
            self._check_int_options(cast(int, low), cast(int, high))

    def _check_int_options(self, low: int, high: int) -> None:
        _check_int(f"{self.path}.step", self.step, 1)
        if not isinstance(self.log, bool):
            raise SpecError(f"{self.path}.log", f"must be true or false, got {_show(self.log)}")
        if self.log and self.step != 1:
            raise SpecError(f"{self.path}.step", "must be 1 when log is true")
        if self.log and low < 1:
            raise SpecError(f"{self.path}.low", f"must be >= 1 when log is true, got {low}")
        if (high - low) % self.step:
            raise SpecError(f"{self.path}.high", f"high - low must be a multiple of step = {self.step}, "
                                                 f"got low = {low}, high = {high}")

    def to_dict(self) -> dict[str, Any]:
        """The parameter as plain data, in the spec's format."""
        if self.type == "choice":
            return {"type": self.type, "values": list(self.values)}
        if self.type == "int":
            return {"type": self.type, "low": self.low, "high": self.high, "step": self.step, "log": self.log}
        return {"type": self.type, "low": float(cast(float, self.low)), "high": float(cast(float, self.high))}


@dataclass(frozen=True)
class Condition:
    """Search parameter ``param`` applies only in cells whose grid axis ``axis`` is one of ``values``."""

    param: str
    axis: str
    values: tuple[Scalar, ...]

    def __post_init__(self) -> None:
        _check_values(f"search.conditions.{self.param}.{self.axis}", self.values)


@dataclass(frozen=True)
class SearchSpec:
    """The search space sampled by Optuna, separately inside each cell."""

    params: tuple[SearchParam, ...]
    samples: int
    sampler: str = "tpe"
    seed: int = 0
    conditions: tuple[Condition, ...] = ()

    def __post_init__(self) -> None:
        if not self.params:
            raise SpecError("search.params", "is empty; give at least one parameter or leave out `search`")
        keys = [p.key for p in self.params]
        for i, key in enumerate(keys):
            if key in keys[:i]:
                raise SpecError(f"search.params.{key}", "is given twice")
        _check_int("search.samples", self.samples, 1)
        _check_choice("search.sampler", self.sampler, SAMPLERS)
        _check_int("search.seed", self.seed, 0, MAX_SEED)
        pairs = [(c.param, c.axis) for c in self.conditions]
        for i, (param, axis) in enumerate(pairs):
            if (param, axis) in pairs[:i]:
                raise SpecError(f"search.conditions.{param}.{axis}", "is given twice")

    def param(self, key: str) -> SearchParam | None:
        """The parameter for trial key ``key``, if it is searched."""
        return next((p for p in self.params if p.key == key), None)

    def to_dict(self) -> dict[str, Any]:
        """The search space as plain data, in the spec's format."""
        conditions: dict[str, dict[str, list[Scalar]]] = {}
        for c in self.conditions:
            conditions.setdefault(c.param, {})[c.axis] = list(c.values)
        return {"samples": self.samples, "sampler": self.sampler, "seed": self.seed,
                "params": {p.key: p.to_dict() for p in self.params}, "conditions": conditions}


@dataclass(frozen=True)
class SchedulerSpec:
    """Early stopping. ``type="none"`` runs every trial for ``max_epochs`` (= the trial's ``seg.epochs``)."""

    type: str = "none"
    max_epochs: int = 1
    metric: str = "val_miou"
    mode: str = "max"
    grace_period: int = 1
    reduction_factor: int = 2

    def __post_init__(self) -> None:
        _check_choice("scheduler.type", self.type, SCHEDULERS)
        _check_int("scheduler.max_epochs", self.max_epochs, 1)
        _check_int("scheduler.grace_period", self.grace_period, 1, self.max_epochs)
        _check_int("scheduler.reduction_factor", self.reduction_factor, 2)
        _check_text("scheduler.metric", self.metric, METRIC_PATTERN, "a metric name such as 'val_miou'")
        _check_choice("scheduler.mode", self.mode, MODES)

    def to_dict(self) -> dict[str, Any]:
        """The scheduler as plain data, in the spec's format (without ``max_epochs`` for ``none``)."""
        if self.type == "none":
            return {"type": self.type, "metric": self.metric, "mode": self.mode}
        return {"type": self.type, "grace_period": self.grace_period,
                "reduction_factor": self.reduction_factor, "max_epochs": self.max_epochs,
                "metric": self.metric, "mode": self.mode}


@dataclass(frozen=True)
class ConfirmSpec:
    """The confirm phase: each cell's ``top_k`` best search settings, run on every seed of ``seeds`` for
    ``epochs`` epochs without early stopping, ranked by ``metric`` (``mode``); the ablation table uses it.

    ``epochs``, ``metric`` and ``mode`` are filled from the trial's ``seg.epochs`` and the scheduler's
    metric and mode when the spec leaves them out.
    """

    seeds: tuple[int, ...]
    top_k: int = 1
    epochs: int = 1
    metric: str = "val_miou"
    mode: str = "max"
    rule: SeedRule | None = None  # seeds added until the answer is clear; ``seeds`` then lists all it may run

    def __post_init__(self) -> None:
        if self.rule is not None and tuple(self.seeds) != self.rule.seeds:
            raise SpecError("confirm.seeds", f"a seed rule runs seeds {list(self.rule.seeds)}, not {_show(self.seeds)}")
        if not isinstance(self.seeds, tuple) or not self.seeds:
            raise SpecError("confirm.seeds", f"must be a non-empty list of seeds, got {_show(self.seeds)}")
        for i, seed in enumerate(self.seeds):
            _check_int(f"confirm.seeds[{i}]", seed, 0, MAX_SEED)
            if seed in self.seeds[:i]:
                raise SpecError(f"confirm.seeds[{i}]", f"seed {seed} is given twice")
        _check_int("confirm.top_k", self.top_k, 1)
        _check_int("confirm.epochs", self.epochs, 1)
        _check_text("confirm.metric", self.metric, METRIC_PATTERN, "a metric name such as 'val_miou'")
        _check_choice("confirm.mode", self.mode, MODES)

    @property
    def sequential(self) -> bool:
        """Whether seeds are added until the answer is clear (``confirm.seeds`` is a rule, not a list)."""
        return self.rule is not None

    def to_dict(self) -> dict[str, Any]:
        """The confirm phase as plain data, in the spec's format."""
        seeds: Any = self.rule.to_json() if self.rule is not None else list(self.seeds)
        return {"seeds": seeds, "top_k": self.top_k, "epochs": self.epochs, "metric": self.metric,
                "mode": self.mode}


@dataclass(frozen=True)
class ResourcesSpec:
    """What one trial asks of the cluster. Fractions are allowed (``gpus=0.5`` shares a GPU by two)."""

    cpus: float = 1.0
    gpus: float = 0.0

    def __post_init__(self) -> None:
        _check_number("resources.cpus", self.cpus, above=0)
        _check_number("resources.gpus", self.gpus, low=0)
        if self.gpus > 1 and not float(self.gpus).is_integer():
            raise SpecError("resources.gpus", f"must be below 1 or a whole number, got {self.gpus}")

    def to_dict(self) -> dict[str, Any]:
        """The resources as plain data."""
        return {"cpus": float(self.cpus), "gpus": float(self.gpus)}


@dataclass(frozen=True)
class TrackingSpec:
    """MLflow: ``uri=None`` means a SQLite file in the study folder."""

    uri: str | None
    experiment: str

    def __post_init__(self) -> None:
        _check_optional_text("tracking.uri", self.uri)
        _check_text("tracking.experiment", self.experiment)

    def to_dict(self) -> dict[str, Any]:
        """The tracking settings as plain data."""
        return {"uri": self.uri, "experiment": self.experiment}


@dataclass(frozen=True)
class BudgetSpec:
    """Caps on the whole study: a number of trials and wall-clock seconds (``None``: no cap)."""

    max_trials: int | None = None
    time_s: float | None = None

    def __post_init__(self) -> None:
        if self.max_trials is not None:
            _check_int("budget.max_trials", self.max_trials, 1)
        if self.time_s is not None:
            _check_number("budget.time_s", self.time_s, above=0)

    def to_dict(self) -> dict[str, Any]:
        """The budget as plain data."""
        return {"max_trials": self.max_trials,
                "time_s": None if self.time_s is None else float(self.time_s)}


@dataclass(frozen=True)
class StudySpec:
    """A whole study, validated: every cell builds a valid trial config and every bound is in range."""

    name: str
    trial: TrialConfig
    grid: tuple[GridAxis, ...]
    search: SearchSpec | None
    seeds: tuple[int, ...]
    scheduler: SchedulerSpec
    max_concurrent: int
    resources: ResourcesSpec
    tracking: TrackingSpec
    storage: str
    budget: BudgetSpec
    confirm: ConfirmSpec | None = None

    def __post_init__(self) -> None:
        _check_name(self.name)
        if not isinstance(self.trial, TrialConfig):
            raise SpecError("trial", f"must be a TrialConfig, got {_show(self.trial)}")
        _check_seeds(self.seeds)
        _check_int("max_concurrent", self.max_concurrent, 1)
        _check_text("storage", self.storage)
        if self.tracking.uri is None and is_remote(self.storage):
            raise SpecError("tracking.uri", "is required when storage is a URI "
                                            "(the default SQLite file needs a local folder)")
        self._check_scheduler()
        self._check_grid()
        self._check_search()

    # -- derived ------------------------------------------------------------------------------------

    @property
    def study_dir(self) -> str:
        """The study folder, ``<storage>/<name>`` (a local path, or a URI when ``storage`` is one)."""
        if is_remote(self.storage):
            return join_uri(self.storage, self.name)
        return str(local_path(self.storage) / self.name)

    @property
    def tracking_uri(self) -> str:
        """The MLflow tracking URI: ``tracking.uri``, or a SQLite file in the study folder."""
        if self.tracking.uri is not None:
            return self.tracking.uri
        return f"sqlite:///{(Path(self.study_dir) / MLFLOW_DB).absolute()}"

    @property
    def cells(self) -> tuple[dict[str, Scalar], ...]:
        """Every cell as ``{grid key: value}``, in grid order.

        Grid axes that have no effect in a cell (see :meth:`applies`) are left out of it, and the cells they
        would have split are one. Without a grid there is one cell, ``{}``.
        """
        return tuple(dict(items) for items in self._cell_items)

    @functools.cached_property
    def _cell_items(self) -> tuple[tuple[tuple[str, Scalar], ...], ...]:
        keys = [axis.key for axis in self.grid]
        cells: dict[tuple[tuple[str, Scalar], ...], None] = {}
        for combo in itertools.product(*(axis.values for axis in self.grid)):
            full = dict(zip(keys, combo, strict=True))
            cells[tuple((key, value) for key, value in full.items() if self.applies(key, full))] = None
        return tuple(cells)

    def _selection(self, cell: Mapping[str, Any]) -> Any:
        """A cell's ``ocr.selection``: its grid value, else the trial's; ``None`` when it is searched."""
        if "ocr.selection" in cell:
            return cell["ocr.selection"]
        if self.search is not None and self.search.param("ocr.selection") is not None:
            return None  # sampled per trial: unknown at the cell level
        return self.trial.ocr.selection

    def applies(self, key: str, cell: Mapping[str, Any]) -> bool:
        """Whether grid axis or search parameter ``key`` has an effect in ``cell`` ({grid key: value}).

        False where the cell's ``ocr.selection`` is ``none`` for every other ``ocr.*`` key (the built-in rule,
        :func:`record.ocr_applies`), and where an explicit condition of ``search.conditions`` is not met.
        """
        if not ocr_applies(key, self._selection(cell)):
            return False
        conditions = self.search.conditions if self.search is not None else ()
        return all(cell.get(c.axis) in c.values for c in conditions if c.param == key)

    def cell_params(self, cell: Mapping[str, Any]) -> tuple[SearchParam, ...]:
        """The search parameters sampled in ``cell``."""
        params = self.search.params if self.search is not None else ()
        return tuple(p for p in params if self.applies(p.key, cell))

    # -- validation ---------------------------------------------------------------------------------

    def _check_scheduler(self) -> None:
        epochs, unit = self.trial.seg.reports, _budget_unit(self.trial.seg)
        if self.scheduler.type == "none" and self.scheduler.max_epochs != epochs:
            raise SpecError("scheduler.max_epochs", f"without a scheduler trials run {unit} = "
                                                    f"{epochs} epochs, got {self.scheduler.max_epochs}")
        if self.scheduler.max_epochs > epochs:
            raise SpecError("scheduler.max_epochs", f"must be at most {unit} = {epochs}, "
                                                    f"got {self.scheduler.max_epochs}")

    def _check_grid(self) -> None:
        keys = [axis.key for axis in self.grid]
        for i, key in enumerate(keys):
            _trial_key(key, f"grid.{key}", reserved=True)
            if key in keys[:i]:
                raise SpecError(f"grid.{key}", "is given twice")
        count = math.prod(len(axis.values) for axis in self.grid)
        if count > MAX_CELLS:
            raise SpecError("grid", f"has {count} combinations; at most {MAX_CELLS} are allowed")
        for key in keys:
            if not any(key in cell for cell in self.cells):
                raise SpecError(f"grid.{key}", "has no effect in any cell (ocr.* keys have none where "
                                               "ocr.selection is none)")
        for cell in self.cells:
            path_of = functools.partial(self._grid_path, cell)
            _build_trial(cell, self.trial, path_of, f"cell {cell_id(cell)}: ")

    def _grid_path(self, cell: Mapping[str, Any], key: str | None) -> str:
        axis = next((a for a in self.grid if a.key == key), None)
        if axis is None:
            return "grid"
        return f"grid.{axis.key}[{axis.values.index(cell[axis.key])}]" if key in cell else f"grid.{axis.key}"

    def _check_search(self) -> None:
        if self.search is None:
            return
        grid_keys = [axis.key for axis in self.grid]
        for param in self.search.params:
            field_type = _trial_key(param.key, param.path, reserved=True)
            if param.key in grid_keys:
                raise SpecError(param.path, f"{param.key} is also a grid axis; vary it in one place")
            _check_type_fits(param.path, param.key, param.type, field_type)
        for condition in self.search.conditions:
            self._check_condition(condition, [p.key for p in self.search.params], grid_keys)
        for param in self.search.params:
            where = [cell for cell in self.cells if self.applies(param.key, cell)]
            if not where:
                raise SpecError(param.path, "applies in no cell (see search.conditions; ocr.* parameters "
                                            "do not apply where ocr.selection is none)")
            for cell in where:
                self._check_bounds(param, cell)

    def _check_condition(self, condition: Condition, params: list[str], grid_keys: list[str]) -> None:
        path = f"search.conditions.{condition.param}"
        if condition.param not in params:
            raise SpecError(path, f"{_unknown(condition.param, params)}; conditions apply to "
                                  f"search parameters: {params}")
        path = f"{path}.{condition.axis}"
        if condition.axis not in grid_keys:
            hint = _unknown(condition.axis, grid_keys)
            raise SpecError(path, f"{hint}; a condition refers to a grid axis: {grid_keys}")
        axis = next(a for a in self.grid if a.key == condition.axis)
        for i, value in enumerate(condition.values):
            if value not in axis.values:
                raise SpecError(f"{path}[{i}]", f"{_show(value)} is not a value of grid.{axis.key}: "
                                                f"{list(axis.values)}")

    def _check_bounds(self, param: SearchParam, cell: Mapping[str, Any]) -> None:
        where = f" in cell {cell_id(cell)}" if cell else ""
        points: list[tuple[str, Any]] = [("low", param.low), ("high", param.high)]
        if param.type == "choice":
            points = [(f"values[{i}]", value) for i, value in enumerate(param.values)]
        for suffix, value in points:
            path = f"{param.path}.{suffix}"
            _build_trial({**cell, param.key: value}, self.trial, functools.partial(_constant, path),
                         f"{_show(value)} is not a valid {param.key}{where}: ")

    # -- output ---------------------------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        """The normalised spec as plain data (every default filled in); :func:`load_spec` reads it back."""
        out: dict[str, Any] = {"name": self.name, "trial": to_flat(self.trial)}
        if self.grid:
            out["grid"] = {axis.key: list(axis.values) for axis in self.grid}
        out.update({
            "search": self.search.to_dict() if self.search is not None else None,
            "seeds": list(self.seeds),
            "scheduler": self.scheduler.to_dict(),
            "confirm": self.confirm.to_dict() if self.confirm is not None else None,
            "max_concurrent": self.max_concurrent,
            "resources": self.resources.to_dict(),
            "tracking": self.tracking.to_dict(),
            "storage": self.storage,
            "budget": self.budget.to_dict(),
        })
        return out




def _budget_unit(seg: SegConfig) -> str:
    """How a trial's epochs (reports) are counted, for error messages."""
    if seg.iterations:
        return f"the reports of trial.seg.iterations = {seg.iterations} every seg.report_every"
    return "trial.seg.epochs"
