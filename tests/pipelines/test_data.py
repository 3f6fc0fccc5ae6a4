"""Tests of pipelines.data: digit scenes, the VOC and COCO readers, the cache."""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

import pipelines.data._load as load_module
from pipelines.config import CamConfig, DataConfig, DigitsConfig, TrialConfig
from pipelines.data import (
    COCO_CLASSES,
    VOC_CLASSES,
    DataError,
    DataNotFoundError,
    DiskData,
    SegData,
    Split,
    build_digits,
    cache_path,
    load_data,
    open_data,
    tags_from_masks,
)
from pipelines.data._classes import CONFUSABLE_PAIRS, active_pairs, object_count_probs, sample_classes
from pipelines.data._glyphs import glyph_pools, load_glyphs, upscale
from pipelines.data._types import class_pixel_counts

SMALL = DigitsConfig(train_size=64, val_size=16)
CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def small() -> SegData:
    return build_digits(SMALL)


def _splits(data: SegData) -> list[Split]:
    return list(data.splits.values())


def _same(a: SegData, b: SegData) -> bool:
    return a.class_names == b.class_names and all(
        torch.equal(getattr(x, f), getattr(y, f))
        for x, y in zip(_splits(a), _splits(b), strict=True) for f in ("images", "masks", "tags"))


# ---------------------------------------------------------------- digit scenes


def test_digits_shapes_and_dtypes(small: SegData) -> None:
    assert (small.name, small.num_classes, small.in_channels) == ("digits", 10, 1)
    assert small.class_names == tuple(f"digit{d}" for d in range(10))
    for split, n in ((small.train, 64), (small.val, 16)):
        assert len(split) == n
        assert split.images.shape == (n, 1, 48, 48) and split.images.dtype == torch.uint8
        assert split.masks.shape == (n, 48, 48) and split.masks.dtype == torch.uint8
        assert split.tags.shape == (n, 10) and split.tags.dtype == torch.uint8
        assert set(split.masks.unique().tolist()) <= set(range(11)) | {255}
        assert set(split.tags.unique().tolist()) <= {0, 1}


def test_digits_are_deterministic(small: SegData) -> None:
    assert _same(small, build_digits(SMALL))


def test_digits_seed_changes_scenes(small: SegData) -> None:
    other = build_digits(DigitsConfig(train_size=64, val_size=16, seed=1))
    assert not torch.equal(small.train.images, other.train.images)


def test_val_does_not_depend_on_train_size(small: SegData) -> None:
    other = build_digits(DigitsConfig(train_size=32, val_size=16))
    assert torch.equal(small.val.images, other.val.images)
    assert torch.equal(small.val.masks, other.val.masks)


@pytest.mark.parametrize(("seed", "fraction"), [(0, 0.8), (3, 0.5), (7, 0.0), (7, 1.0)])
def test_glyph_pools_are_disjoint(seed: int, fraction: float) -> None:
    _, targets = load_glyphs()
    train, val, test = glyph_pools(targets, 10, fraction, seed)
    for digit, pools in enumerate(zip(train, val, test, strict=True)):
        members = [set(pool.tolist()) for pool in pools]
        assert all(len(pool) >= 1 for pool in pools)
        assert not (members[0] & members[1] or members[0] & members[2] or members[1] & members[2])
        assert sorted(set().union(*members)) == np.flatnonzero(targets == digit).tolist()
        assert all((targets[pool] == digit).all() for pool in pools)
    if fraction == 0.8:  # the held-out fifth is halved: val and test differ by at most one glyph per digit
        assert all(abs(len(v) - len(t)) <= 1 for v, t in zip(val, test, strict=True))


def test_the_test_split_is_held_out_and_optional() -> None:
    cfg = DigitsConfig(train_size=32, val_size=16, test_size=12)
    data = build_digits(cfg)
    assert data.test is not None and len(data.test) == 12
    assert not torch.equal(data.test.images[:12], data.val.images[:12])
    without = build_digits(DigitsConfig(train_size=32, val_size=16, test_size=0))
    assert without.test is None
    assert torch.equal(without.val.images, data.val.images)  # val does not depend on the test split
    assert torch.equal(without.train.images, data.train.images)


