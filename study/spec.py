"""The study spec: a YAML file turned into frozen dataclasses, validated before anything starts.

A spec names a study and gives the base trial config, a grid of categorical axes (each combination is a
*cell*), an optional search space that Optuna samples inside each cell, the seeds, an early-stopping
scheduler, the resources of a trial and where results go. :func:`load_spec` reads one (with
``yaml.safe_load`` only) and raises :class:`SpecError` naming the key path of the first problem.
Nothing is written to disk.

Built-in rule: with ``ocr.selection = none`` the OCR loss is off, so no other ``ocr.*`` key has an effect.
In such a cell ``ocr.*`` search parameters are not sampled, and ``ocr.*`` grid axes are dropped: the
cells they would have split are one cell.
"""

from __future__ import annotations

import functools
import hashlib
import itertools
import json
import math
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import yaml

from pipelines.config import ConfigError, TrialConfig, coerce, flat_keys, from_flat, to_flat, unknown_key_message
from record import cell_id, ocr_applies

SPECS_DIR = Path(__file__).with_name("specs")
DEFAULT_STORAGE = ".ocr-study/studies"
SEARCH_TYPES = ("uniform", "loguniform", "int", "choice")
SAMPLERS = ("tpe", "random")
SCHEDULERS = ("asha", "none")
MODES = ("max", "min")
MAX_CELLS = 10_000
MAX_SEED = 2**32 - 1
MAX_DEPTH = 8
NAME_PATTERN = re.compile(r"[A-Za-z0-9_.-]{1,64}")
METRIC_PATTERN = re.compile(r"[A-Za-z0-9_./-]{1,128}")

TOP_KEYS = ("name", "trial", "grid", "search", "seeds", "scheduler", "max_concurrent", "resources",
            "tracking", "storage", "budget")
SEARCH_KEYS = ("samples", "sampler", "seed", "params", "conditions")
PARAM_KEYS = {
    "uniform": ("type", "low", "high"),
    "loguniform": ("type", "low", "high"),
    "int": ("type", "low", "high", "step", "log"),
    "choice": ("type", "values"),
}
ASHA_KEYS = ("type", "grace_period", "reduction_factor", "max_epochs", "metric", "mode")
NO_SCHEDULER_KEYS = ("type", "metric", "mode")
RESOURCE_KEYS = ("cpus", "gpus")
TRACKING_KEYS = ("uri", "experiment")
BUDGET_KEYS = ("max_trials", "time_s")
# Trial keys a study may not vary in its grid or search space, and why.
RESERVED_KEYS = {
    "seed": "the study's `seeds` list sets it",
    "seg.epochs": "it is the epoch budget of every trial: set it in `trial` and stop trials early "
                  "with `scheduler`",
}

TRIAL_KEYS: dict[str, Any] = flat_keys()
_SECTIONS = {key.rsplit(".", n)[0] for key in TRIAL_KEYS for n in range(1, key.count(".") + 1)}
Scalar = str | int | float | bool


class SpecError(ValueError):
    """A study spec is invalid. ``path`` is the key path of the problem (``""`` for the whole spec)."""

    def __init__(self, path: str, message: str) -> None:
        self.path = path
        self.message = message
        super().__init__(f"{path or 'spec'}: {message}")

    def __reduce__(self) -> tuple[type[SpecError], tuple[str, str]]:
        return (SpecError, (self.path, self.message))


# ---------------------------------------------------------------------------------------------------
# Value checks shared by the dataclasses (they raise SpecError with the key path)
# ---------------------------------------------------------------------------------------------------

def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    if _is_int(value):
        return True
    return isinstance(value, float) and math.isfinite(value)


def _is_scalar(value: Any) -> bool:
    return isinstance(value, str) or _is_number(value) or isinstance(value, bool)


def _range_text(low: float | None, high: float | None, above: float | None = None) -> str:
    if above is not None:
        return f" > {above}"
    if low is not None and high is not None:
        return f" in [{low}, {high}]"
    if low is not None:
        return f" >= {low}"
    return f" <= {high}" if high is not None else ""


