"""Up-front checks of a trial's data: cheap enough to run before anything starts (file headers only,
and the values of a few masks), each failure a :class:`DataError` naming the path and the fix."""

from __future__ import annotations

import logging
from pathlib import Path

from PIL import Image, UnidentifiedImageError

from pipelines.config import TrialConfig
from pipelines.data._disk import INDEX_MODES, read_mask
from pipelines.data._labels import read_labels
from pipelines.data._open import class_names_of, split_files
from pipelines.data._types import DataError, DataNotFoundError, SplitFiles

log = logging.getLogger(__name__)
VALUE_SAMPLE = 16  # masks whose pixel values the up-front check reads in full (every mask is read later)
_FORMAT = ("pseudo-masks must be index or palette PNGs named <image id>.png, of their image's size, "
           "holding 0 (background), 1..C (the classes) and 255 (uncertain)")


def _header(path: Path) -> tuple[str, tuple[int, int]]:
    """The mode and size of an image file from its header (the pixels are not decoded)."""
    try:
        with Image.open(path) as image:
            return image.mode, image.size
    except (OSError, UnidentifiedImageError) as err:
        raise DataError(f"{path} cannot be read as an image ({err}); replace or remove the file") from err


def check_mask_folder(folder: Path, files: SplitFiles, num_classes: int) -> None:
    """Check a pseudo-mask folder against a split: one mask per id, index PNG, its image's size, and
    (for the first :data:`VALUE_SAMPLE` masks) values in 0..C or 255.

    Raises:
        DataNotFoundError: the folder or some masks are missing (how many, and the first few ids).
        DataError: a colour mask, a mask of the wrong size, or a value outside 0..C and 255.
    """
    if not folder.is_dir():
        raise DataNotFoundError(f"{folder} not found: stage1.masks_dir must be a folder of pseudo-mask "
                                "PNGs (one <image id>.png per training image); fix the path")
    masks = [folder / f"{i}.png" for i in files.ids]
    missing = [i for i, m in zip(files.ids, masks, strict=True) if not m.is_file()]
    if missing:
        raise DataNotFoundError(f"{folder} lacks the pseudo-masks of {len(missing)} of {len(masks)} training "
                                f"images (first: {', '.join(f'{i}.png' for i in missing[:5])}); write them "
                                "with the method that made the others, or cap data.max_images")
    for mask, image in zip(masks, files.images, strict=True):
        _check_one(mask, image, num_classes)
    for mask in masks[:VALUE_SAMPLE]:
        read_mask(mask, num_classes)


def _check_one(mask: Path, image: Path, num_classes: int) -> None:
    mode, size = _header(mask)
    if mode not in INDEX_MODES:
        raise DataError(f"{mask} is a {mode} (colour) image, but {_FORMAT}; convert colour masks to index "
                        f"PNGs (class indices 0..{num_classes} as pixel values, e.g. PIL's mode 'P')")
    image_size = _header(image)[1]
    if size != image_size:
        raise DataError(f"{mask} is {size[0]}×{size[1]} but its image {image} is {image_size[0]}×"
                        f"{image_size[1]}; {_FORMAT} (write the masks at the original image resolution)")


def check_data(cfg: TrialConfig) -> None:
    """Check a trial's data before it starts: roots, split lists, images and masks listed, the class
    names, the class-label file and, with ``stage1.source = masks``, the pseudo-mask folder.

    Digit scenes are generated and need no check.

    Raises:
        DataError: (a ``ValueError``; :class:`DataNotFoundError` is also a ``FileNotFoundError``) naming
            the path, what is missing or wrong, and how to fix it.
    """
    d = cfg.data
    if not d.on_disk:
        return
    names = class_names_of(d)
    train = split_files(d, d.train_split, "train_split", need_masks=d.tag_source == "gt")
    val = split_files(d, d.val_split, "val_split")
    if d.tag_source == "file":
        read_labels(Path(d.labels).expanduser(), train.ids, names)
    for masks in (train.masks, val.masks):
        for path in (masks or ())[:VALUE_SAMPLE]:
            read_mask(path, len(names))
    if cfg.stage1.source == "masks":
        check_mask_folder(Path(cfg.stage1.masks_dir).expanduser(), train, len(names))
    log.info("data checked: %d train, %d val images", len(train), len(val))
