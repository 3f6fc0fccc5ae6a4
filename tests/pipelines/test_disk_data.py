"""Disk data sets streamed as a Dataset: VOC/COCO/folder trees, tags, transforms, pseudo-mask folders."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from torchvision.transforms import v2

from pipelines.config import TrialConfig, from_flat
from pipelines.data import (
    COCO_CLASSES,
    VOC_CLASSES,
    DataError,
    DataNotFoundError,
    DiskData,
    SegDataset,
    check_data,
    folder_fingerprint,
    open_data,
)
from pipelines.data._augment import MEAN_UINT8, RandomRescale, apply_train, train_transform
from pipelines.data._transforms import denormalize
from tests.pipelines import trees

DISK = {"threads": 1, "device": "cpu", "data.workers": 0, "data.crop_size": 24, "cam.ink_threshold": 0.0}


def disk_config(tmp_path: Path, **flat: Any) -> TrialConfig:
    return from_flat({**DISK, "cache_dir": str(tmp_path / "cache"), **flat})


@pytest.fixture
def voc(tmp_path: Path) -> Path:
    return trees.write_voc(tmp_path / "data")


def _voc_cfg(tmp_path: Path, root: Path, **flat: Any) -> TrialConfig:
    return disk_config(tmp_path, **{"data.name": "voc", "data.root": str(root), "data.train_split": "train",
                                    **flat})


def _tags(classes: tuple[int, ...], num_classes: int) -> list[int]:
    return [int(c + 1 in classes) for c in range(num_classes)]


# ---------------------------------------------------------------- layouts and tags


@pytest.mark.parametrize("level", ["VOCdevkit", "VOC2012"])
def test_voc_streams_whole_images_with_tags_from_masks(voc: Path, tmp_path: Path, level: str) -> None:
    data = open_data(_voc_cfg(tmp_path, voc if level == "VOC2012" else voc.parent))
    assert isinstance(data, DiskData) and data.class_names == VOC_CLASSES
    expected = [_tags(trees.VOC_ITEMS[s][1], 20) for s in trees.VOC_LISTS["train"]]
    assert data.train_tags.tolist() == expected
    seen = []
    for batch in data.val_loader(8, torch.device("cpu")):
        stem = trees.VOC_LISTS["val"][int(batch.index[0])]
        size, classes = trees.VOC_ITEMS[stem]
        assert batch.images.shape == (1, 3, size[1], size[0])  # full resolution, aspect ratio kept
        assert batch.masks is not None and batch.masks[0].tolist() == trees.scene(*size, classes)[1].tolist()
        assert batch.tags[0].tolist() == _tags(classes, 20)
        seen.append(stem)
    assert seen == trees.VOC_LISTS["val"]


def test_coco_tree(tmp_path: Path) -> None:
    root = trees.write_coco(tmp_path / "coco")
    cfg = disk_config(tmp_path, **{"data.name": "coco", "data.root": str(root), "data.train_split": "train"})
    data = open_data(cfg)
    assert data.class_names == COCO_CLASSES and len(data.train_tags) == 2
    assert data.train_tags.tolist() == [_tags((1, 80), 80), _tags((45,), 80)]
    assert data.val_tags.tolist() == [_tags((3, 7, 60), 80)]


def test_folder_layout_and_label_files(tmp_path: Path) -> None:
    root = trees.write_folder(tmp_path / "f", train_masks=False)
    base = {"data.name": "folder", "data.root": str(root), "data.train_split": "train"}
    with pytest.raises(DataNotFoundError, match=r"masks listed in train\.txt"):
        open_data(disk_config(tmp_path, **base))
    csv = tmp_path / "labels.csv"
    csv.write_text("id,cat,dog,kite\na,1,0,1\nb,0,1,0\nc,1,1,0\n")
    data = open_data(disk_config(tmp_path, **base, **{"data.labels": str(csv)}))
    assert data.class_names == trees.FOLDER_CLASSES and not data.has_train_masks
    assert data.train_tags.tolist() == [[1, 0, 1], [0, 1, 0], [1, 1, 0]]
    npy = tmp_path / "cls_labels.npy"  # IRN's format: integer keys, float vectors
    np.save(npy, {"a": np.array([1.0, 0, 0], np.float32), "b": np.array([0, 0, 1.0], np.float32),
                  "c": np.array([0, 1.0, 0], np.float32)}, allow_pickle=True)
    data = open_data(disk_config(tmp_path, **base, **{"data.labels": str(npy)}))
    assert data.train_tags.tolist() == [[1, 0, 0], [0, 0, 1], [0, 1, 0]]


def test_irn_integer_keys_and_missing_labels(voc: Path, tmp_path: Path) -> None:
    npy = tmp_path / "cls_labels.npy"
    table = {int(s.replace("_", "")): np.eye(20, dtype=np.float32)[i] for i, s in enumerate(trees.VOC_ITEMS)}
    np.save(npy, table, allow_pickle=True)
    data = open_data(_voc_cfg(tmp_path, voc, **{"data.labels": str(npy)}))
    assert data.train_tags.argmax(1).tolist() == [0, 1, 2]
    np.save(npy, {2007000001: np.eye(20, dtype=np.float32)[0]}, allow_pickle=True)
    with pytest.raises(DataError, match=r"no labels for 2 of 3 images \(first: 2007_000002, 2007_000003\)"):
        check_data(_voc_cfg(tmp_path, voc, **{"data.labels": str(npy)}))


# ---------------------------------------------------------------- transforms


def _misaligned_share(image: torch.Tensor, mask: torch.Tensor) -> float:
    """The share of labelled pixels, inside flat image regions (not blended by resizing), whose mask
    disagrees with the class the image's grey level encodes."""
    grey = image[:1].float()[None]  # (1, 1, H, W)
    flat = (F.max_pool2d(grey, 3, 1, 1) == -F.max_pool2d(-grey, 3, 1, 1))[0, 0].numpy()
    g = grey[0, 0].numpy().astype(np.int64)
    m = mask.numpy().astype(np.int64)
    keep = flat & (m != 255) & (g != MEAN_UINT8[0])
    return float((trees.class_of(g)[keep] != m[keep]).mean())


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("size", trees.SIZES)
def test_augmentation_keeps_image_and_mask_aligned(seed: int, size: tuple[int, int]) -> None:
    image_np, mask_np = trees.scene(size[0] * 3, size[1] * 3, (3, 9, 14))  # 72..120 px a side
    image, mask = torch.from_numpy(image_np).permute(2, 0, 1).contiguous(), torch.from_numpy(mask_np)
    transform = train_transform(144, 0.5, 1.5, True)
    torch.manual_seed(seed)
    out_image, out_mask, _ = apply_train(transform, image, mask)
    assert out_image.shape == (3, 144, 144) and out_mask.shape == (144, 144)
    assert _misaligned_share(out_image, out_mask) < 0.02
    torch.manual_seed(seed)
    _, wrong, _ = apply_train(transform, image, mask.flip(-1))
    assert _misaligned_share(out_image, wrong) > 0.2  # the check does notice a misaligned mask
    padding = (out_image == torch.tensor(MEAN_UINT8).view(3, 1, 1)).all(0)
    assert padding.any()  # the crop is larger than most rescaled images
    assert (out_mask[padding] == 255).all()