@pytest.mark.parametrize("tag_min_pixels", [10, 80])
def test_tags_agree_with_masks(tag_min_pixels: int) -> None:
    cfg = DigitsConfig(train_size=64, val_size=16, tag_min_pixels=tag_min_pixels)
    for split in _splits(build_digits(cfg)):
        counts = class_pixel_counts(split.masks, 10)[:, 1:]  # [N, C]
        tagged = split.tags.bool()
        assert (counts[tagged] >= tag_min_pixels).all()
        assert (counts[~tagged] == 0).all()
        assert torch.equal(split.tags, tags_from_masks(split.masks, 10))


def test_small_fragments_become_ignore() -> None:
    data = build_digits(DigitsConfig(train_size=64, val_size=16, tag_min_pixels=80))
    assert (data.train.masks == 255).any()


def test_exclusive_pairs_never_share_an_image() -> None:
    data = build_digits(DigitsConfig(train_size=256, val_size=16, cooccurrence="exclusive"))
    for split in _splits(data):
        for a, b in CONFUSABLE_PAIRS:
            assert not (split.tags[:, a].bool() & split.tags[:, b].bool()).any(), (a, b)


@pytest.mark.parametrize("mode", ["exclusive", "paired", "random"])
def test_sample_classes_follows_the_rule(mode: str) -> None:
    cfg = DigitsConfig(cooccurrence=mode, pair_prob=1.0, person_prob=0.0)
    rng = np.random.default_rng(0)
    draws = [sample_classes(rng, 3, cfg, active_pairs(10)) for _ in range(500)]
    assert all(len(d) == 3 == len(set(d)) and 0 not in d for d in draws)
    with_pair = [any(a in d and b in d for a, b in CONFUSABLE_PAIRS) for d in draws]
    expected = {"exclusive": 0.0, "paired": 1.0}.get(mode)
    if expected is None:
        assert 0.0 < np.mean(with_pair) < 1.0
    else:
        assert np.mean(with_pair) == expected


def test_person_joins_with_its_probability() -> None:
    cfg = DigitsConfig(person_prob=0.3)
    rng = np.random.default_rng(1)
    share = np.mean([0 in sample_classes(rng, 2, cfg, active_pairs(10)) for _ in range(2000)])
    assert abs(share - 0.3) < 0.04


def test_fewer_classes_use_the_first_digits() -> None:
    data = build_digits(DigitsConfig(num_classes=4, train_size=32, val_size=8))
    assert data.class_names == ("digit0", "digit1", "digit2", "digit3")
    assert data.train.tags.shape == (32, 4)
    assert set(data.train.masks.unique().tolist()) <= {0, 1, 2, 3, 4, 255}


def test_object_count_probs() -> None:
    assert np.allclose(object_count_probs(1, 3), [0.3, 0.4, 0.3])
    assert np.allclose(object_count_probs(2, 2), [1.0])


def test_upscale_matches_torch_bilinear() -> None:
    glyphs = load_glyphs()[0][:20]
    for size in (8, 14, 22, 40):
        ref = F.interpolate(torch.from_numpy(glyphs.copy()).unsqueeze(1), size=(size, size),
                            mode="bilinear", align_corners=False).squeeze(1).numpy()
        assert np.allclose(upscale(glyphs, size), ref, atol=1e-5)


def test_tags_from_masks_by_hand() -> None:
    masks = torch.tensor([[[0, 1], [255, 1]], [[3, 3], [0, 255]], [[0, 0], [0, 0]]], dtype=torch.uint8)
    assert tags_from_masks(masks, 3).tolist() == [[1, 0, 0], [0, 0, 1], [0, 0, 0]]


