"""What the tables need to know about a study: its metric, grid axes, searched keys and ASHA rungs.

Read from the study's own record, ``study.json`` (written by ``ocr-study run``; see :mod:`record`), or
inferred from the trials when it is missing (only MLflow left, or a study from before it was written).
Stored as JSON in the Parquet files' metadata.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from record import META, Phase, StudyDoc, parse_cell, read_study
from results._errors import ResultsError

__all__ = ["StudyInfo", "infer_info", "info_from_study", "param_value", "parse_cell", "read_study_info"]


@dataclass(frozen=True)
class StudyInfo:
    """The study-level facts a report needs (``scheduler`` is ``asha``, ``none`` or ``unknown``;
    ``log_keys`` are the searched parameters sampled on a log scale)."""

    name: str
    metric: str = "val_miou"
    mode: str = "max"
    grid: dict[str, list[Any]] = field(default_factory=dict)
    defaults: dict[str, Any] = field(default_factory=dict)
    search_keys: tuple[str, ...] = ()
    log_keys: tuple[str, ...] = ()
    seeds: tuple[int, ...] = ()
    scheduler: str = "unknown"
    rungs: tuple[int, ...] = ()
    max_epochs: int | None = None
    gpus: float | None = None
    confirm: dict[str, Any] = field(default_factory=dict)  # study.json's confirm phase, without its configs

    def to_json(self) -> str:
        """The facts as a JSON string."""
        return json.dumps(asdict(self))  # insertion order: the grid axes keep the spec's order

    @classmethod
    def from_json(cls, text: str) -> StudyInfo:
        """Read what :meth:`to_json` wrote."""
        doc = json.loads(text)
        for key in ("search_keys", "log_keys", "seeds", "rungs"):
            doc[key] = tuple(doc.get(key) or ())
        return cls(**doc)


def info_from_study(doc: StudyDoc, name: str) -> StudyInfo:
    """The facts from a ``study.json`` document."""
    return StudyInfo(name=doc.name or name, metric=doc.metric, mode=doc.mode, grid=dict(doc.grid),
                     defaults=dict(doc.defaults), search_keys=doc.search_keys, log_keys=doc.log_keys,
                     seeds=tuple(int(s) for s in doc.seeds), scheduler=doc.scheduler,
                     rungs=tuple(int(r) for r in doc.rungs), max_epochs=int(doc.max_epochs) if doc.max_epochs else None,
                     gpus=float(doc.gpus), confirm=_confirm_phase(doc))


def _confirm_phase(doc: StudyDoc) -> dict[str, Any]:
    """The confirm phase as the report shows it: everything but its planned configs."""
    phase = doc.phase(Phase.CONFIRM)
    if phase is None:
        return {}
    return {k: v for k, v in StudyDoc("", phases=(phase,)).to_json()["phases"][0].items() if k != "configs"}


def read_study_info(study_dir: Path) -> StudyInfo | None:
    """The facts from ``study_dir/study.json``; ``None`` when the study has none."""
    try:
        doc = read_study(study_dir)
    except ValueError as err:
        raise ResultsError(str(err)) from err
    return None if doc is None else info_from_study(doc, study_dir.name)


def param_value(text: str) -> Any:
    """A param's text typed back: ``True``/``False``, an int, a float, else the text itself."""
    if text in ("True", "False"):
        return text == "True"
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            continue
    return text


def infer_info(name: str, configs: list[dict[str, Any]]) -> StudyInfo:
    """The facts inferred from the trials' configs, for a study without ``study.json``."""
    grid: dict[str, list[Any]] = {}
    for config in configs:
        for key, value in parse_cell(str(config.get(f"{META}cell", ""))).items():
            typed = param_value(value)
            if typed not in grid.setdefault(key, []):
                grid[key].append(typed)
    seeds = tuple(sorted({int(c["seed"]) for c in configs if isinstance(c.get("seed"), int)}))
    planned = [int(c["seg.epochs"]) for c in configs if isinstance(c.get("seg.epochs"), int)]
    return StudyInfo(name=name, grid=grid, search_keys=_searched(configs), seeds=seeds,
                     max_epochs=max(planned) if planned else None)


def _searched(configs: list[dict[str, Any]]) -> tuple[str, ...]:
    """Keys that vary between settings of one cell: the searched parameters."""
    seen: dict[tuple[str, str], dict[Any, set[str]]] = {}
    for config in configs:
        cell = str(config.get(f"{META}cell", ""))
        for key, value in config.items():
            if key.startswith(META) or key == "seed":
                continue
            seen.setdefault((cell, key), {}).setdefault(repr(value), set())
    return tuple(sorted({key for (_, key), values in seen.items() if len(values) > 1}))