@pytest.mark.parametrize("step", ["rescale", "flip", "crop"])
def test_each_transform_step_keeps_alignment(step: str) -> None:
    image_np, mask_np = trees.scene(96, 120, (2, 11))
    image, mask = torch.from_numpy(image_np).permute(2, 0, 1).contiguous(), torch.from_numpy(mask_np)
    transform = {"rescale": v2.Compose([RandomRescale(0.5, 1.5)]), "flip": v2.Compose([v2.RandomHorizontalFlip(1.0)]),
                 "crop": train_transform(100, 1.0, 1.0, False)}[step]
    for seed in range(4):
        torch.manual_seed(seed)
        out_image, out_mask, _ = apply_train(transform, image, mask)
        assert out_image.shape[1:] == out_mask.shape
        assert _misaligned_share(out_image, out_mask) < 0.02
    if step == "flip":
        assert torch.equal(out_mask, mask.flip(-1)) and torch.equal(out_image, image.flip(-1))


def test_dataset_item_is_normalised_and_padding_is_ignored(voc: Path) -> None:
    stems = trees.VOC_LISTS["train"]
    images = [voc / "JPEGImages" / f"{s}.jpg" for s in stems]
    masks = [voc / "SegmentationClass" / f"{s}.png" for s in stems]
    tags = torch.zeros(3, 20, dtype=torch.uint8)
    dataset = SegDataset(images, masks, tags, train_transform(64, 1.0, 1.0, False))
    image, mask, padding, _, index = dataset[1]  # 24×36 portrait in a 64² crop
    assert index == 1 and image.dtype == torch.float32 and abs(float(image[:, mask != 255].mean())) < 3
    assert int((mask != 255).sum()) == (24 - 2) * (36 - 2)  # the image minus its 255 border; padding 255
    assert _misaligned_share((denormalize(image) * 255).round().to(torch.uint8), mask) < 0.02
    # padding is told from the mask's own 255 (its 1-pixel border): the whole image, border included, is not
    assert padding.dtype == torch.bool and int((~padding).sum()) == 24 * 36
    assert bool((mask[padding] == 255).all()) and int(((mask == 255) & ~padding).sum()) == 24 * 36 - 22 * 34
    assert bool((image[:, padding].abs() < 0.02).all())  # padded with the mean colour: 0 after normalising
    whole = SegDataset(images, masks, tags, None)[1]
    assert whole[2].shape == (36, 24) and not bool(whole[2].any())  # a whole image has no padding