def test_split_rejects_bad_tensors() -> None:
    with pytest.raises(ValueError, match="images"):
        Split(torch.zeros(2, 1, 4, 4), torch.zeros(2, 4, 4, dtype=torch.uint8),
              torch.zeros(2, 3, dtype=torch.uint8))
    with pytest.raises(ValueError, match="disagree"):
        Split(torch.zeros(2, 1, 4, 4, dtype=torch.uint8), torch.zeros(3, 4, 4, dtype=torch.uint8),
              torch.zeros(2, 3, dtype=torch.uint8))


# ---------------------------------------------------------------- the cache


def test_load_data_builds_once_then_reads_the_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[DigitsConfig] = []
    real = load_module.build_digits

    def counting(cfg: DigitsConfig) -> SegData:
        calls.append(cfg)
        return real(cfg)

    monkeypatch.setattr(load_module, "build_digits", counting)
    cfg = DataConfig(digits=SMALL)
    first = load_data(cfg, tmp_path)
    second = load_data(cfg, tmp_path)
    assert len(calls) == 1
    assert cache_path(cfg, tmp_path).is_file() and cache_path(cfg, tmp_path).parent == tmp_path / "data"
    assert _same(first, second) and _same(first, build_digits(SMALL))
    load_data(DataConfig(digits=DigitsConfig(train_size=64, val_size=16, seed=5)), tmp_path)
    assert len(calls) == 2


def test_cache_key_ignores_disk_fields_for_digits(tmp_path: Path) -> None:
    a = cache_path(DataConfig(digits=SMALL), tmp_path)
    assert a == cache_path(DataConfig(digits=SMALL, crop_size=64, max_images=3), tmp_path)
    assert a != cache_path(DataConfig(digits=DigitsConfig(train_size=65, val_size=16)), tmp_path)


# ---------------------------------------------------------------- VOC and COCO trees

PALETTE = [v for i in range(256) for v in ((i * 37) % 256, (i * 91) % 256, (i * 53) % 256)]


def _write_image(path: Path, width: int, height: int, seed: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path, quality=95)


def _mask(width: int, height: int, classes: tuple[int, ...]) -> np.ndarray:
    """A mask with a 255 border and one block of each class, side by side."""
    mask = np.zeros((height, width), dtype=np.uint8)
    for k, c in enumerate(classes):
        mask[4:12, 4 + 8 * k : 12 + 8 * k] = c
    mask[[0, -1], :] = 255
    mask[:, [0, -1]] = 255
    return mask


def _write_mask(path: Path, mask: np.ndarray, mode: str = "P") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    height, width = mask.shape
    image = Image.frombytes(mode, (width, height), np.ascontiguousarray(mask).tobytes())
    if mode == "P":
        image.putpalette(PALETTE)  # colours unlike the indices: reading colours would fail the tests
    image.save(path)


VOC_ITEMS = {  # stem: (width, height, classes, mask folder)
    "2007_000001": (32, 32, (1, 15), "SegmentationClass"),
    "2007_000002": (32, 32, (20,), "SegmentationClass"),
    "2007_000003": (40, 24, (5, 9, 12), "SegmentationClassAug"),
}
VOC_LISTS = {"train": ["2007_000001", "2007_000002"], "val": ["2007_000002"],
             "train_aug": ["2007_000003", "2007_000001", "2007_000002"]}


@pytest.fixture
def voc_root(tmp_path: Path) -> Path:
    """A tiny VOCdevkit/VOC2012 tree: palette masks in SegmentationClass, an L mask in the Aug folder."""
    root = tmp_path / "VOCdevkit" / "VOC2012"
    for i, (stem, (w, h, classes, folder)) in enumerate(VOC_ITEMS.items()):
        _write_image(root / "JPEGImages" / f"{stem}.jpg", w, h, seed=i)
        mode = "P" if folder == "SegmentationClass" else "L"
        _write_mask(root / folder / f"{stem}.png", _mask(w, h, classes), mode)
    for split, stems in VOC_LISTS.items():
        path = root / "ImageSets" / "Segmentation" / f"{split}.txt"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("".join(f"{s}\n" for s in stems))
    return root


