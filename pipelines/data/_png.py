"""Pseudo-masks as palette PNGs, the format WSSS methods exchange: pixel values are class indices."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np
from PIL import Image


def voc_palette() -> list[int]:
    """The PASCAL VOC colour map (256 RGB triples, flattened): index → colour, 255 = cream white."""
    palette = []
    for index in range(256):
        r = g = b = 0
        c = index
        for bit in range(8):
            r |= ((c >> 0) & 1) << (7 - bit)
            g |= ((c >> 1) & 1) << (7 - bit)
            b |= ((c >> 2) & 1) << (7 - bit)
            c >>= 3
        palette += [r, g, b]
    palette[255 * 3 : 256 * 3] = [224, 224, 192]
    return palette


_PALETTE = voc_palette()


def write_index_png(path: Path, mask: np.ndarray) -> None:
    """Save ``mask (H, W)`` uint8 as a palette PNG (its pixel values stay the class indices)."""
    image = Image.fromarray(np.ascontiguousarray(mask, dtype=np.uint8), mode="P")
    image.putpalette(_PALETTE)
    image.save(path, optimize=False)


def folder_fingerprint(folder: Path) -> str:
    """A hash of the names, sizes and modification times of a folder's ``.png`` files: it changes
    whenever a mask is added, removed or rewritten."""
    with os.scandir(folder) as entries:
        rows = sorted(f"{e.name}\t{e.stat().st_size}\t{e.stat().st_mtime_ns}" for e in entries
                      if e.name.endswith(".png") and e.is_file())
    return hashlib.sha256("\n".join(rows).encode()).hexdigest()[:16]
