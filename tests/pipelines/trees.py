"""Tiny data-set trees written into a test's folder: VOC, COCO and folder layouts, pseudo-mask folders.

Images differ in size (landscape, portrait, square); each mask is derived from its image: the image
is a dark background with one bright block per class whose grey level encodes the class (``level``), so
a test can recompute the mask from the image after any geometric transform.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

PALETTE = [v for i in range(256) for v in ((i * 37) % 256, (i * 91) % 256, (i * 53) % 256)]
SIZES = ((40, 28), (24, 36), (32, 32))  # (width, height): landscape, portrait, square


def level(cls: int) -> int:
    """The grey level of class ``cls``'s block (classes 1..20 → 60..250)."""
    return 50 + 10 * cls


def class_of(grey: np.ndarray) -> np.ndarray:
    """The class a grey level encodes (0 for the dark background)."""
    return np.where(grey < 55, 0, np.clip(np.round((grey - 50) / 10), 1, 20)).astype(np.int64)


def scene(width: int, height: int, classes: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray]:
    """An RGB image ``(H, W, 3)`` uint8 and its mask ``(H, W)`` uint8: one block per class, a 255 border."""
    mask = np.zeros((height, width), dtype=np.uint8)
    block = max(7, width // 8)
    for k, c in enumerate(classes):
        mask[3 : height - 3, 3 + (block + 2) * k : 3 + (block + 2) * k + block] = c
    grey = np.vectorize(lambda c: level(c) if c else 20)(mask).astype(np.uint8)
    mask[[0, -1], :] = 255
    mask[:, [0, -1]] = 255
    return np.repeat(grey[:, :, None], 3, axis=2), mask


def write_mask(path: Path, mask: np.ndarray, mode: str = "P") -> None:
    """Save an index mask as a palette (``P``) or 8-bit (``L``) PNG, or as ``RGB`` colours."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if mode == "RGB":
        Image.fromarray(np.repeat(mask[:, :, None], 3, axis=2)).save(path)
        return
    image = Image.frombytes(mode, mask.shape[::-1], np.ascontiguousarray(mask).tobytes())
    if mode == "P":
        image.putpalette(PALETTE)  # colours unlike the indices: reading colours would fail the tests
    image.save(path)


def write_pair(image_path: Path, mask_path: Path | None, size: tuple[int, int], classes: tuple[int, ...],
               mode: str = "P") -> np.ndarray:
    """Write one image (PNG-compressed JPEG is lossy: store ``.jpg`` at quality 100) and its mask."""
    image, mask = scene(*size, classes)
    image_path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(image).save(image_path, quality=100)
    if mask_path is not None:
        write_mask(mask_path, mask, mode)
    return mask


VOC_ITEMS = {  # id: (size, classes)
    "2007_000001": (SIZES[0], (1, 15)),
    "2007_000002": (SIZES[1], (20,)),
    "2007_000003": (SIZES[2], (5, 9, 12)),
    "2007_000004": (SIZES[0], (7,)),
}
VOC_LISTS = {"train": ["2007_000001", "2007_000002", "2007_000003"], "val": ["2007_000004", "2007_000002"]}


def write_voc(root: Path) -> Path:
    """A ``VOCdevkit/VOC2012`` tree; returns the ``VOC2012`` folder."""
    voc = root / "VOCdevkit" / "VOC2012"
    for stem, (size, classes) in VOC_ITEMS.items():
        write_pair(voc / "JPEGImages" / f"{stem}.jpg", voc / "SegmentationClass" / f"{stem}.png", size, classes)
    lists = voc / "ImageSets" / "Segmentation"
    lists.mkdir(parents=True, exist_ok=True)
    for split, stems in VOC_LISTS.items():
        (lists / f"{split}.txt").write_text("".join(f"{s}\n" for s in stems))
    return voc


COCO_ITEMS = {  # (folder, id): (size, classes)
    ("train2014", "COCO_train2014_000000000009"): (SIZES[0], (1, 80)),
    ("train2014", "COCO_train2014_000000000025"): (SIZES[1], (45,)),
    ("val2014", "COCO_val2014_000000000042"): (SIZES[2], (3, 7, 60)),
}


def write_coco(root: Path) -> Path:
    """A COCO 2014 tree (8-bit masks)."""
    for (folder, stem), (size, classes) in COCO_ITEMS.items():
        image, mask = scene(*size, tuple(min(c, 20) for c in classes))
        for c in classes:
            mask[mask == min(c, 20)] = c
        (root / folder).mkdir(parents=True, exist_ok=True)
        Image.fromarray(image).save(root / folder / f"{stem}.jpg", quality=100)
        write_mask(root / "SegmentationClass" / folder / f"{stem}.png", mask, "L")
    return root


FOLDER_CLASSES = ("cat", "dog", "kite")
FOLDER_ITEMS = {"a": (SIZES[0], (1, 3)), "b": (SIZES[1], (2,)), "c": (SIZES[2], (1, 2)), "d": (SIZES[0], (3,))}


def write_folder(root: Path, train_masks: bool = True) -> Path:
    """A folder layout: ``images/`` (PNG and JPEG), ``masks/``, ``train.txt``/``val.txt``, ``classes.txt``."""
    for i, (stem, (size, classes)) in enumerate(FOLDER_ITEMS.items()):
        suffix = ".png" if i % 2 else ".jpg"
        has_mask = train_masks or stem == "d"
        write_pair(root / "images" / f"{stem}{suffix}", root / "masks" / f"{stem}.png" if has_mask else None,
                   size, classes)
    (root / "classes.txt").write_text("\n".join(FOLDER_CLASSES) + "\n")
    (root / "train.txt").write_text("a\nb\nc\n")
    (root / "val.txt").write_text("d\n")
    return root


def write_pseudo(folder: Path, items: dict[str, tuple[tuple[int, int], tuple[int, ...]]],
                 ids: list[str]) -> Path:
    """Pseudo-masks for ``ids``: the true masks with an uncertain (255) band in the middle rows."""
    for stem in ids:
        size, classes = items[stem]
        _, mask = scene(*size, classes)
        mask[mask.shape[0] // 2 - 2 : mask.shape[0] // 2 + 2, :] = 255
        write_mask(folder / f"{stem}.png", mask, "P")
    return folder
