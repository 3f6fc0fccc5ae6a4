"""``key=value`` overrides from the command line, applied to a spec document before it is validated.

Keys are dotted paths over the spec: ``seeds=[0,1,2]``, ``trial.seg.epochs=8``, ``confirm.seeds=[0,1,2,3,4]``,
``scheduler.type=none``, ``grid.ocr.selection=[none,oc]``, ``search.params.ocr.delta.high=4``. Values are
read as YAML (``8`` is an int, ``[0,1]`` a list, ``null`` the default). The result goes through the same
parser as a file, so a bad override fails exactly like the same mistake in the file.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import yaml

from pipelines.config import ConfigError, nested_to_flat
from study.spec._checks import ASHA_KEYS, MAX_DEPTH, NO_SCHEDULER_KEYS, TOP_KEYS, TRIAL_KEYS, SpecError, _unknown

SECTIONS = ("scheduler", "confirm", "resources", "tracking", "budget", "search")


def parse_override(text: str) -> tuple[str, Any]:
    """``"trial.seg.epochs=8"`` as ``("trial.seg.epochs", 8)``; the value is read as YAML."""
    key, sep, raw = text.partition("=")
    key = key.strip()
    if not sep or not key:
        raise SpecError("", f"override {text!r} is not key=value (e.g. trial.seg.epochs=8 or seeds=[0,1,2])")
    try:
        return key, yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError as err:
        raise SpecError(key, f"the value {raw!r} is not valid YAML: {err}") from err


def _mapping(value: Any) -> dict[str, Any]:
    return dict(value) if isinstance(value, Mapping) else {}


def _set_trial(doc: dict[str, Any], key: str, value: Any) -> None:
    try:
        flat = nested_to_flat(_mapping(doc.get("trial")), leaves=TRIAL_KEYS, max_depth=MAX_DEPTH)
    except ConfigError as err:
        raise SpecError(f"trial.{err.key}" if err.key else "trial", str(err)) from err
    doc["trial"] = {**flat, key: value}


def _set_param(doc: dict[str, Any], rest: str, value: Any) -> None:
    search = _mapping(doc.get("search"))
    params = _mapping(search.get("params"))
    if rest in TRIAL_KEYS:
        params[rest] = value
    else:
        key, _, field = rest.rpartition(".")
        params[key] = {**_mapping(params.get(key)), field: value}
    doc["search"] = {**search, "params": params}


def _apply(doc: dict[str, Any], key: str, value: Any) -> None:
    top, _, rest = key.partition(".")
    if top not in TOP_KEYS:
        raise SpecError(key, f"{_unknown(top, TOP_KEYS)} (allowed: {', '.join(TOP_KEYS)})")
    if not rest:
        doc[top] = value
    elif top == "trial":
        _set_trial(doc, rest, value)
    elif top == "grid":
        doc["grid"] = {**_mapping(doc.get("grid")), rest: value}
    elif top == "search" and rest.startswith("params."):
        _set_param(doc, rest.removeprefix("params."), value)
    elif top == "confirm" and rest.startswith("seeds.") and rest.count(".") == 1:  # one key of a seed rule
        confirm = _mapping(doc.get("confirm"))
        seeds = confirm.get("seeds")
        if not isinstance(seeds, Mapping):
            raise SpecError(key, "confirm.seeds is a list here, not a seed rule; give the whole rule "
                                 "(confirm.seeds={min: 3, max: 10})")
        doc["confirm"] = {**confirm, "seeds": {**seeds, rest.removeprefix("seeds."): value}}
    elif top in SECTIONS and "." not in rest:
        doc[top] = {**_mapping(doc.get(top)), rest: value}
    else:
        raise SpecError(key, f"{top} takes a whole value ({top}=...)" if top not in SECTIONS
                        else f"{top} has no nested keys; write {top}.KEY=VALUE")


def apply_overrides(doc: Mapping[str, Any], overrides: Sequence[str]) -> dict[str, Any]:
    """A copy of spec document ``doc`` with ``overrides`` (``key=value`` texts) applied in order.

    ``scheduler.type=none`` also drops the ASHA-only keys of the file's scheduler that no override set
    (without a scheduler they are an error).
    """
    out = dict(doc) if isinstance(doc, Mapping) else {}
    given = []
    for text in overrides:
        key, value = parse_override(text)
        _apply(out, key, value)
        given.append(key)
    scheduler = _mapping(out.get("scheduler"))
    if "scheduler.type" in given and scheduler.get("type") == "none":
        out["scheduler"] = {k: v for k, v in scheduler.items()
                            if k in NO_SCHEDULER_KEYS or k not in ASHA_KEYS or f"scheduler.{k}" in given}
    return out
