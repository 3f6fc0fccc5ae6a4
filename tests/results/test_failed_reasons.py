"""The report names why trials failed, not only how many."""

from __future__ import annotations

from pathlib import Path

import pytest

from results import collect_study, load_dataset, write_report
from tests.results.conftest import make_study

REASON = "pipelines.engine.NonFiniteLossError: non-finite loss in stage 'seg' at epoch 2"


@pytest.mark.slow
def test_the_report_names_each_failed_trials_reason(tmp_path: Path) -> None:
    ds = load_dataset(collect_study(make_study(tmp_path, failed=2)))
    written = write_report(ds, tmp_path / "report", ("md", "html"))
    md = written["md"].read_text()
    assert f"## Failed trials\n\n- 2 × {REASON}" in md
    assert f"Failed: 2 × {REASON}".replace("'", "&#x27;") in written["html"].read_text()


@pytest.mark.slow
def test_no_failed_section_without_failures(tmp_path: Path) -> None:
    ds = load_dataset(collect_study(make_study(tmp_path, failed=0)))
    assert "Failed trials" not in write_report(ds, tmp_path / "report", ("md",))["md"].read_text()