def _voc(root: Path, **kw: Any) -> DataConfig:
    return DataConfig(**{"name": "voc", "root": str(root), "train_split": "train", "workers": 0, **kw})


def _open(cfg: DataConfig, cache: Path) -> DiskData:
    data = open_data(TrialConfig(data=cfg, cam=CamConfig(ink_threshold=0.0), cache_dir=str(cache)))
    assert isinstance(data, DiskData)
    return data


def _masks(data: DiskData, split: str) -> list[list[list[int]]]:
    loader = data.train_images(CPU) if split == "train" else data.val_loader(1, CPU)
    return [b.masks[0].tolist() for b in loader if b.masks is not None]


def _tags(classes: tuple[int, ...], num_classes: int) -> list[int]:
    return [int(c + 1 in classes) for c in range(num_classes)]


def test_voc_reads_palette_indices(voc_root: Path, tmp_path: Path) -> None:
    data = _open(_voc(voc_root), tmp_path / "cache")
    assert (data.name, data.class_names, data.in_channels) == ("voc", VOC_CLASSES, 3)
    assert (len(data.train), len(data.val)) == (2, 1)
    masks = _masks(data, "train")
    for i, stem in enumerate(VOC_LISTS["train"]):
        w, h, classes, _ = VOC_ITEMS[stem]
        assert masks[i] == _mask(w, h, classes).tolist()  # full resolution, indices not colours
        assert data.train_tags[i].tolist() == _tags(classes, 20)


@pytest.mark.parametrize("level", ["VOCdevkit", "VOC2012"])
def test_voc_root_may_be_devkit_or_voc2012(voc_root: Path, tmp_path: Path, level: str) -> None:
    root = voc_root if level == "VOC2012" else voc_root.parent
    assert len(_open(_voc(root, val_split="train"), tmp_path / "cache").val) == 2


def test_voc_train_aug_reads_the_aug_folder_and_caps(voc_root: Path, tmp_path: Path) -> None:
    data = _open(_voc(voc_root, train_split="train_aug", max_images=2), tmp_path / "c")
    assert len(data.train) == 2
    assert data.train_tags[0].tolist() == _tags((5, 9, 12), 20)  # first in list order, from the Aug folder
    assert _masks(data, "train")[0] == _mask(40, 24, (5, 9, 12)).tolist()
    assert data.train_tags[1].tolist() == _tags((1, 15), 20)


def _voc_error(cfg: DataConfig, cache: Path) -> str:
    with pytest.raises(DataError) as info:
        _open(cfg, cache)
    assert not list(cache.glob("data/*.pt"))
    return str(info.value)


def test_voc_missing_root(tmp_path: Path) -> None:
    message = _voc_error(_voc(tmp_path / "nowhere"), tmp_path / "cache")
    assert "nowhere" in message and "VOC2012" in message
    with pytest.raises(FileNotFoundError):
        _open(_voc(tmp_path / "nowhere"), tmp_path / "cache")
    with pytest.raises(DataNotFoundError):
        _open(_voc(tmp_path), tmp_path / "cache")  # a folder without JPEGImages/


def test_voc_missing_train_aug_list(voc_root: Path, tmp_path: Path) -> None:
    (voc_root / "ImageSets" / "Segmentation" / "train_aug.txt").unlink()
    message = _voc_error(_voc(voc_root, train_split="train_aug"), tmp_path / "cache")
    assert "train_aug.txt not found" in message and "SBD" in message and "SegmentationClassAug" in message


def test_voc_listed_image_missing(voc_root: Path, tmp_path: Path) -> None:
    (voc_root / "JPEGImages" / "2007_000002.jpg").unlink()
    message = _voc_error(_voc(voc_root), tmp_path / "cache")
    assert "2007_000002.jpg not found" in message


