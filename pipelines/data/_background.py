"""Backgrounds of the digit scenes: smooth noise, and in some images a grey crop of a real photo.

The photos are scikit-learn's two bundled sample images (``load_sample_images``). Every random number
comes from the numpy generator passed in; torch only resamples, which is deterministic on the CPU.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import torch
import torch.nn.functional as F

SMOOTH_GRID = 5  # the smooth noise is bilinear upsampling of a SMOOTH_GRID² random grid
LEVEL_RANGE = (0.05, 0.30)  # mean grey level of a smooth background
RIPPLE_RANGE = (0.03, 0.15)  # amplitude of its variation around that level
CLUTTER_GAIN = (0.25, 0.65)  # a photo crop's grey values (0..1) are multiplied by this
CROP_RANGE = (0.25, 1.0)  # crop side as a share of the photo's shorter side


@lru_cache(maxsize=1)
def load_photos() -> torch.Tensor:
    """scikit-learn's sample photos, grey, halved with area averaging: ``[P, 1, h, w]`` float32 in 0..1."""
    from sklearn.datasets import load_sample_images

    rgb = np.stack(load_sample_images().images).astype(np.float32) / 255.0  # [P, h0, w0, 3]
    grey = rgb @ np.array([0.299, 0.587, 0.114], dtype=np.float32)  # [P, h0, w0]
    return F.avg_pool2d(torch.from_numpy(grey).unsqueeze(1), 2)  # [P, 1, h, w]


def smooth_noise(rng: np.random.Generator, n: int, size: int) -> np.ndarray:
    """``[n, size, size]`` float32 smooth grey backgrounds."""
    grid = rng.uniform(-1.0, 1.0, (n, 1, SMOOTH_GRID, SMOOTH_GRID)).astype(np.float32)
    level = rng.uniform(*LEVEL_RANGE, (n, 1, 1)).astype(np.float32)
    ripple = rng.uniform(*RIPPLE_RANGE, (n, 1, 1)).astype(np.float32)
    up = F.interpolate(torch.from_numpy(grid), size=(size, size), mode="bilinear", align_corners=True)
    return level + ripple * up.squeeze(1).numpy()  # [n, size, size]


def photo_crops(rng: np.random.Generator, n: int, size: int) -> np.ndarray:
    """``[n, size, size]`` float32: random square crops of the photos (random flip), resampled and dimmed."""
    photos = load_photos()
    _, _, h, w = photos.shape
    which = rng.integers(photos.shape[0], size=n)
    side = rng.uniform(*CROP_RANGE, n) * min(h, w)  # crop side in pixels
    half = np.stack([side / w, side / h], axis=1)  # [n, 2] half-extent in normalised (x, y)
    centre = rng.uniform(-1.0, 1.0, (n, 2)) * (1.0 - half)  # [n, 2] keeps the crop inside
    half[:, 0] *= np.where(rng.random(n) < 0.5, -1.0, 1.0)  # a negative x extent mirrors the crop
    gain = rng.uniform(*CLUTTER_GAIN, (n, 1, 1)).astype(np.float32)
    out = np.empty((n, size, size), dtype=np.float32)
    for p in range(photos.shape[0]):
        idx = np.flatnonzero(which == p)
        if len(idx):
            out[idx] = _sample(photos[p : p + 1], centre[idx], half[idx], size)
    return gain * out


def _sample(photo: torch.Tensor, centre: np.ndarray, half: np.ndarray, size: int) -> np.ndarray:
    """Bilinear samples of ``m`` axis-aligned windows of one ``[1, 1, h, w]`` photo: ``[m, size, size]``."""
    m = len(centre)
    u = (2.0 * np.arange(size) + 1.0) / size - 1.0  # [size] pixel centres in -1..1
    gx = centre[:, 0, None, None] + half[:, 0, None, None] * u[None, None, :]  # [m, 1, size]
    gy = centre[:, 1, None, None] + half[:, 1, None, None] * u[None, :, None]  # [m, size, 1]
    grid = np.stack(np.broadcast_arrays(gx, gy), axis=-1).astype(np.float32)  # [m, size, size, 2]
    grid_t = torch.from_numpy(grid.reshape(1, m * size, size, 2))  # one call for all windows
    out = F.grid_sample(photo, grid_t, mode="bilinear", align_corners=False)  # [1, 1, m*size, size]
    return out.reshape(m, size, size).numpy()


def backgrounds(rng: np.random.Generator, n: int, size: int, clutter_prob: float) -> np.ndarray:
    """``[n, size, size]`` float32 in 0..1: smooth noise, replaced by a photo crop with ``clutter_prob``."""
    canvas = smooth_noise(rng, n, size)
    clutter = np.flatnonzero(rng.random(n) < clutter_prob)
    canvas[clutter] = photo_crops(rng, len(clutter), size)
    return np.clip(canvas, 0.0, 1.0)
