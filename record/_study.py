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
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from record._layout import STUDY_FILE


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
