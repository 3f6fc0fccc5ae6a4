"""A study whose trials count their budget in iterations: the record's planned epochs are the reports."""

from __future__ import annotations

from pathlib import Path

import pytest

from record import read_trial, trial_folders
from study.handle import open_study
from study.runner import run_study, trial_table
from study.spec import load_spec
from tests.pipelines import trees
from tests.pipelines.test_disk_trial import TINY_DISK

pytestmark = pytest.mark.slow


def test_study_with_an_iteration_budget(local_ray: None, tmp_path: Path) -> None:
    voc = trees.write_voc(tmp_path / "data")
    pseudo = trees.write_pseudo(tmp_path / "pseudo", trees.VOC_ITEMS, trees.VOC_LISTS["train"])
    trial = {**TINY_DISK, "data.root": str(voc), "cache_dir": str(tmp_path / "cache"), "seg.init": "scratch",
             "stage1.source": "masks", "stage1.masks_dir": str(pseudo), "seg.iterations": 3,
             "seg.report_every": 2, "seg.epochs": 5}  # unused: the iteration budget wins
    spec = load_spec({"name": "iters", "trial": trial, "grid": {"ocr.selection": ["none", "oc"]}, "seeds": [0],
                      "scheduler": {"type": "none"}, "max_concurrent": 2, "resources": {"cpus": 1, "gpus": 0},
                      "storage": str(tmp_path / "studies")})
    assert spec.scheduler.max_epochs == 2  # ceil(3 / 2) reports, not seg.epochs
    run_study(open_study(spec))
    rows = trial_table(open_study(spec))
    assert len(rows) == 2 and {r["status"] for r in rows} == {"TERMINATED"} and {r["epochs"] for r in rows} == {2}
    docs = [read_trial(p) for p in trial_folders(open_study(spec).folder)]
    assert {getattr(d, "epochs_planned", None) for d in docs} == {2}
    assert {getattr(d, "stop_reason", None) for d in docs} == {"completed"}
    from results import collect_study, load_dataset

    trials = load_dataset(collect_study(open_study(spec).folder)).trials  # the dataset reads the same budget
    assert list(trials["epochs_planned"]) == [2, 2] and set(trials["stop_reason"].astype(str)) == {"completed"}