def _check_int(path: str, value: Any, low: int | None = None, high: int | None = None) -> None:
    if not _is_int(value) or (low is not None and value < low) or (high is not None and value > high):
        raise SpecError(path, f"must be an integer{_range_text(low, high)}, got {_show(value)}")


def _check_number(path: str, value: Any, low: float | None = None, above: float | None = None) -> None:
    bad = not _is_number(value) or (low is not None and value < low) or (above is not None and value <= above)
    if bad:
        raise SpecError(path, f"must be a number{_range_text(low, None, above)}, got {_show(value)}")


def _check_choice(path: str, value: Any, allowed: Sequence[str]) -> None:
    if not isinstance(value, str) or value not in allowed:
        raise SpecError(path, f"must be one of {list(allowed)}, got {_show(value)}")


def _check_text(path: str, value: Any, pattern: re.Pattern[str] | None = None, what: str = "") -> None:
    if not isinstance(value, str) or not value or (pattern is not None and not pattern.fullmatch(value)):
        raise SpecError(path, f"must be {what or 'a non-empty string'}, got {_show(value)}")


def _check_optional_text(path: str, value: Any) -> None:
    if value is not None:
        _check_text(path, value, what="a non-empty string or null")


def _check_values(path: str, values: Any) -> None:
    """A non-empty tuple of distinct scalars (grid axis, choice, condition)."""
    if not isinstance(values, tuple) or not values:
        raise SpecError(path, f"must be a non-empty list of values, got {_show(values)}")
    for i, value in enumerate(values):
        if not _is_scalar(value):
            raise SpecError(f"{path}[{i}]", f"must be a string, finite number or boolean, got {_show(value)}")
        if any(value == seen and type(value) is type(seen) for seen in values[:i]):
            raise SpecError(f"{path}[{i}]", f"{_show(value)} is listed twice")


def _check_seeds(seeds: Any) -> None:
    if not isinstance(seeds, tuple) or not seeds:
        raise SpecError("seeds", f"must be a non-empty list of distinct integers, got {_show(seeds)}")
    for i, seed in enumerate(seeds):
        _check_int(f"seeds[{i}]", seed, 0, MAX_SEED)
        if seed in seeds[:i]:
            raise SpecError(f"seeds[{i}]", f"seed {seed} is listed twice")


def _trial_key(key: str, path: str, *, reserved: bool) -> Any:
    """The type of trial key ``key``, or a SpecError (did-you-mean, section, reserved)."""
    if key in TRIAL_KEYS:
        if reserved and key in RESERVED_KEYS:
            raise SpecError(path, f"{key} cannot be varied by a study: {RESERVED_KEYS[key]}")
        return TRIAL_KEYS[key]
    if key in _SECTIONS:
        example = next(k for k in TRIAL_KEYS if k.startswith(f"{key}."))
        raise SpecError(path, f"{key!r} is a section of the trial config, not a key; "
                              f"use dotted keys such as {example!r}")
    raise SpecError(path, _unknown(key, TRIAL_KEYS))


def _unknown(key: str, known: Sequence[str] | Mapping[str, Any]) -> str:
    """:func:`unknown_key_message`, with keys that contain ``key`` as the hint when none is close."""
    message = unknown_key_message(key, known)
    if "did you mean" not in message and key:
        close = [k for k in known if key in k][:3]
        if close:
            message += f"; did you mean {' or '.join(repr(k) for k in close)}?"
    return message


def check_study_name(name: Any) -> None:
    """A study name is one folder name (it is joined to the storage folder): :class:`SpecError` if not."""
    _check_name(name)


def _check_name(name: Any) -> None:
    _check_text("name", name, NAME_PATTERN, "1 to 64 of A-Z a-z 0-9 _ . - (it becomes a folder name)")
    if name in (".", ".."):
        raise SpecError("name", f"must be a folder name, got {name!r}")


def _config_error(err: Exception, path_of: Callable[[str | None], str], prefix: str = "") -> SpecError:
    """A SpecError for an error of :func:`from_flat`, blamed on the key it carries (:class:`ConfigError`)."""
    key = getattr(err, "key", None) if isinstance(err, ConfigError) else None
    return SpecError(path_of(key if key in TRIAL_KEYS else None), prefix + str(err))


