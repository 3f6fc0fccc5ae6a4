"""The glyph bank of the digit scenes: scikit-learn's 1,797 real 8×8 handwritten digits.

The glyphs of each class are split once, by a seeded permutation, into a train pool, a val pool and a
test pool that share no glyph, so validation and test scenes show handwriting the networks never saw (and
the test scenes handwriting that no setting was chosen on).
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

POOL_STREAM = 0  # the random stream (next to the config seed) that splits the glyph pools


@lru_cache(maxsize=1)
def load_glyphs() -> tuple[np.ndarray, np.ndarray]:
    """All glyphs as ``([1797, 8, 8] float32 in 0..1, [1797] int64 digit)``, read once per process."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    glyphs = (digits.images / 16.0).astype(np.float32)  # [K, 8, 8]
    glyphs.setflags(write=False)
    targets = digits.target.astype(np.int64)  # [K]
    targets.setflags(write=False)
    return glyphs, targets


Pools = tuple[list[np.ndarray], list[np.ndarray], list[np.ndarray]]


def glyph_pools(targets: np.ndarray, num_classes: int, fraction: float, seed: int) -> Pools:
    """Split the glyph indices of digits ``0..num_classes-1`` into disjoint train, val and test pools.

    Args:
        targets: ``[K]`` the digit of every glyph.
        num_classes: how many digits are used (the first ones).
        fraction: the share of each digit's glyphs that goes to train; the rest is halved between val and
            test (val takes the odd one); each pool keeps at least one.
        seed: the data seed; the split depends on it and on nothing else.

    Returns:
        ``(train, val, test)``: per digit, a sorted array of glyph indices.
    """
    rng = np.random.default_rng([seed, POOL_STREAM])
    train, val, test = [], [], []
    for digit in range(num_classes):
        members = rng.permutation(np.flatnonzero(targets == digit))
        cut = int(np.clip(round(fraction * len(members)), 1, len(members) - 2))
        half = cut + (len(members) - cut + 1) // 2
        train.append(np.sort(members[:cut]))
        val.append(np.sort(members[cut:half]))
        test.append(np.sort(members[half:]))
    return train, val, test


def bilinear_matrix(src: int, dst: int) -> np.ndarray:
    """``[dst, src]`` weights of 1-d linear resampling with half-pixel centres (``align_corners=False``).

    Edges are clamped, as in ``torch.nn.functional.interpolate(mode="bilinear")`` when upscaling.
    """
    pos = np.maximum((np.arange(dst) + 0.5) * src / dst - 0.5, 0.0)  # [dst] source coordinate
    low = np.minimum(np.floor(pos).astype(np.int64), src - 1)
    high = np.minimum(low + 1, src - 1)
    frac = pos - low
    weights = np.zeros((dst, src), dtype=np.float64)
    np.add.at(weights, (np.arange(dst), low), 1.0 - frac)
    np.add.at(weights, (np.arange(dst), high), frac)
    return weights.astype(np.float32)


def upscale(glyphs: np.ndarray, size: int) -> np.ndarray:
    """Bilinear upscaling of ``[K, h, w]`` glyphs to ``[K, size, size]`` float32 in 0..1.

    Separable, as two small matrix products: far faster than ``interpolate`` on thousands of 8×8 inputs.
    """
    rows = bilinear_matrix(glyphs.shape[1], size)  # [size, h]
    cols = bilinear_matrix(glyphs.shape[2], size)  # [size, w]
    up = rows @ glyphs @ cols.T  # [K, size, size]
    return np.clip(up, 0.0, 1.0)
