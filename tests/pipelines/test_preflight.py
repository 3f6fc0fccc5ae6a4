"""The driver's cheap input checks: what is missing is named before anything starts."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from pipelines.config import TrialConfig, from_flat
from pipelines.data import DataError, DataNotFoundError
from pipelines.preflight import check_inputs
from tests.pipelines.trees import write_coco, write_voc


def _cfg(tmp_path: Path, **flat: object) -> TrialConfig:
    return from_flat({"data.name": "voc", "data.train_split": "train", "cache_dir": str(tmp_path / "cache"),
                      "cam.ink_threshold": 0.0, **flat})


def test_a_complete_voc_tree_passes(tmp_path: Path) -> None:
    voc = write_voc(tmp_path)
    check_inputs(_cfg(tmp_path, **{"data.root": str(voc)}))
    check_inputs(_cfg(tmp_path, **{"data.root": str(voc.parent)}))  # the devkit folder above it


@pytest.mark.parametrize(("breakage", "flat", "named"), [
    ("no_root", {}, "nowhere"),
    (None, {"data.val_split": "test"}, "test.txt"),
    (None, {"data.train_split": "train_aug"}, "train_aug.txt"),
    ("no_lists", {}, "train.txt"),
    ("no_image", {}, "2007_000002.jpg"),
    ("no_mask", {}, "2007_000003.png"),
])
def test_what_is_missing_is_named(tmp_path: Path, breakage: str | None, flat: dict[str, object],
                                  named: str) -> None:
    voc = write_voc(tmp_path)
    if breakage == "no_root":
        voc = tmp_path / "nowhere"
    elif breakage == "no_lists":
        shutil.rmtree(voc / "ImageSets")
    elif breakage == "no_image":
        (voc / "JPEGImages" / "2007_000002.jpg").unlink()
    elif breakage == "no_mask":
        (voc / "SegmentationClass" / "2007_000003.png").unlink()
    with pytest.raises(DataNotFoundError, match=named):
        check_inputs(_cfg(tmp_path, **{"data.root": str(voc), **flat}))


def test_coco_folders_and_splits(tmp_path: Path) -> None:
    root = write_coco(tmp_path / "coco")
    cfg = {"data.name": "coco", "data.root": str(root), "data.train_split": "train", "data.val_split": "val"}
    check_inputs(_cfg(tmp_path, **cfg))
    shutil.rmtree(root / "SegmentationClass" / "val2014")
    with pytest.raises(DataNotFoundError, match="val2014"):
        check_inputs(_cfg(tmp_path, **cfg))
    with pytest.raises(DataError, match=r"test"):
        check_inputs(_cfg(tmp_path, **{**cfg, "data.val_split": "test"}))


def test_digits_need_nothing_on_disk(tmp_path: Path) -> None:
    check_inputs(from_flat({"cache_dir": str(tmp_path / "nowhere")}))


def test_a_missing_weights_file_is_named(tmp_path: Path) -> None:
    """For configs with a ``model.weights`` key (local backbone weights), the file must exist."""
    from types import SimpleNamespace

    from pipelines.preflight import _check_weights

    missing = tmp_path / "resnet50.pth"
    with pytest.raises(DataNotFoundError, match=r"resnet50\.pth not found"):
        _check_weights(SimpleNamespace(model=SimpleNamespace(weights=str(missing))))  # type: ignore[arg-type]
    missing.write_bytes(b"weights")
    _check_weights(SimpleNamespace(model=SimpleNamespace(weights=str(missing))))  # type: ignore[arg-type]
    _check_weights(SimpleNamespace(model=SimpleNamespace(weights="")))  # type: ignore[arg-type]


def test_a_weights_file_that_does_not_fit_fails_before_ray(tmp_path: Path) -> None:
    """A ``model.weights`` file with a wrong key is named, with the key, by the preflight."""
    import torch

    from pipelines.models import WeightsError, create_backbone
    from tests.pipelines import trees

    root = trees.write_voc(tmp_path / "data")
    state = create_backbone("resnet18", 16, 3, "", freeze_bn=False).state_dict()
    good, bad = tmp_path / "good.pth", tmp_path / "bad.pth"
    torch.save(state, good)
    torch.save({**{k: v for k, v in state.items() if k != "conv1.weight"}, "stem.weight": state["conv1.weight"]},
               bad)
    flat = {"data.root": str(root), "model.name": "deeplab", "model.backbone": "resnet18",
            "model.cam_backbone": "resnet18", "seg.init": "scratch"}
    check_inputs(_cfg(tmp_path, **flat, **{"model.weights": str(good)}))
    with pytest.raises(WeightsError, match=r"bad\.pth.*conv1\.weight"):
        check_inputs(_cfg(tmp_path, **flat, **{"model.weights": str(bad)}))
    with pytest.raises(WeightsError, match=r"bad\.pth"):  # the CAM network's file too
        check_inputs(_cfg(tmp_path, **flat, **{"model.cam_weights": str(bad)}))
