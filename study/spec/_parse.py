"""Parsing: plain data (from YAML) into the spec's dataclasses."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, cast

from pipelines.config import (
    ConfigError,
    TrialConfig,
    coerce,
    nested_to_flat,
)
from record import RULE_KEYS, SeedRule
from study.spec._checks import (
    ASHA_KEYS,
    BUDGET_KEYS,
    CONFIRM_KEYS,
    DEFAULT_STORAGE,
    MAX_DEPTH,
    MAX_SEED,
    NO_SCHEDULER_KEYS,
    PARAM_KEYS,
    RESOURCE_KEYS,
    SCHEDULERS,
    SEARCH_KEYS,
    SEARCH_TYPES,
    TOP_KEYS,
    TRACKING_KEYS,
    TRIAL_KEYS,
    SpecError,
    _build_trial,
    _check_choice,
    _check_int,
    _check_name,
    _check_seeds,
    _check_type_fits,
    _show,
    _trial_key,
    _unknown,
)
from study.spec._model import (
    BudgetSpec,
    Condition,
    ConfirmSpec,
    GridAxis,
    ResourcesSpec,
    SchedulerSpec,
    SearchParam,
    SearchSpec,
    StudySpec,
    TrackingSpec,
)


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


def _parse_trial(raw: Any, seed: int | None) -> TrialConfig:
    tree = {} if raw is None else _as_mapping(raw, "trial")
    try:
        flat = nested_to_flat(tree, leaves=TRIAL_KEYS, max_depth=MAX_DEPTH)
    except ConfigError as err:
        raise SpecError(f"trial.{err.key}" if err.key else "trial", str(err)) from err
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
    options.setdefault("max_epochs", trial.seg.reports)
    return SchedulerSpec(type=kind, **options)


def _parse_confirm(raw: Any, trial: TrialConfig, scheduler: SchedulerSpec) -> ConfirmSpec | None:
    if raw is None:
        return None
    mapping = _given(_section(raw, "confirm", CONFIRM_KEYS))
    if "seeds" not in mapping:
        raise SpecError("confirm.seeds", "is required in `confirm`: the seeds every chosen setting runs on, "
                                         "e.g. [0, 1, 2, 3, 4]")
    raw_seeds, rule = mapping["seeds"], None
    if isinstance(raw_seeds, Mapping):
        rule = _seed_rule(raw_seeds)
        raw_seeds = list(rule.seeds)
    return ConfirmSpec(seeds=_as_tuple(raw_seeds, "confirm.seeds"), rule=rule, top_k=mapping.get("top_k", 1),
                       epochs=mapping.get("epochs", trial.seg.epochs),
                       metric=mapping.get("metric", scheduler.metric), mode=mapping.get("mode", scheduler.mode))


def _seed_rule(raw: Mapping[str, Any]) -> SeedRule:
    """``confirm.seeds`` as a rule: ``{min, max, step, first, alpha, spending, margin, detect, power}``."""
    unknown = sorted(str(k) for k in raw if k not in RULE_KEYS)
    if unknown:
        raise SpecError(f"confirm.seeds.{unknown[0]}", f"is not a key of a seed rule; allowed: {', '.join(RULE_KEYS)} "
                                                       "(or give confirm.seeds as a list of seeds)")
    try:
        return SeedRule(**_given(raw))
    except (TypeError, ValueError) as err:
        key, _, why = str(err).partition(": ")
        raise SpecError(f"confirm.seeds.{key}", why or str(err)) from err


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
    scheduler = _parse_scheduler(doc.get("scheduler"), trial)
    return StudySpec(
        name=doc["name"], trial=trial, grid=_parse_grid(doc), search=_parse_search(doc.get("search")),
        seeds=seeds, scheduler=scheduler, confirm=_parse_confirm(doc.get("confirm"), trial, scheduler),
        max_concurrent=_default(doc, "max_concurrent", 1),
        resources=ResourcesSpec(**_given(_section(doc.get("resources"), "resources", RESOURCE_KEYS))),
        tracking=TrackingSpec(tracking.get("uri"), _default(tracking, "experiment", doc["name"])),
        storage=_default(doc, "storage", DEFAULT_STORAGE),
        budget=BudgetSpec(**_section(doc.get("budget"), "budget", BUDGET_KEYS)),
    )


