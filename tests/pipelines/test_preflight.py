"""The driver's cheap input checks: what is missing is named before anything starts."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipelines.config import TrialConfig, from_flat
from pipelines.data import DataError, DataNotFoundError
from pipelines.preflight import check_inputs


def _voc_tree(root: Path, splits: tuple[str, ...] = ("train", "val"), masks: str = "SegmentationClass") -> Path:
    """The folders and split lists of a VOC2012 tree (preflight decodes no image)."""
    (root / "JPEGImages").mkdir(parents=True)
    (root / masks).mkdir()
    lists = root / "ImageSets" / "Segmentation"
    lists.mkdir(parents=True)
    for split in splits:
        (lists / f"{split}.txt").write_text("2007_000001\n")
    return root


def _cfg(tmp_path: Path, **flat: object) -> TrialConfig:
    return from_flat({"data.name": "voc", "data.train_split": "train", "cache_dir": str(tmp_path / "cache"),
                      "cam.ink_threshold": 0.0, **flat})


def test_a_complete_voc_tree_passes(tmp_path: Path) -> None:
    root = _voc_tree(tmp_path / "VOCdevkit" / "VOC2012")
    check_inputs(_cfg(tmp_path, **{"data.root": str(root)}))
    check_inputs(_cfg(tmp_path, **{"data.root": str(root.parent)}))  # the devkit folder above it


@pytest.mark.parametrize(("setup", "flat", "named"), [
    (None, {}, "nowhere"),
    ("tree", {"data.val_split": "test"}, "test.txt"),
    ("tree", {"data.train_split": "train_aug"}, "train_aug.txt"),
    ("no_lists", {}, "train.txt"),
])
def test_what_is_missing_is_named(tmp_path: Path, setup: str | None, flat: dict[str, object], named: str) -> None:
    root = tmp_path / "nowhere"
    if setup == "tree":
        _voc_tree(root)
    elif setup == "no_lists":
        _voc_tree(root, splits=())
    with pytest.raises(DataNotFoundError, match=named):
        check_inputs(_cfg(tmp_path, **{"data.root": str(root), **flat}))


def test_train_aug_needs_the_augmented_masks(tmp_path: Path) -> None:
    root = _voc_tree(tmp_path / "voc", splits=("train_aug", "val"))
    with pytest.raises(DataNotFoundError, match="SegmentationClassAug"):
        check_inputs(_cfg(tmp_path, **{"data.root": str(root), "data.train_split": "train_aug"}))


def test_coco_folders_and_splits(tmp_path: Path) -> None:
    root = tmp_path / "coco"
    for folder in ("train2014", "val2014", "SegmentationClass/train2014"):
        (root / folder).mkdir(parents=True)
    cfg = {"data.name": "coco", "data.root": str(root), "data.train_split": "train", "data.val_split": "val"}
    with pytest.raises(DataNotFoundError, match="SegmentationClass/val2014"):
        check_inputs(_cfg(tmp_path, **cfg))
    (root / "SegmentationClass" / "val2014").mkdir()
    check_inputs(_cfg(tmp_path, **cfg))
    with pytest.raises(DataError, match=r"data\.val_split = 'test'"):
        check_inputs(_cfg(tmp_path, **{**cfg, "data.val_split": "test"}))


def test_a_cached_data_set_is_not_looked_for_on_disk(tmp_path: Path) -> None:
    from pipelines.data import cache_path

    cfg = _cfg(tmp_path, **{"data.root": str(tmp_path / "gone")})
    entry = cache_path(cfg.data, cfg.cache_path)
    entry.parent.mkdir(parents=True)
    entry.write_bytes(b"cached")
    check_inputs(cfg)


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
