"""What the tables need to know about a study: its metric, grid axes, searched keys and ASHA rungs.

Read from the study's ``spec.yaml`` (plain YAML: ``results`` does not import ``study``), or inferred from
the trials when only MLflow is left. Stored as JSON in the Parquet files' metadata.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import yaml

from results._errors import ResultsError


def asha_rungs(grace_period: int, reduction_factor: int, max_epochs: int) -> tuple[int, ...]:
    """ASHA's milestones below ``max_epochs``: ``grace_period * reduction_factor**k``."""
    out, rung = [], max(1, grace_period)
    while rung < max_epochs:
        out.append(rung)
        rung *= max(2, reduction_factor)
    return tuple(out)


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


def info_from_spec(doc: dict[str, Any], name: str) -> StudyInfo:
    """The facts from a ``spec.yaml`` document (the normalised spec a study saves)."""
    sched = doc.get("scheduler") or {}
    search = doc.get("search") or {}
    kind = str(sched.get("type", "none"))
    grid, trial = dict(doc.get("grid") or {}), dict(doc.get("trial") or {})
    max_epochs = sched.get("max_epochs") or trial.get("seg.epochs")
    rungs: tuple[int, ...] = ()
    if kind == "asha" and max_epochs:
        rungs = asha_rungs(int(sched.get("grace_period", 1)), int(sched.get("reduction_factor", 2)),
                           int(max_epochs))
    return StudyInfo(name=str(doc.get("name") or name), metric=str(sched.get("metric", "val_miou")),
                     mode=str(sched.get("mode", "max")), grid=grid,
                     defaults={k: trial[k] for k in grid if k in trial},
                     search_keys=tuple(sorted((search.get("params") or {}).keys())),
                     log_keys=tuple(sorted(k for k, v in (search.get("params") or {}).items()
                                           if isinstance(v, dict) and (v.get("type") == "loguniform" or v.get("log")))),
                     seeds=tuple(int(s) for s in doc.get("seeds") or ()), scheduler=kind, rungs=rungs,
                     max_epochs=int(max_epochs) if max_epochs else None,
                     gpus=float((doc.get("resources") or {}).get("gpus", 0.0)))


def read_spec_info(study_dir: Path) -> StudyInfo:
    """The facts from ``study_dir/spec.yaml``; defaults named after the folder when it is missing."""
    path = study_dir / "spec.yaml"
    if not path.is_file():
        return StudyInfo(name=study_dir.name)
    try:
        doc = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        raise ResultsError(f"{path} is not valid YAML ({err}); restore it from the study's spec") from err
    if not isinstance(doc, dict):
        raise ResultsError(f"{path} does not hold a study spec; restore it from the study's spec")
    return info_from_spec(doc, study_dir.name)


def parse_cell(cell: str) -> dict[str, str]:
    """A cell id ``"ocr.selection=oc,ocr.prior=uniform"`` as ``{key: value text}`` (``"base"``: none)."""
    out: dict[str, str] = {}
    for part in cell.split(","):
        if "=" in part:
            key, value = part.split("=", 1)
            out[key] = value
    return out
