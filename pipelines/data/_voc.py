"""PASCAL VOC 2012, with the SBD-augmented ``train_aug`` split, read from its own folder layout.

``root`` is the ``VOC2012`` folder (``JPEGImages/``, ``SegmentationClass/``, ``ImageSets/Segmentation/``
and, for ``train_aug``, ``SegmentationClassAug/``) or the ``VOCdevkit`` folder above it. Masks are read as
palette indices (0 = background, 1..20 the classes, 255 = the ignored border), never as colours.
"""

from __future__ import annotations

import logging
from pathlib import Path

from pipelines.config import DataConfig
from pipelines.data._disk import check_all_exist, decode_split, read_list, require
from pipelines.data._types import DataNotFoundError, SegData, Split

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


def voc_pairs(root: Path, split: str, max_images: int) -> list[tuple[Path, Path]]:
    """``(image, mask)`` paths of a split in list order, the first ``max_images`` (all when 0).

    ``train_aug`` masks come from ``SegmentationClassAug/``; other splits' from ``SegmentationClass/``,
    falling back to ``SegmentationClassAug/`` for an image missing there.
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
    check_all_exist(masks, f"masks of {split}.txt (looked in {' and '.join(folders)})", fix)
    return list(zip(images, masks, strict=True))


def _read_split(root: Path, split: str, cfg: DataConfig) -> Split:
    pairs = voc_pairs(root, split, cfg.max_images)
    log.info("reading VOC %s: %d images at %d×%d", split, len(pairs), cfg.image_size, cfg.image_size)
    return decode_split(pairs, cfg.image_size, len(VOC_CLASSES))


def build_voc(cfg: DataConfig) -> SegData:
    """Read PASCAL VOC 2012 from ``cfg.root``: splits ``cfg.train_split`` / ``cfg.val_split``, resized
    to ``cfg.image_size`` square, each capped at ``cfg.max_images`` (0 = all).

    Raises:
        DataError: (a ``ValueError``; :class:`DataNotFoundError` is also a ``FileNotFoundError``) naming
            the path, what is missing or wrong, and how to fix it.
    """
    root = voc_root(Path(cfg.root).expanduser())
    return SegData(name="voc", class_names=VOC_CLASSES, train=_read_split(root, cfg.train_split, cfg),
                   val=_read_split(root, cfg.val_split, cfg))
