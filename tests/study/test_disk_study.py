"""A study whose trials read pseudo-masks from a folder (the paper's protocol) on a tiny VOC tree."""

from __future__ import annotations

from pathlib import Path

import pytest

from study.handle import open_study
from study.runner import run_study, trial_table
from study.spec import load_spec
from tests.pipelines import trees
from tests.pipelines.test_disk_trial import TINY_DISK

pytestmark = pytest.mark.slow


def test_study_on_a_pseudo_mask_folder(local_ray: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    voc = trees.write_voc(tmp_path / "data")
    trees.write_pseudo(tmp_path / "pseudo", trees.VOC_ITEMS, trees.VOC_LISTS["train"])
    monkeypatch.chdir(tmp_path)  # relative paths, as a user writes them: trials run in their own folders
    trial = {**TINY_DISK, "data.root": str(voc), "cache_dir": str(tmp_path / "cache"), "seg.init": "scratch",
             "stage1.source": "masks", "stage1.masks_dir": "pseudo"}
    spec = load_spec({"name": "disk", "trial": trial, "grid": {"ocr.selection": ["none", "oc"]}, "seeds": [0],
                      "scheduler": {"type": "none"}, "max_concurrent": 2, "resources": {"cpus": 1, "gpus": 0},
                      "storage": str(tmp_path / "studies")})
    run_study(open_study(spec))
    rows = trial_table(open_study(spec))
    assert len(rows) == 2 and {r["status"] for r in rows} == {"TERMINATED"}
    assert {r["config"]["stage1.source"] for r in rows} == {"masks"}
    assert len(list((tmp_path / "cache" / "stage1").glob("masks-*.pt"))) == 1  # scored once, shared
