"""A generic layout for any segmentation data set: ``images/``, ``masks/``, split lists, class names.

``root/images/<id>.jpg`` (or ``.jpeg``/``.png``), ``root/masks/<id>.png`` (index PNGs: 0 background,
1..C the classes, 255 ignore), ``root/<split>.txt`` (one id per line) and ``root/classes.txt`` (the C
foreground class names, one per line, in index order).
"""

from __future__ import annotations

import os
from pathlib import Path

from pipelines.data._disk import check_all_exist, read_list, require
from pipelines.data._types import DataError, SplitFiles

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")
_LAYOUT = ("data.root must hold images/, masks/ (index PNGs), classes.txt (one class name per line) and "
           "a <split>.txt list of image ids per split")


def folder_class_names(root: Path) -> tuple[str, ...]:
    """The foreground class names of ``root/classes.txt`` (blank lines skipped)."""
    path = require(root / "classes.txt", "the class names are missing", _LAYOUT)
    names = tuple(line.strip() for line in path.read_text().splitlines() if line.strip())
    if not names:
        raise DataError(f"{path} lists no class names; {_LAYOUT}")
    if len(set(names)) != len(names):
        raise DataError(f"{path} lists a class name twice; each line must name one class")
    if len(names) > 254:
        raise DataError(f"{path} lists {len(names)} classes; index PNGs hold at most 254 (255 = ignore)")
    return names


def _image_paths(image_dir: Path) -> dict[str, Path]:
    with os.scandir(image_dir) as entries:
        return {Path(e.name).stem: Path(e.path) for e in entries
                if e.name.lower().endswith(IMAGE_SUFFIXES)}


def folder_files(root: Path, split: str, max_images: int, need_masks: bool = True) -> SplitFiles:
    """The files of ``root/<split>.txt`` in list order, the first ``max_images`` (all when 0)."""
    require(root, "the data set folder does not exist", _LAYOUT)
    stems = read_list(root / f"{split}.txt", f"write {root / f'{split}.txt'} (one image id per line)")
    stems = stems[:max_images] if max_images > 0 else stems
    image_dir = require(root / "images", "the images are missing", _LAYOUT)
    found = _image_paths(image_dir)
    images = [found.get(stem, image_dir / f"{stem}.jpg") for stem in stems]
    check_all_exist(images, f"images listed in {split}.txt", f"put them in {image_dir} (.jpg or .png)")
    masks = [root / "masks" / f"{stem}.png" for stem in stems]
    if not need_masks and not all(m.is_file() for m in masks):
        return SplitFiles(tuple(stems), tuple(images), None)
    check_all_exist(masks, f"masks listed in {split}.txt", f"put index PNGs in {root / 'masks'}")
    return SplitFiles(tuple(stems), tuple(images), tuple(masks))
