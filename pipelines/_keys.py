"""Trial keys as the config and the presets both read them: the flattener of nested YAML sections and the
error that names a key at fault (re-exported by :mod:`pipelines.config`; here so that the presets, which
the config reads, need not import the config)."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Collection, Mapping
from pathlib import Path
from typing import Any


class ConfigError(ValueError):
    """A trial config is invalid; ``key`` is the flat key at fault (``"ocr.delta"``, ``"seed"``)."""

    def __init__(self, key: str, message: str) -> None:
        super().__init__(message)
        self.key = key

    def __reduce__(self) -> tuple[type[ConfigError], tuple[str, str]]:
        return (ConfigError, (self.key, str(self)))


def nested_to_flat(tree: Mapping[str, Any], prefix: str = "", *, leaves: Collection[str] = (),
                   max_depth: int = 8) -> dict[str, Any]:
    """Flatten a nested mapping (as read from YAML) into dotted keys: the one flattener of trial keys.

    Args:
        tree: sections as mappings, leaves as values; dotted keys may stand beside nested ones.
        prefix: prepended to every key.
        leaves: keys whose value is kept whole even when it is a mapping (a wrong value, for the type
            check to report, rather than a section).
        max_depth: how deep sections may nest.

    Raises :class:`ConfigError` (``key``: the path at fault) for a key that is not a string, a key given
    twice (nested and dotted), or nesting deeper than ``max_depth``.
    """
    flat: dict[str, Any] = {}
    _flatten_into(flat, tree, prefix, frozenset(leaves), max_depth)
    return flat


def _flatten_into(flat: dict[str, Any], tree: Mapping[str, Any], prefix: str, leaves: frozenset[str],
                  depth_left: int) -> None:
    if depth_left < 0:
        raise ConfigError(prefix[:-1], "is nested too deeply")
    for key, value in tree.items():
        if not isinstance(key, str):
            raise ConfigError(prefix[:-1], f"keys must be strings; {key!r} is a {type(key).__name__}")
        dotted = prefix + key
        if isinstance(value, Mapping) and dotted not in leaves:
            _flatten_into(flat, value, f"{dotted}.", leaves, depth_left - 1)
        elif dotted in flat:
            raise ConfigError(dotted, "is given twice (nested and dotted)")
        else:
            flat[dotted] = value


def config_key(*parts: Any) -> str:
    """A short stable hash of JSON-serialisable parts (dataclasses as dicts)."""
    blob = json.dumps(parts, sort_keys=True, default=_jsonable)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def _jsonable(obj: Any) -> Any:
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return dataclasses.asdict(obj)
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"cannot hash {type(obj).__name__} into a cache key")
