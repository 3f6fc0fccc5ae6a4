"""What the driver does around a study so that bad input and faults leave nothing wrong behind.

Before anything starts: every cell's trial inputs are checked (:func:`check_study_inputs`). While the
driver lives: it holds the study's lock (:mod:`study.lock`), and SIGTERM ends it like Ctrl-C does, so
that its exit handlers run. At its exit: the processes it started end with it (:mod:`study.processes`).
"""

from __future__ import annotations

from pathlib import Path

from study.lock import acquire, clear_folder, release
from study.plan import StudyPlan, cell_config, check_placeholders
from study.processes import end_recorded, exit_on_sigterm, record_started
from study.spec import StudySpec

__all__ = ["check_study_inputs", "clear_folder", "end_recorded", "hold_study", "record_started",
           "release_study"]


def check_study_inputs(spec: StudySpec, study: StudyPlan) -> None:
    """Check what each cell's trials read from disk (data roots, split lists, weights), before Ray starts.

    Raises:
        DataError: a ``ValueError`` (a ``FileNotFoundError`` for a missing path) naming the path.
    """
    from pipelines.config import from_flat
    from pipelines.preflight import check_inputs
    check_placeholders(spec)  # a shipped spec's "<set: ...>" values name their keys, not a missing path
    checked: set[str] = set()
    for cell in study.cells:
        flat = cell_config(cell)
        flat["cache_dir"] = str(Path(flat["cache_dir"]).expanduser().absolute())
        cfg = from_flat(flat)
        inputs = repr((cfg.data, cfg.stage1, cfg.model.weights, cfg.model.cam_weights))
        if inputs not in checked:  # cells usually share their data: check each once
            check_inputs(cfg)
            checked.add(inputs)


def hold_study(folder: Path) -> None:
    """Take the study's lock for this driver's life (see :func:`study.lock.acquire`); SIGTERM exits
    cleanly from now on, releasing it."""
    exit_on_sigterm()
    acquire(folder)


def release_study(folder: Path) -> None:
    """Give the study's lock back (a run that failed before it started)."""
    release(folder)