def test_disk_loader_batches_and_workers(voc: Path, tmp_path: Path) -> None:
    data = open_data(_voc_cfg(tmp_path, voc, **{"data.workers": 1}))
    loader = data.train_loader(2, torch.Generator().manual_seed(0), None, torch.device("cpu"))
    batches = list(loader)
    assert len(loader) == 2 and [len(b) for b in batches] == [2, 1]
    assert all(b.images.shape[1:] == (3, 24, 24) and b.valid is not None for b in batches)
    for b in batches:  # the OCR loss's valid pixels: never padding (image = the mean), never 255
        assert b.valid is not None and b.masks is not None
        padding = (b.images.abs() < 0.02).all(1)
        assert torch.equal(b.valid, b.masks != 255) and not b.valid[padding].any()
        got = b.padding if b.padding is not None else torch.zeros_like(padding)  # None: no crop was padded
        assert torch.equal(got, padding)
        include = b.ocr_valid(include_uncertain=True)  # the 255 border in, the padding still out
        assert torch.equal(include if include is not None else torch.ones_like(padding), ~padding)
        assert torch.equal(b.ocr_valid(include_uncertain=False), b.valid)
    assert sorted(int(i) for b in batches for i in b.index) == [0, 1, 2]


# ---------------------------------------------------------------- pseudo-mask folders


@pytest.fixture
def pseudo(voc: Path, tmp_path: Path) -> Path:
    return trees.write_pseudo(tmp_path / "pseudo", trees.VOC_ITEMS, trees.VOC_LISTS["train"])


def _masks_cfg(tmp_path: Path, voc: Path, pseudo: Path) -> TrialConfig:
    return _voc_cfg(tmp_path, voc, **{"stage1.source": "masks", "stage1.masks_dir": str(pseudo),
                                      "seg.init": "scratch"})


def test_good_pseudo_mask_folder_passes(voc: Path, pseudo: Path, tmp_path: Path) -> None:
    check_data(_masks_cfg(tmp_path, voc, pseudo))


def test_missing_pseudo_masks_are_counted_and_named(voc: Path, pseudo: Path, tmp_path: Path) -> None:
    for stem in ("2007_000001", "2007_000003"):
        (pseudo / f"{stem}.png").unlink()
    with pytest.raises(DataNotFoundError) as info:
        check_data(_masks_cfg(tmp_path, voc, pseudo))
    message = str(info.value)
    assert str(pseudo) in message and "2 of 3" in message and "2007_000001.png, 2007_000003.png" in message


@pytest.mark.parametrize(("damage", "expected"), [
    ("size", "is 20×20 but its image"),
    ("rgb", "is a RGB (colour) image"),
    ("value", "class index [21]"),
])
def test_bad_pseudo_masks_are_rejected(voc: Path, pseudo: Path, tmp_path: Path, damage: str,
                                       expected: str) -> None:
    path = pseudo / "2007_000002.png"
    _, mask = trees.scene(*trees.VOC_ITEMS["2007_000002"][0], (20,))
    if damage == "size":
        trees.write_mask(path, mask[:20, :20])
    elif damage == "rgb":
        trees.write_mask(path, mask, "RGB")
    else:
        mask[5, 5] = 21
        trees.write_mask(path, mask)
    with pytest.raises(DataError) as info:
        check_data(_masks_cfg(tmp_path, voc, pseudo))
    assert str(path) in str(info.value) and expected in str(info.value)


def test_missing_folder_and_root(voc: Path, tmp_path: Path) -> None:
    with pytest.raises(DataNotFoundError, match=r"stage1\.masks_dir must be a folder"):
        check_data(_masks_cfg(tmp_path, voc, tmp_path / "nowhere"))
    with pytest.raises(DataNotFoundError, match="nowhere"):
        check_data(_voc_cfg(tmp_path, tmp_path / "nowhere"))


def test_fingerprint_follows_the_folder_content(pseudo: Path) -> None:
    before = folder_fingerprint(pseudo)
    assert folder_fingerprint(pseudo) == before
    path = pseudo / "2007_000001.png"
    Image.open(path).save(path)  # rewritten, same pixels
    os.utime(path, ns=(1, 1))
    assert folder_fingerprint(pseudo) != before