def test_voc_mask_missing(voc_root: Path, tmp_path: Path) -> None:
    (voc_root / "SegmentationClass" / "2007_000002.png").unlink()
    assert "2007_000002.png not found" in _voc_error(_voc(voc_root), tmp_path / "cache")


@pytest.mark.parametrize(("value", "mode"), [(21, "P"), (42, "L")])
def test_voc_mask_class_out_of_range(voc_root: Path, tmp_path: Path, value: int, mode: str) -> None:
    _write_mask(voc_root / "SegmentationClass" / "2007_000001.png", _mask(32, 32, (1, value)), mode)
    message = _voc_error(_voc(voc_root), tmp_path / "cache")
    assert "2007_000001.png" in message and str(value) in message


def test_voc_colour_mask_is_rejected(voc_root: Path, tmp_path: Path) -> None:
    path = voc_root / "SegmentationClass" / "2007_000001.png"
    Image.open(path).convert("RGB").save(path)
    assert "RGB" in _voc_error(_voc(voc_root), tmp_path / "cache")


COCO_ITEMS = {  # (folder, stem): (width, height, classes)
    ("train2014", "COCO_train2014_000000000009"): (32, 32, (1, 80)),
    ("train2014", "COCO_train2014_000000000025"): (48, 20, (45,)),
    ("val2014", "COCO_val2014_000000000042"): (32, 32, (3, 7, 60)),
}


@pytest.fixture
def coco_root(tmp_path: Path) -> Path:
    root = tmp_path / "coco"
    for i, ((folder, stem), (w, h, classes)) in enumerate(COCO_ITEMS.items()):
        _write_image(root / folder / f"{stem}.jpg", w, h, seed=i)
        _write_mask(root / "SegmentationClass" / folder / f"{stem}.png", _mask(w, h, classes), "L")
    return root


def _coco(root: Path, **kw: Any) -> DataConfig:
    return DataConfig(**{"name": "coco", "root": str(root), "train_split": "train", "workers": 0, **kw})


@pytest.mark.parametrize(("train", "val"), [("train", "val"), ("train2014", "val2014")])
def test_coco_reads_tree(coco_root: Path, tmp_path: Path, train: str, val: str) -> None:
    data = _open(_coco(coco_root, train_split=train, val_split=val), tmp_path / "cache")
    assert (data.name, data.class_names) == ("coco", COCO_CLASSES)
    assert (len(data.train), len(data.val)) == (2, 1)
    assert data.train_tags.tolist() == [_tags((1, 80), 80), _tags((45,), 80)]
    assert _masks(data, "val")[0] == _mask(32, 32, (3, 7, 60)).tolist()


def test_coco_cap(coco_root: Path, tmp_path: Path) -> None:
    data = _open(_coco(coco_root, max_images=1), tmp_path / "cache")
    assert len(data.train) == 1 and data.train_tags[0].tolist() == _tags((1, 80), 80)


def test_coco_errors(coco_root: Path, tmp_path: Path) -> None:
    assert "train_aug" in _voc_error(_coco(coco_root, train_split="train_aug"), tmp_path / "c")
    assert "SegmentationClass" in _voc_error(_coco(tmp_path / "empty"), tmp_path / "c")
    (coco_root / "val2014" / "COCO_val2014_000000000042.jpg").unlink()
    assert "COCO_val2014_000000000042.jpg not found" in _voc_error(_coco(coco_root), tmp_path / "c")


def test_coco_category_ids_are_rejected(coco_root: Path, tmp_path: Path) -> None:
    stem = "COCO_train2014_000000000009"
    _write_mask(coco_root / "SegmentationClass" / "train2014" / f"{stem}.png", _mask(32, 32, (1, 90)), "L")
    assert "90" in _voc_error(_coco(coco_root), tmp_path / "c")


def test_every_class_list_is_unique() -> None:
    assert len(set(VOC_CLASSES)) == 20 and len(set(COCO_CLASSES)) == 80
    assert list(itertools.islice(COCO_CLASSES, 3)) == ["person", "bicycle", "car"]
