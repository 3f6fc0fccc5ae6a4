"""Reading segmentation data sets stored as image files and index-PNG masks: path checks, masks.

:func:`decode_split` is the old in-memory loader (every image of a split squashed to one square uint8
tensor); trials stream instead (:mod:`._dataset`). It stays for ``benchmarks/data_loading.py``, which
measures the two side by side.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from pipelines.data._types import IGNORE, DataError, DataNotFoundError, Split

log = logging.getLogger(__name__)

INDEX_MODES = ("P", "L", "I", "I;16")  # PIL modes whose pixel values are class indices, not colours
MAX_WORKERS = 8  # decoding threads (PIL releases the GIL while it decodes and resizes)


def require(path: Path, what: str, fix: str) -> Path:
    """Return ``path`` if it exists, else raise :class:`DataNotFoundError` naming it, the need and the fix."""
    if not path.exists():
        raise DataNotFoundError(f"{path} not found: {what}; {fix}")
    return path


def read_list(path: Path, fix: str) -> list[str]:
    """The image stems of a split list, one per line (of a line of paths, the first path's stem)."""
    require(path, "the list of the split's images is missing", fix)
    stems = [Path(line.split()[0]).stem for line in path.read_text().splitlines() if line.strip()]
    if not stems:
        raise DataError(f"{path} lists no images; {fix}")
    return stems


def check_all_exist(paths: Sequence[Path], what: str, fix: str) -> None:
    """Raise :class:`DataNotFoundError` naming how many of ``paths`` are missing and the first of them."""
    missing = [p for p in paths if not p.is_file()]
    if missing:
        raise DataNotFoundError(f"{missing[0]} not found ({len(missing)} of {len(paths)} {what} missing); "
                                f"{fix}")


def _open(path: Path) -> Image.Image:
    try:
        image = Image.open(path)
        image.load()
    except (OSError, UnidentifiedImageError) as err:
        raise DataError(f"{path} cannot be read as an image ({err}); replace or remove the file") from err
    return image


def _square_rgb(image: Image.Image, size: int) -> np.ndarray:
    """``[3, size, size]`` uint8 RGB, resized bilinearly (grey and CMYK images are converted)."""
    resized = image.convert("RGB").resize((size, size), Image.Resampling.BILINEAR)
    return np.array(resized).transpose(2, 0, 1)  # [3, size, size], a writable copy


def read_mask(path: Path, num_classes: int) -> np.ndarray:
    """An index-PNG mask as ``[H, W]`` uint8 at full resolution, its values checked to be 0..C or 255."""
    mask = _open(path)
    if mask.mode not in INDEX_MODES:
        raise DataError(f"{path} is a {mask.mode} image, but masks must be palette or 8-bit PNGs whose "
                        f"values are class indices 0..{num_classes} (255 = ignore), not colours; "
                        "convert colour masks to index masks")
    values = np.asarray(mask)  # [H, W] the indices, whatever the palette's colours
    bad = np.unique(values[(values > num_classes) & (values != IGNORE)])
    if bad.size:
        raise DataError(f"{path} holds class index {bad.tolist()[:5]} outside 0..{num_classes} "
                        f"(255 = ignore); masks must hold contiguous class indices")
    return values.astype(np.uint8)


def mask_classes(path: Path, num_classes: int) -> np.ndarray:
    """Which classes ``1..C`` an index-PNG mask holds: ``[C]`` bool, its values checked as by
    :func:`read_mask`. Palette and 8-bit masks are counted by PIL's histogram, without decoding them
    into numpy (no large temporaries, so reading thousands keeps memory flat)."""
    with Image.open(path) as image:
        mode = image.mode
        counts = np.asarray(image.histogram()) if mode in ("P", "L") else None
    if counts is None:
        counts = np.bincount(read_mask(path, num_classes).reshape(-1), minlength=256)
    bad = np.flatnonzero(counts[num_classes + 1 : IGNORE]) + num_classes + 1
    if bad.size:
        raise DataError(f"{path} holds class index {bad.tolist()[:5]} outside 0..{num_classes} "
                        f"(255 = ignore); masks must hold contiguous class indices")
    return counts[1 : num_classes + 1] > 0


def _decode(pair: tuple[Path, Path], size: int,
            num_classes: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    image_path, mask_path = pair
    mask = read_mask(mask_path, num_classes)  # [H, W]
    image = _open(image_path)
    if image.size != (mask.shape[1], mask.shape[0]):
        raise DataError(f"{mask_path} is {mask.shape[1]}×{mask.shape[0]} but its image {image_path} is "
                        f"{image.size[0]}×{image.size[1]}; a mask must match its image")
    present = np.bincount(mask.reshape(-1), minlength=256)[1 : num_classes + 1] > 0  # [C]
    small = Image.fromarray(mask).resize((size, size), Image.Resampling.NEAREST)  # [S, S]
    return _square_rgb(image, size), np.array(small), present.astype(np.uint8)


def decode_split(pairs: Sequence[tuple[Path, Path]], size: int, num_classes: int) -> Split:
    """Decode ``(image, mask)`` file pairs, in order, into a :class:`Split` of ``size × size`` tensors."""
    n = len(pairs)
    images = torch.empty((n, 3, size, size), dtype=torch.uint8)  # [N, 3, S, S]
    masks = torch.empty((n, size, size), dtype=torch.uint8)  # [N, S, S]
    tags = torch.empty((n, num_classes), dtype=torch.uint8)  # [N, C]
    workers = min(MAX_WORKERS, os.cpu_count() or 1)
    pool = ThreadPoolExecutor(max_workers=workers)
    try:
        decoded = pool.map(lambda pair: _decode(pair, size, num_classes), pairs)
        for i, (image, mask, present) in enumerate(decoded):
            images[i], masks[i] = torch.from_numpy(image), torch.from_numpy(mask)
            tags[i] = torch.from_numpy(present)
            if (i + 1) % 2000 == 0:
                log.info("decoded %d / %d images", i + 1, n)
    finally:
        pool.shutdown(wait=True, cancel_futures=True)  # a bad file stops the rest from being decoded
    return Split(images=images, masks=masks, tags=tags)