def _build_trial(values: Mapping[str, Any], base: TrialConfig | None,
                 path_of: Callable[[str | None], str], prefix: str = "") -> TrialConfig:
    try:
        return from_flat(values, base)
    except (ValueError, TypeError, OverflowError) as err:
        raise _config_error(err, path_of, prefix) from err


# ---------------------------------------------------------------------------------------------------
# The spec's dataclasses
# ---------------------------------------------------------------------------------------------------

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

    def __post_init__(self) -> None:
        _check_name(self.name)
        if not isinstance(self.trial, TrialConfig):
            raise SpecError("trial", f"must be a TrialConfig, got {_show(self.trial)}")
        _check_seeds(self.seeds)
        _check_int("max_concurrent", self.max_concurrent, 1)
        _check_text("storage", self.storage)
        if self.tracking.uri is None and "://" in self.storage:
            raise SpecError("tracking.uri", "is required when storage is a URI "
                                            "(the default SQLite file needs a local folder)")
        self._check_scheduler()
        self._check_grid()
        self._check_search()

    # -- derived ------------------------------------------------------------------------------------

    @property
    def study_dir(self) -> str:
        """The study folder, ``<storage>/<name>`` (a local path, or a URI when ``storage`` is one)."""
        if "://" in self.storage:
            return f"{self.storage.rstrip('/')}/{self.name}"
        return str(Path(self.storage).expanduser() / self.name)

    @property
    def tracking_uri(self) -> str:
        """The MLflow tracking URI: ``tracking.uri``, or a SQLite file in the study folder."""
        if self.tracking.uri is not None:
            return self.tracking.uri
        return f"sqlite:///{(Path(self.study_dir) / 'mlflow.db').absolute()}"

    @property
    def cells(self) -> tuple[dict[str, Scalar], ...]:
        """Every cell as ``{grid key: value}``, in grid order.

        Grid axes that have no effect in a cell (the built-in ``ocr.selection = none`` rule) are left out
        of it, and the cells they would have split are one. Without a grid there is one cell, ``{}``.
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

    def applies(self, key: str, cell: Mapping[str, Any]) -> bool:
        """Whether grid axis or search parameter ``key`` has an effect in ``cell`` ({grid key: value}).

        False where the cell's ``ocr.selection`` is ``none`` for every other ``ocr.*`` key, and where an
        explicit condition of ``search.conditions`` is not met.
        """
        if not ocr_applies(key, self._selection(cell)):
            return False
        conditions = self.search.conditions if self.search is not None else ()
        return all(cell.get(c.axis) in c.values for c in conditions if c.param == key)

    def cell_params(self, cell: Mapping[str, Any]) -> tuple[SearchParam, ...]:
        """The search parameters sampled in ``cell``."""
        params = self.search.params if self.search is not None else ()
        return tuple(p for p in params if self.applies(p.key, cell))

    def _selection(self, cell: Mapping[str, Any]) -> Any:
        if "ocr.selection" in cell:
            return cell["ocr.selection"]
        if self.search is not None and self.search.param("ocr.selection") is not None:
            return None  # sampled per trial: unknown at the cell level
        return self.trial.ocr.selection

    # -- validation ---------------------------------------------------------------------------------

    def _check_scheduler(self) -> None:
        epochs = self.trial.seg.epochs
        if self.scheduler.type == "none" and self.scheduler.max_epochs != epochs:
            raise SpecError("scheduler.max_epochs", f"without a scheduler trials run trial.seg.epochs = "
                                                    f"{epochs} epochs, got {self.scheduler.max_epochs}")
        if self.scheduler.max_epochs > epochs:
            raise SpecError("scheduler.max_epochs", f"must be at most trial.seg.epochs = {epochs}, "
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
            "max_concurrent": self.max_concurrent,
            "resources": self.resources.to_dict(),
            "tracking": self.tracking.to_dict(),
            "storage": self.storage,
            "budget": self.budget.to_dict(),
        })
        return out


def _constant(path: str, _key: str | None) -> str:
    return path


def _check_type_fits(path: str, key: str, kind: str, field_type: Any) -> None:
    """Numbers may be sampled from ranges (an int field only with ``int``); anything else by ``choice``."""
    allowed = {float: SEARCH_TYPES, int: ("int", "choice")}.get(field_type, ("choice",))
    if kind not in allowed:
        name = getattr(field_type, "__name__", str(field_type))
        raise SpecError(f"{path}.type", f"{key} is a {name}: use type {' or '.join(allowed)}, got {kind!r}")


# ---------------------------------------------------------------------------------------------------
# Parsing: plain data (from YAML) → the dataclasses
# ---------------------------------------------------------------------------------------------------

def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _as_mapping(raw: Any, path: str, example: str = "") -> Mapping[str, Any]:
    if not isinstance(raw, Mapping):
        hint = f" such as {example}" if example else ""
        raise SpecError(path, f"must be a mapping{hint}, got {_show(raw)}")
    for key in raw:
        if not isinstance(key, str):
            raise SpecError(path, f"keys must be strings; {_show(key)} is a {type(key).__name__}")
    return raw


def _as_tuple(raw: Any, path: str) -> tuple[Any, ...]:
    if not isinstance(raw, (list, tuple)):
        raise SpecError(path, f"must be a list, got {_show(raw)}")
    return tuple(raw)


def _reject_unknown(mapping: Mapping[str, Any], path: str, allowed: Sequence[str]) -> None:
    for key in mapping:
        if key not in allowed:
            raise SpecError(_join(path, key), f"{_unknown(key, allowed)} "
                                              f"(allowed: {', '.join(allowed)})")


def _section(raw: Any, path: str, allowed: Sequence[str]) -> Mapping[str, Any]:
    """A mapping with only ``allowed`` keys; ``None`` (left empty in YAML) reads as ``{}``."""
    mapping = {} if raw is None else _as_mapping(raw, path)
    _reject_unknown(mapping, path, allowed)
    return mapping


def _coerce(path: str, key: str, value: Any) -> Any:
    try:
        return coerce(key, value, TRIAL_KEYS[key])
    except (ValueError, TypeError, OverflowError) as err:
        raise SpecError(path, str(err)) from err


def _flatten_into(flat: dict[str, Any], tree: Mapping[str, Any], prefix: str, depth: int) -> None:
    if depth > MAX_DEPTH:
        raise SpecError(f"trial.{prefix[:-1]}", "is nested too deeply")
    for key, value in tree.items():
        dotted = prefix + key
        if isinstance(value, Mapping) and dotted not in TRIAL_KEYS:
            _flatten_into(flat, _as_mapping(value, f"trial.{dotted}"), f"{dotted}.", depth + 1)
        elif dotted in flat:
            raise SpecError(f"trial.{dotted}", "is given twice (nested and dotted)")
        else:
            flat[dotted] = value


def _parse_trial(raw: Any, seed: int | None) -> TrialConfig:
    flat: dict[str, Any] = {}
    _flatten_into(flat, {} if raw is None else _as_mapping(raw, "trial"), "", 0)
    for key in flat:
        _trial_key(key, f"trial.{key}", reserved=False)
    if seed is not None:
        flat["seed"] = seed  # the study's seeds override the trial's
    return _build_trial(flat, None, lambda key: f"trial.{key}" if key else "trial")


def _parse_seeds(raw: Any) -> tuple[int, ...] | None:
    if raw is None:
        return None
    seeds = _as_tuple(raw, "seeds")
    _check_seeds(seeds)
    return seeds


def _parse_grid(doc: Mapping[str, Any]) -> tuple[GridAxis, ...]:
    if "grid" not in doc:
        return ()
    grid = doc["grid"]
    if grid is None or (isinstance(grid, Mapping) and not grid):
        raise SpecError("grid", "is empty; give values per trial key (e.g. ocr.selection: [none, oc]) "
                                "or leave out `grid` for a single cell")
    axes = []
    for key, raw in _as_mapping(grid, "grid", "{ocr.selection: [none, oc]}").items():
        path = f"grid.{key}"
        _trial_key(key, path, reserved=True)
        values = _as_tuple(raw, path)
        axes.append(GridAxis(key, tuple(_coerce(f"{path}[{i}]", key, v) for i, v in enumerate(values))))
    return tuple(axes)


def _parse_param(key: str, raw: Any) -> SearchParam:
    path = f"search.params.{key}"
    field_type = _trial_key(key, path, reserved=True)
    spec = _as_mapping(raw, path, "{type: uniform, low: 0.0, high: 1.0} or {type: choice, values: [a, b]}")
    kind = spec.get("type")
    _check_choice(f"{path}.type", kind, SEARCH_TYPES)
    kind = cast(str, kind)
    _check_type_fits(path, key, kind, field_type)
    _reject_unknown(spec, path, PARAM_KEYS[kind])
    for name in PARAM_KEYS[kind][1:3]:
        if name not in spec:
            raise SpecError(f"{path}.{name}", f"is required for type {kind}")
    if kind == "choice":
        values = _as_tuple(spec["values"], f"{path}.values")
        coerced = tuple(_coerce(f"{path}.values[{i}]", key, v) for i, v in enumerate(values))
        return SearchParam(key, kind, values=coerced)
    if kind == "int":
        return SearchParam(key, kind, spec["low"], spec["high"], spec.get("step", 1), spec.get("log", False))
    return SearchParam(key, kind, spec["low"], spec["high"])


def _parse_conditions(raw: Any) -> tuple[Condition, ...]:
    conditions = []
    example = "{ocr.delta: {ocr.selection: [oc]}}"
    mapping = {} if raw is None else _as_mapping(raw, "search.conditions", example)
    for param, axes in mapping.items():
        path = f"search.conditions.{param}"
        mapping = _as_mapping(axes, path, "{ocr.selection: [all, oc]}")
        if not mapping:
            raise SpecError(path, "is empty; give {grid axis: [values where the parameter applies]}")
        for axis, values in mapping.items():
            apath = f"{path}.{axis}"
            items = _as_tuple(values, apath)
            if axis in TRIAL_KEYS:
                items = tuple(_coerce(f"{apath}[{i}]", axis, v) for i, v in enumerate(items))
            conditions.append(Condition(param, axis, items))
    return tuple(conditions)


def _parse_search(raw: Any) -> SearchSpec | None:
    if raw is None:
        return None
    mapping = _section(raw, "search", SEARCH_KEYS)
    for name in ("samples", "params"):
        if name not in mapping:
            raise SpecError(f"search.{name}", "is required in `search`")
    params = _as_mapping(mapping["params"], "search.params", "{ocr.delta: {type: uniform, low: 0, high: 8}}")
    return SearchSpec(params=tuple(_parse_param(key, spec) for key, spec in params.items()),
                      samples=mapping["samples"], sampler=_default(mapping, "sampler", "tpe"),
                      seed=_default(mapping, "seed", 0),
                      conditions=_parse_conditions(mapping.get("conditions")))


def _parse_scheduler(raw: Any, trial: TrialConfig) -> SchedulerSpec:
    mapping = {} if raw is None else _as_mapping(raw, "scheduler")
    kind = _default(mapping, "type", "none")
    _check_choice("scheduler.type", kind, SCHEDULERS)
    allowed = ASHA_KEYS if kind == "asha" else NO_SCHEDULER_KEYS
    for key in mapping:
        if key not in allowed and key in ASHA_KEYS:
            raise SpecError(f"scheduler.{key}", "only applies to type asha (without a scheduler every "
                                                "trial runs trial.seg.epochs epochs)")
    _reject_unknown(mapping, "scheduler", allowed)
    options = _given({key: value for key, value in mapping.items() if key != "type"})
    options.setdefault("max_epochs", trial.seg.epochs)
    return SchedulerSpec(type=kind, **options)


def _given(mapping: Mapping[str, Any]) -> dict[str, Any]:
    """The entries of ``mapping`` that are not null (null reads as "the default")."""
    return {key: value for key, value in mapping.items() if value is not None}


def _default(mapping: Mapping[str, Any], key: str, default: Any) -> Any:
    """``mapping[key]``, or ``default`` where it is missing or null."""
    value = mapping.get(key)
    return default if value is None else value


def _parse(raw: Any) -> StudySpec:
    doc = _as_mapping(raw, "", "{name: ..., trial: {...}, grid: {...}}")
    _reject_unknown(doc, "", TOP_KEYS)
    if "name" not in doc:
        raise SpecError("name", "is required: the study's name (it becomes its folder name)")
    _check_name(doc["name"])
    seeds = _parse_seeds(doc.get("seeds"))
    trial = _parse_trial(doc.get("trial"), seeds[0] if seeds else None)
    if seeds is None:
        _check_int("trial.seed", trial.seed, 0, MAX_SEED)
        seeds = (trial.seed,)
    tracking = _section(doc.get("tracking"), "tracking", TRACKING_KEYS)
    return StudySpec(
        name=doc["name"], trial=trial, grid=_parse_grid(doc), search=_parse_search(doc.get("search")),
        seeds=seeds, scheduler=_parse_scheduler(doc.get("scheduler"), trial),
        max_concurrent=_default(doc, "max_concurrent", 1),
        resources=ResourcesSpec(**_given(_section(doc.get("resources"), "resources", RESOURCE_KEYS))),
        tracking=TrackingSpec(tracking.get("uri"), _default(tracking, "experiment", doc["name"])),
        storage=_default(doc, "storage", DEFAULT_STORAGE),
        budget=BudgetSpec(**_section(doc.get("budget"), "budget", BUDGET_KEYS)),
    )


# ---------------------------------------------------------------------------------------------------
# Reading
# ---------------------------------------------------------------------------------------------------

def shipped_specs() -> dict[str, Path]:
    """The specs that ship with the package, by name (``quick``, ``paper``, ``voc``)."""
    return {path.stem: path for path in sorted(SPECS_DIR.glob("*.yaml"))}


def _is_file(text: str) -> bool:
    try:
        return Path(text).is_file()
    except (OSError, ValueError):  # a name too long for the OS, a NUL byte
        return False


def _read_file(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError as err:
        raise SpecError("", f"spec file {path} not found") from err
    except (OSError, UnicodeDecodeError) as err:
        raise SpecError("", f"cannot read spec file {path}: {err}") from err


def _source_text(source: str | Path) -> tuple[str, str]:
    """(text, where it came from) for a path, a shipped spec's name, or YAML text."""
    if isinstance(source, Path):
        return _read_file(source), str(source)
    if "\n" not in source and (source.endswith((".yaml", ".yml")) or _is_file(source)):
        return _read_file(Path(source)), source
    if source in shipped_specs():
        return _read_file(shipped_specs()[source]), str(shipped_specs()[source])
    return source, "<text>"


def _parse_yaml(text: str, origin: str) -> Any:
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as err:
        raise SpecError("", f"{origin} is not valid YAML: {err}") from err
    except RecursionError as err:
        raise SpecError("", f"{origin} is nested too deeply") from err


def load_spec(source: str | Path | Mapping[str, Any]) -> StudySpec:
    """Read and validate a study spec; raises :class:`SpecError` naming the key path of the first problem.

    Args:
        source: a path to a YAML file (a ``Path``, or a string ending in ``.yaml``/``.yml`` or naming an
            existing file), the name of a shipped spec (``"quick"``), YAML text, or an already parsed mapping.
    """
    if isinstance(source, Mapping):
        return _parse(source)
    if not isinstance(source, (str, Path)):
        raise SpecError("", f"expected a path, YAML text or a mapping, got {type(source).__name__}")
    text, origin = _source_text(source)
    return _parse(_parse_yaml(text, origin))


def spec_hash(spec: StudySpec) -> str:
    """A stable 12-character hash of the normalised spec (:meth:`StudySpec.to_dict`), for tagging runs."""
    text = json.dumps(spec.to_dict(), sort_keys=True, separators=(",", ":"), allow_nan=False)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:12]

