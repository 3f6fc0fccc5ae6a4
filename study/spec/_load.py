"""Reading a spec: from a file, a shipped spec's name, YAML text or a mapping; and its hash."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

from study.spec._checks import (
    SPECS_DIR,
    SpecError,
)
from study.spec._model import (
    StudySpec,
)
from study.spec._overrides import apply_overrides
from study.spec._parse import _parse


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


def load_spec(source: str | Path | Mapping[str, Any], overrides: Sequence[str] = ()) -> StudySpec:
    """Read and validate a study spec; raises :class:`SpecError` naming the key path of the first problem.

    Args:
        source: a path to a YAML file (a ``Path``, or a string ending in ``.yaml``/``.yml`` or naming an
            existing file), the name of a shipped spec (``"quick"``), YAML text, or an already parsed mapping.
        overrides: ``key=value`` texts applied over the document before it is validated
            (:func:`study.spec._overrides.apply_overrides`).
    """
    if isinstance(source, Mapping):
        doc: Any = source
    elif isinstance(source, (str, Path)):
        text, origin = _source_text(source)
        doc = _parse_yaml(text, origin)
    else:
        raise SpecError("", f"expected a path, YAML text or a mapping, got {type(source).__name__}")
    return _parse(apply_overrides(doc, overrides) if overrides else doc)


def spec_hash(spec: StudySpec) -> str:
    """A stable 12-character hash of the normalised spec (:meth:`StudySpec.to_dict`), for tagging runs."""
    text = json.dumps(spec.to_dict(), sort_keys=True, separators=(",", ":"), allow_nan=False)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:12]

