"""The spec's value checks and its error type: each raises :class:`SpecError` naming the key path."""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from pipelines.config import (
    ConfigError,
    TrialConfig,
    flat_keys,
    from_flat,
    unknown_key_message,
)

SPECS_DIR = Path(__file__).parents[1] / "specs"
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

TOP_KEYS = ("name", "trial", "grid", "search", "seeds", "scheduler", "confirm", "max_concurrent", "resources",
            "tracking", "storage", "budget")
CONFIRM_KEYS = ("seeds", "top_k", "epochs", "metric", "mode")
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
    "seg.iterations": "it is the iteration budget of every trial: set it in `trial` and stop trials early "
                      "with `scheduler`",
    "seg.report_every": "it sets how many epochs (reports) every trial makes: set it in `trial`",
    "preset": "a recipe sets many keys at once, under the spec's own: set it in `trial`",
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



def _constant(path: str, _key: str | None) -> str:
    return path


def _check_type_fits(path: str, key: str, kind: str, field_type: Any) -> None:
    """Numbers may be sampled from ranges (an int field only with ``int``); anything else by ``choice``."""
    allowed = {float: SEARCH_TYPES, int: ("int", "choice")}.get(field_type, ("choice",))
    if kind not in allowed:
        name = getattr(field_type, "__name__", str(field_type))
        raise SpecError(f"{path}.type", f"{key} is a {name}: use type {' or '.join(allowed)}, got {kind!r}")


