"""Synthetic studies in Tune's on-disk format, collected once per module where they are only read."""

from __future__ import annotations

from pathlib import Path

import pytest

from results import Dataset, collect_study, load_dataset
from results.testing import SyntheticStudy, write_synthetic_study


def make_study(root: Path, **shape: object) -> Path:
    """Write a synthetic study (see :class:`results.testing.SyntheticStudy`) under ``root``; returns its folder."""
    return write_synthetic_study(root, SyntheticStudy(**shape))  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def synthetic_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """21 trials: 3 cells, 3 settings per OCR cell, 3 seeds, ASHA stops, one failed, two running."""
    return make_study(tmp_path_factory.mktemp("studies"), running=2)


@pytest.fixture(scope="module")
def synthetic(synthetic_dir: Path) -> Dataset:
    """The synthetic study, collected."""
    return load_dataset(collect_study(synthetic_dir))


@pytest.fixture(scope="module")
def searched(tmp_path_factory: pytest.TempPathFactory) -> Dataset:
    """33 trials: 5 settings per OCR cell (4 of them completed: enough for parameter importance), 3 seeds, a
    completed baseline, ASHA stops, one failed, two running; collected."""
    folder = make_study(tmp_path_factory.mktemp("searched"), running=2, settings=5, stop_fraction=0.15)
    return load_dataset(collect_study(folder))
