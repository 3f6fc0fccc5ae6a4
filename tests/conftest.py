"""Shared fixtures: one tiny CPU trial config that shrinks every run to seconds."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import torch

from pipelines.config import TrialConfig, from_flat

TINY: dict[str, Any] = {
    "data.digits.image_size": 24,
    "data.digits.glyph_min": 8,
    "data.digits.glyph_max": 12,
    "data.digits.tag_min_pixels": 4,
    "data.digits.train_size": 48,
    "data.digits.val_size": 16,
    "data.digits.test_size": 16,
    "cam.width": 4,
    "cam.epochs": 1,
    "cam.batch_size": 16,
    "seg.width": 4,
    "seg.epochs": 2,
    "seg.batch_size": 16,
    "threads": 1,
    "device": "cpu",
}


FAST_EXAMPLES = 20  # hypothesis examples per property in the fast set; the full count runs under ``slow``


def examples(full: int, fast: int = FAST_EXAMPLES) -> pytest.MarkDecorator:
    """Run a property test twice over: ``fast`` examples in the fast set (``-m "not slow"``) and ``full``
    examples marked slow (``make test`` runs both). The test takes ``max_examples`` and builds its
    ``@given`` function with it."""
    return pytest.mark.parametrize("max_examples", [fast, pytest.param(full, marks=pytest.mark.slow)],
                                   ids=["fast", "full"])


@pytest.fixture(scope="session")
def shared_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One cache folder for the whole session, so the tiny data set is built once."""
    return tmp_path_factory.mktemp("cache")


@pytest.fixture
def tiny_config(shared_cache: Path) -> TrialConfig:
    """A trial config that runs both stages in a couple of seconds on one CPU thread."""
    torch.set_num_threads(1)
    return from_flat({**TINY, "cache_dir": str(shared_cache)})


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Skip tests marked ``gpu`` when CUDA is not available."""
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs CUDA")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


def require_executable(*names: str) -> str:
    """The path of the first of ``names`` on PATH; skip the test without one, but fail it under CI.

    CI installs what the slow tests need (``make system``), so a missing tool there is a broken set-up,
    not a reason to report the check as passing.
    """
    import os
    import shutil

    for name in names:
        found = shutil.which(name)
        if found:
            return found
    message = f"needs {' or '.join(names)} on PATH (make system installs it)"
    if os.environ.get("CI"):
        pytest.fail(message)
    pytest.skip(message)


@pytest.fixture
def failpoints(monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[[str], None]]:
    """Arms failpoints in this process (``OCR_STUDY_FAILPOINTS``, re-read); disarmed after the test."""
    from record import FAILPOINTS_ENV
    from record._failpoints import configure

    def arm(spec: str) -> None:
        monkeypatch.setenv(FAILPOINTS_ENV, spec)
        configure()

    yield arm
    monkeypatch.delenv(FAILPOINTS_ENV, raising=False)
    configure()
