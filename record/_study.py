"""``study.json``: what a study plans (its phases, cells, trials, epochs) and the facts its report needs.

Written by ``ocr-study run`` before any trial starts, read by ``results`` (which never parses the spec).
Its fields: ``name``, ``spec_hash``, ``metric``, ``mode``, ``scheduler`` (``asha``/``none``), ``rungs``,
``max_epochs``, ``epochs_planned`` (per trial), ``grid`` (axis → values, in the spec's order),
``defaults`` (each grid axis's value in the spec's trial), ``search_keys``, ``log_keys``, ``seeds``,
``gpus`` (per trial), ``planned_trials``, and ``phases``: a list of ``{"name", "trials", "cells"}`` where
each cell is ``{"id", "values", "params", "settings", "trials"}``. The search phase gets ``"done": true``
when it has ended. The confirm phase (when the spec has one) plans ``trials`` from the spec at first;
once the search has ended it holds the chosen settings (``cells``: ``{"id", "settings", "rule", "epoch"}``),
the planned ``configs``, ``seeds``, ``epochs``, ``metric``, ``mode`` and ``"chosen": true``.

This module is the document's one owner: :func:`write_study` and :func:`read_study` its one writer and
reader, :func:`search_ended` and :func:`confirm_chosen` the two changes a study makes to it once planned
(each returns a new document).
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from record._layout import STUDY_FILE
from record._vocab import Phase


def write_study(study_dir: Path, doc: Mapping[str, Any]) -> Path:
    """Write ``study.json`` into ``study_dir`` atomically; returns its path."""
    path = Path(study_dir) / STUDY_FILE
    tmp = path.with_name(f".{STUDY_FILE}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(dict(doc), indent=1), encoding="utf-8")
    os.replace(tmp, path)
    return path


def read_study(study_dir: Path) -> dict[str, Any] | None:
    """The study's ``study.json``, or ``None`` when it has none (a study from before it was written).

    Raises ``ValueError`` naming the file when it exists but is not a JSON object.
    """
    path = Path(study_dir) / STUDY_FILE
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as err:
        raise ValueError(f"{path} cannot be read ({err}); run the study again with --fresh") from err
    if not isinstance(doc, dict):
        raise ValueError(f"{path} does not hold a study record; run the study again with --fresh")
    return doc


def study_phase(doc: Mapping[str, Any], phase: str) -> dict[str, Any] | None:
    """The entry of ``phase`` (a :class:`record.Phase`) in a ``study.json`` document, if it has one."""
    return next((dict(p) for p in doc.get("phases") or [] if p.get("name") == phase), None)


def _with_phase(doc: Mapping[str, Any], phase: Mapping[str, Any]) -> dict[str, Any]:
    return {**doc, "phases": [dict(phase) if p.get("name") == phase["name"] else p for p in doc.get("phases") or []]}


def search_ended(doc: Mapping[str, Any]) -> dict[str, Any]:
    """``doc`` with its search phase marked ``"done": true`` (a new document; ``doc`` is not changed)."""
    search = study_phase(doc, Phase.SEARCH)
    return dict(doc) if search is None else _with_phase(doc, {**search, "done": True})


def confirm_chosen(doc: Mapping[str, Any], chosen: Mapping[str, Any]) -> dict[str, Any]:
    """``doc`` with its confirm phase replaced by the settings ``chosen`` after the search (``"chosen": true``)
    and the study's planned trials counted again (a new document; ``doc`` is not changed)."""
    search = study_phase(doc, Phase.SEARCH) or {}
    phase = {**chosen, "name": Phase.CONFIRM, "chosen": True}
    return {**_with_phase(doc, phase), "planned_trials": int(search.get("trials", 0)) + int(phase["trials"])}
