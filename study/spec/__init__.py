"""The study spec: a YAML file turned into frozen dataclasses, validated before anything starts.

A spec names a study and gives the base trial config, a grid of categorical axes (each combination is a
*cell*), an optional search space that Optuna samples inside each cell, the seeds, an early-stopping
scheduler, the resources of a trial and where results go. :func:`load_spec` reads one (with
``yaml.safe_load`` only) and raises :class:`SpecError` naming the key path of the first problem.
Nothing is written to disk.

Built-in rule: with ``ocr.selection = none`` the OCR loss is off, so no other ``ocr.*`` key has an effect.
In such a cell ``ocr.*`` search parameters are not sampled, and ``ocr.*`` grid axes are dropped: the
cells they would have split are one cell.
"""

from record import cell_id
from study.spec._checks import (
    DEFAULT_STORAGE,
    SPECS_DIR,
    TRIAL_KEYS,
    Scalar,
    SpecError,
    check_study_name,
)
from study.spec._load import load_spec, shipped_specs, spec_hash
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

__all__ = [
    "DEFAULT_STORAGE",
    "SPECS_DIR",
    "TRIAL_KEYS",
    "BudgetSpec",
    "Condition",
    "ConfirmSpec",
    "GridAxis",
    "ResourcesSpec",
    "Scalar",
    "SchedulerSpec",
    "SearchParam",
    "SearchSpec",
    "SpecError",
    "StudySpec",
    "TrackingSpec",
    "cell_id",
    "check_study_name",
    "load_spec",
    "shipped_specs",
    "spec_hash",
]