def test_masks_config_needs_disk_data_and_no_cam_init() -> None:
    masks = {"data.name": "voc", "data.root": "/x", "cam.ink_threshold": 0, "stage1.source": "masks",
             "stage1.masks_dir": "/p"}
    assert from_flat(masks).seg_init == "scratch"  # seg.init: auto follows the source
    with pytest.raises(ValueError, match=r"seg\.init=scratch"):  # asked for, a CAM start is refused
        from_flat({**masks, "seg.init": "cam"})
    with pytest.raises(ValueError, match="digits"):
        from_flat({"stage1.source": "masks", "stage1.masks_dir": "/p", "seg.init": "scratch"})
    with pytest.raises(ValueError, match=r"stage1\.masks_dir is empty"):
        from_flat({"stage1.source": "masks"})
    assert from_flat({"data.name": "voc", "data.root": "/x"}).cam.ink_threshold == 0.45  # digits only: ignored


# ---------------------------------------------------------------- data.tags: where training tags come from


def test_tags_from_the_pseudo_masks_leave_a_missing_class_out_of_candidate(voc: Path, pseudo: Path,
                                                                           tmp_path: Path) -> None:
    from ocr import candidate_mask

    _, mask = trees.scene(*trees.VOC_ITEMS["2007_000001"][0], (1, 15))
    mask[mask == 15] = 255  # the pseudo-mask misses class 15 (person): uncertain where the truth has it
    trees.write_mask(pseudo / "2007_000001.png", mask)
    masks = {"stage1.source": "masks", "stage1.masks_dir": str(pseudo)}
    gt = open_data(_voc_cfg(tmp_path, voc, **masks))
    assert _voc_cfg(tmp_path, voc, **masks).data.tag_source == "gt"  # the default without data.labels
    from_masks = open_data(_voc_cfg(tmp_path, voc, **masks, **{"data.tags": "masks"}))
    assert gt.train_tags[0].tolist() == _tags((1, 15), 20)
    assert from_masks.train_tags[0].tolist() == _tags((1,), 20)  # np.unique(mask) minus 0 and 255
    assert from_masks.train_tags[1:].tolist() == gt.train_tags[1:].tolist()  # the others are complete
    assert from_masks.val_tags.tolist() == gt.val_tags.tolist()  # validation tags: the ground truth always
    assert bool(candidate_mask(gt.train_tags)[0, 15]) and not bool(candidate_mask(from_masks.train_tags)[0, 15])
    trees.write_mask(pseudo / "2007_000001.png", trees.scene(*trees.VOC_ITEMS["2007_000001"][0], (1, 15))[1])
    again = open_data(_voc_cfg(tmp_path, voc, **masks, **{"data.tags": "masks"}))  # an edited folder: read again
    assert again.train_tags[0].tolist() == _tags((1, 15), 20)


def test_tags_from_the_pseudo_masks_need_no_training_ground_truth(voc: Path, pseudo: Path, tmp_path: Path) -> None:
    for path in (voc / "SegmentationClass").glob("*.png"):
        if path.stem in trees.VOC_LISTS["train"] and path.stem not in trees.VOC_LISTS["val"]:
            path.unlink()
    masks = {"stage1.source": "masks", "stage1.masks_dir": str(pseudo)}
    with pytest.raises(DataNotFoundError, match=r"2 of 3 masks of train\.txt"):  # the tags would need them
        open_data(_voc_cfg(tmp_path, voc, **masks))
    data = open_data(_voc_cfg(tmp_path, voc, **masks, **{"data.tags": "masks"}))
    assert data.train_tags.tolist() == [_tags(trees.VOC_ITEMS[s][1], 20) for s in trees.VOC_LISTS["train"]]


@pytest.mark.parametrize(("values", "words"), [
    ({"data.tags": "masks"}, "set stage1.source=masks"),
    ({"data.tags": "file"}, "data.labels, which is empty"),
    ({"data.tags": "gt", "data.labels": "x.npy"}, "does not read it"),
    ({"data.tags": "pseudo"}, "choose one of ['auto', 'gt', 'masks', 'file']"),
])
def test_tag_sources_that_cannot_work_are_refused(voc: Path, tmp_path: Path, values: dict[str, str],
                                                  words: str) -> None:
    with pytest.raises(ValueError, match="data") as info:
        _voc_cfg(tmp_path, voc, **values)
    assert words in str(info.value)


def test_tag_source_default_follows_data_labels() -> None:
    assert from_flat({}).data.tag_source == "gt"
    assert from_flat({"data.labels": "cls_labels.npy"}).data.tag_source == "file"
    assert from_flat({"data.labels": "cls_labels.npy", "data.tags": "file"}).data.tag_source == "file"
