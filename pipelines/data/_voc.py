"""PASCAL VOC 2012, with the SBD-augmented ``train_aug`` split, read from its own folder layout.

``root`` is the ``VOC2012`` folder (``JPEGImages/``, ``SegmentationClass/``, ``ImageSets/Segmentation/``
and, for ``train_aug``, ``SegmentationClassAug/``) or the ``VOCdevkit`` folder above it. Masks are read as
palette indices (0 = background, 1..20 the classes, 255 = the ignored border), never as colours.
"""

from __future__ import annotations

import logging
from pathlib import Path

from pipelines.data._disk import check_all_exist, read_list, require
from pipelines.data._types import DataNotFoundError, SplitFiles

log = logging.getLogger(__name__)

VOC_CLASSES = (
    "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
    "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train",
    "tvmonitor",
)
AUG_SPLIT = "train_aug"
_LAYOUT = "data.root must be the VOC2012 folder (JPEGImages/, SegmentationClass/, ImageSets/Segmentation/) " \
          "or the VOCdevkit folder holding it"


def voc_root(root: Path) -> Path:
    """The VOC2012 folder: ``root`` or ``root / "VOC2012"``, whichever holds ``JPEGImages/``; else raise."""
    require(root, "the data set folder does not exist", _LAYOUT)
    for candidate in (root, root / "VOC2012"):
        if (candidate / "JPEGImages").is_dir():
            return candidate
    raise DataNotFoundError(f"{root / 'JPEGImages'} not found (nor {root / 'VOC2012' / 'JPEGImages'}); "
                            f"{_LAYOUT}")


def _list_fix(root: Path, split: str) -> str:
    if split == AUG_SPLIT:
        return ("train_aug needs the SBD augmented masks: put SegmentationClassAug/ (index PNGs) and "
                f"ImageSets/Segmentation/train_aug.txt under {root}, or set data.train_split = 'train'")
    return f"set the split to one listed in {root / 'ImageSets' / 'Segmentation'} (train, val, trainval)"


def _mask_path(root: Path, stem: str, folders: list[str]) -> Path:
    """The first folder's mask that exists (the first folder's path when none does)."""
    paths = [root / folder / f"{stem}.png" for folder in folders]
    return next((p for p in paths if p.is_file()), paths[0])


def voc_files(root: Path, split: str, max_images: int, need_masks: bool = True) -> SplitFiles:
    """The files of a split in list order, the first ``max_images`` (all when 0).

    ``train_aug`` masks come from ``SegmentationClassAug/``; other splits' from ``SegmentationClass/``,
    falling back to ``SegmentationClassAug/`` for an image missing there. With ``need_masks=False`` (tags
    from a class-label file) a split whose masks are not all there has no ground truth.
    """
    fix = _list_fix(root, split)
    stems = read_list(root / "ImageSets" / "Segmentation" / f"{split}.txt", fix)
    stems = stems[:max_images] if max_images > 0 else stems
    images = [root / "JPEGImages" / f"{stem}.jpg" for stem in stems]
    check_all_exist(images, f"images listed in {split}.txt", "the list and JPEGImages/ disagree")
    folders = ["SegmentationClass", "SegmentationClassAug"]
    if split == AUG_SPLIT:
        folders.reverse()
    masks = [_mask_path(root, stem, folders) for stem in stems]
    if not need_masks and not all(m.is_file() for m in masks):
        return SplitFiles(tuple(stems), tuple(images), None)
    check_all_exist(masks, f"masks of {split}.txt (looked in {' and '.join(folders)})", fix)
    return SplitFiles(tuple(stems), tuple(images), tuple(masks))


def voc_pairs(root: Path, split: str, max_images: int) -> list[tuple[Path, Path]]:
    """``(image, mask)`` paths of a split in list order (see :func:`voc_files`)."""
    files = voc_files(root, split, max_images)
    return list(zip(files.images, files.masks or (), strict=True))
