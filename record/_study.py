"""``study.json``: what a study plans (its phases, cells, trials, epochs) and the facts its report needs.

Written by ``ocr-study run`` before any trial starts, read by ``results`` (which never parses the spec).
:class:`StudyDoc` is its shape (frozen, typed); :func:`write_study` its one writer and :func:`read_study`
its one reader; :meth:`StudyDoc.search_ended` and :meth:`StudyDoc.confirm_chosen` the two changes a study
makes to it once planned (each returns a new document).

Its fields: ``name``, ``spec_hash``, ``metric``, ``mode``, ``scheduler`` (``asha``/``none``), ``rungs``,
``max_epochs``, ``epochs_planned`` (per trial), ``grid`` (axis → values, in the spec's order),
``defaults`` (each grid axis's value in the spec's trial), ``search_keys``, ``log_keys``, ``seeds``,
``gpus`` (per trial), ``planned_trials``, and ``phases`` (:class:`PhaseDoc`): the search phase with its
``cells`` (``{"id", "values", "params", "settings", "trials"}``), ``"done": true`` once it has ended; the
confirm phase (when the spec has one) with its ``trials``, ``seeds``, ``top_k``, ``epochs``, ``metric``,
``mode`` from the spec (and ``seed_rule``, the :class:`record.SeedRule` of a sequential confirm phase), and
once the search has ended the chosen settings (``cells``: ``{"id", "settings", "rule", "epoch"}``), the
planned ``configs`` and ``"chosen": true``.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from record._layout import STUDY_FILE
from record._seeds import SeedRule
from record._vocab import Phase


@dataclass(frozen=True)
class PhaseDoc:
    """One phase of ``study.json`` (fields a phase does not use keep their defaults)."""

    name: Phase
    trials: int = 0
    cells: tuple[dict[str, Any], ...] = ()
    done: bool = False  # the search phase has ended
    chosen: bool = False  # the confirm phase's settings are chosen (and its configs planned)
    configs: tuple[dict[str, Any], ...] = ()
    seeds: tuple[int, ...] = ()
    top_k: int | None = None
    epochs: int | None = None
    metric: str | None = None
    mode: str | None = None
    seed_rule: SeedRule | None = None  # a sequential confirm phase's rule (``seeds``: every seed it may run)
    rounds: tuple[dict[str, Any], ...] = ()  # ... and what each of its rounds decided (``{"round", "settings"}``)

    def __post_init__(self) -> None:
        object.__setattr__(self, "name", Phase(self.name))  # ValueError naming the word when it is none
        rule: Any = self.seed_rule  # study.json holds it as a mapping
        if isinstance(rule, Mapping):
            object.__setattr__(self, "seed_rule", SeedRule.from_json(rule))


@dataclass(frozen=True)
class StudyDoc:
    """The whole ``study.json`` (see the module's docstring for what each field holds)."""

    name: str
    spec_hash: str = ""
    metric: str = "val_miou"
    mode: str = "max"
    scheduler: str = "unknown"
    rungs: tuple[int, ...] = ()
    max_epochs: int | None = None
    epochs_planned: int | None = None
    grid: dict[str, list[Any]] = field(default_factory=dict)
    defaults: dict[str, Any] = field(default_factory=dict)
    search_keys: tuple[str, ...] = ()
    log_keys: tuple[str, ...] = ()
    seeds: tuple[int, ...] = ()
    gpus: float = 0.0
    planned_trials: int | None = None
    phases: tuple[PhaseDoc, ...] = ()

    def phase(self, name: Phase) -> PhaseDoc | None:
        """The phase ``name``, if the study has it."""
        return next((p for p in self.phases if p.name == name), None)

    def _with_phase(self, phase: PhaseDoc) -> StudyDoc:
        return dataclasses.replace(self, phases=tuple(phase if p.name == phase.name else p for p in self.phases))

    def search_ended(self) -> StudyDoc:
        """This document with its search phase marked done."""
        search = self.phase(Phase.SEARCH)
        return self if search is None else self._with_phase(dataclasses.replace(search, done=True))

    def confirm_chosen(self, chosen: PhaseDoc) -> StudyDoc:
        """This document with its confirm phase replaced by the settings ``chosen`` after the search (marked
        chosen), and its planned trials counted again."""
        search = self.phase(Phase.SEARCH)
        phase = dataclasses.replace(chosen, name=Phase.CONFIRM, chosen=True)
        return dataclasses.replace(self._with_phase(phase),
                                   planned_trials=(search.trials if search else 0) + phase.trials)

    def round_decided(self, entry: Mapping[str, Any]) -> StudyDoc:
        """This document with a round of the sequential confirm phase recorded (a round recorded again, by a
        resumed driver, replaces the earlier entry)."""
        phase = self.phase(Phase.CONFIRM)
        if phase is None:
            return self
        rounds = (*(r for r in phase.rounds if r.get("round") != entry.get("round")), dict(entry))
        return self._with_phase(dataclasses.replace(phase, rounds=tuple(sorted(rounds, key=lambda r: r["round"]))))

    def to_json(self) -> dict[str, Any]:
        """The document as plain JSON data."""
        return json.loads(json.dumps(dataclasses.asdict(self)))

    @classmethod
    def from_json(cls, doc: Mapping[str, Any]) -> StudyDoc:
        """Read the JSON data :meth:`to_json` wrote (unknown keys are ignored: a newer writer's additions).

        Raises ``ValueError`` naming the field when a field has the wrong shape.
        """
        known = {f.name for f in dataclasses.fields(cls)}
        fields = {k: v for k, v in doc.items() if k in known}
        try:
            for key in ("rungs", "search_keys", "log_keys", "seeds"):
                if key in fields:
                    fields[key] = tuple(fields[key] or ())
            fields["phases"] = tuple(_phase(p) for p in doc.get("phases") or ())
            return cls(**fields)
        except (TypeError, ValueError) as err:
            raise ValueError(f"study.json does not hold a study record ({err})") from err


def _phase(doc: Mapping[str, Any]) -> PhaseDoc:
    known = {f.name for f in dataclasses.fields(PhaseDoc)}
    fields = {k: v for k, v in doc.items() if k in known}
    for key in ("cells", "configs", "seeds", "rounds"):
        if key in fields:
            fields[key] = tuple(fields[key] or ())
    return PhaseDoc(**fields)


def write_study(study_dir: Path, doc: StudyDoc) -> Path:
    """Write ``study.json`` into ``study_dir`` atomically; returns its path."""
    path = Path(study_dir) / STUDY_FILE
    tmp = path.with_name(f".{STUDY_FILE}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(doc.to_json(), indent=1), encoding="utf-8")
    os.replace(tmp, path)
    return path


def read_study(study_dir: Path) -> StudyDoc | None:
    """The study's ``study.json``, or ``None`` when it has none (a study from before it was written).

    Raises ``ValueError`` naming the file when it exists but does not hold a study record.
    """
    path = Path(study_dir) / STUDY_FILE
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as err:
        raise ValueError(f"{path} cannot be read ({err}); run the study again with --fresh") from err
    if not isinstance(doc, dict) or not isinstance(doc.get("name"), str):
        raise ValueError(f"{path} does not hold a study record; run the study again with --fresh")
    try:
        return StudyDoc.from_json(doc)
    except ValueError as err:
        raise ValueError(f"{path}: {err}; run the study again with --fresh") from err
