"""Digit scenes: the offline benchmark, composed from real handwritten glyphs.

Each image is a ``DigitsConfig.image_size``² grey canvas (one channel) holding ``objects_min..objects_max``
glyphs whose digits follow the designed co-occurrence (:mod:`._classes`). A glyph is upscaled bilinearly to
a random size in ``glyph_min..glyph_max`` and pasted at a random place, fully inside, later glyphs on top:
its opacity is its intensity times a random contrast gain (clipped to 1), its grey level a random ink
intensity. Its mask is the upscaled intensity ``> mask_threshold``, overwritten by later glyphs.

A digit that keeps fewer than ``tag_min_pixels`` mask pixels after occlusion is not tagged and its
remaining pixels become **ignore** (255), not background: those pixels still show some of its ink, so
calling them background would teach and score "ink here is background", while ignore keeps the mask
truthful and the tags-from-masks rule exact (a digit is tagged iff it has a pixel in the mask).

Everything is drawn from numpy generators seeded with ``(seed, stream)``, so the same config gives
bit-identical tensors, and the val and test splits depend neither on ``train_size`` nor on each other's size.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

import numpy as np
import torch

from pipelines.config import DigitsConfig
from pipelines.data._background import backgrounds
from pipelines.data._classes import active_pairs, object_count_probs, sample_classes
from pipelines.data._glyphs import glyph_pools, load_glyphs, upscale
from pipelines.data._types import IGNORE, SegData, Split, class_pixel_counts, tags_from_masks

log = logging.getLogger(__name__)

DIGITS_VERSION = 2  # bump whenever the generator changes: it is part of the cache key
TRAIN_STREAM, VAL_STREAM, TEST_STREAM = 1, 2, 3
INK_RANGE = (0.65, 1.0)  # grey level of a glyph's ink
GAIN_RANGE = (1.0, 1.6)  # contrast: opacity = min(1, glyph intensity × gain)


def digit_names(num_classes: int) -> tuple[str, ...]:
    """The class names ``("digit0", …)`` of the first ``num_classes`` digits."""
    return tuple(f"digit{d}" for d in range(num_classes))


@dataclass(frozen=True)
class _Objects:
    """Every glyph of a split, in paste order (by image, then bottom to top); all arrays ``[M]``."""

    image: np.ndarray
    digit: np.ndarray
    glyph: np.ndarray
    size: np.ndarray
    y: np.ndarray
    x: np.ndarray
    ink: np.ndarray
    gain: np.ndarray


def _layout(rng: np.random.Generator, n: int, cfg: DigitsConfig, pool: list[np.ndarray]) -> _Objects:
    counts = rng.choice(np.arange(cfg.objects_min, cfg.objects_max + 1), size=n,
                        p=object_count_probs(cfg.objects_min, cfg.objects_max))
    pairs = active_pairs(cfg.num_classes)
    per_image = [sample_classes(rng, int(k), cfg, pairs) for k in counts]
    image = np.repeat(np.arange(n), [len(p) for p in per_image])  # [M]
    digit = np.array([d for p in per_image for d in p], dtype=np.int64)  # [M]
    m = len(digit)
    glyph = np.empty(m, dtype=np.int64)
    for d in range(cfg.num_classes):
        idx = np.flatnonzero(digit == d)
        glyph[idx] = pool[d][rng.integers(len(pool[d]), size=len(idx))]
    size = rng.integers(cfg.glyph_min, cfg.glyph_max + 1, size=m)
    y = (rng.random(m) * (cfg.image_size - size + 1)).astype(np.int64)  # top-left corner, fully inside
    x = (rng.random(m) * (cfg.image_size - size + 1)).astype(np.int64)
    return _Objects(image=image, digit=digit, glyph=glyph, size=size, y=y, x=x,
                    ink=rng.uniform(*INK_RANGE, m), gain=rng.uniform(*GAIN_RANGE, m))


def _resized(objects: _Objects, glyphs: np.ndarray) -> list[np.ndarray]:
    """Each object's glyph at its size, upscaled in one batch per size."""
    out: list[np.ndarray] = [np.empty(0)] * len(objects.size)
    for s in np.unique(objects.size):
        idx = np.flatnonzero(objects.size == s)
        for k, up in zip(idx, upscale(glyphs[objects.glyph[idx]], int(s)), strict=True):
            out[k] = up  # [s, s]
    return out


def _paste(objects: _Objects, glyphs: np.ndarray, canvas: np.ndarray, labels: np.ndarray,
           threshold: float) -> None:
    """Paint every glyph onto ``canvas [N, H, W]`` and its digit into ``labels [N, H, W]``, in order."""
    for k, alpha in enumerate(_resized(objects, glyphs)):
        i, y, x, s = objects.image[k], objects.y[k], objects.x[k], alpha.shape[0]
        region = canvas[i, y : y + s, x : x + s]  # [s, s] view
        opacity = np.minimum(alpha * objects.gain[k], 1.0)
        region += opacity * (objects.ink[k] - region)
        labels[i, y : y + s, x : x + s][alpha > threshold] = objects.digit[k] + 1


def _ignore_fragments(labels: torch.Tensor, num_classes: int, min_pixels: int) -> None:
    """Turn into ignore the pixels of every digit that keeps fewer than ``min_pixels`` in its image."""
    counts = class_pixel_counts(labels, num_classes).numpy()  # [N, 1 + C]
    fragment = (counts > 0) & (counts < min_pixels)
    fragment[:, 0] = False
    rows = np.flatnonzero(fragment.any(axis=1))  # the few images with a fragment
    if not len(rows):
        return
    lookup = np.zeros((len(rows), 256), dtype=bool)  # [R, 256]: is this label value a fragment here?
    lookup[:, : num_classes + 1] = fragment[rows]
    sub = labels.numpy()[rows]  # [R, H, W]
    drop = np.take_along_axis(lookup, sub.reshape(len(rows), -1), axis=1).reshape(sub.shape)
    sub[drop] = IGNORE
    labels.numpy()[rows] = sub


def _make_split(cfg: DigitsConfig, n: int, stream: int, pool: list[np.ndarray]) -> Split:
    rng = np.random.default_rng([cfg.seed, stream])
    glyphs, _ = load_glyphs()
    objects = _layout(rng, n, cfg, pool)
    canvas = backgrounds(rng, n, cfg.image_size, cfg.clutter_prob)  # [N, H, W] float32
    labels = np.zeros(canvas.shape, dtype=np.uint8)  # [N, H, W]
    _paste(objects, glyphs, canvas, labels, cfg.mask_threshold)
    masks = torch.from_numpy(labels)  # shares memory with labels
    _ignore_fragments(masks, cfg.num_classes, cfg.tag_min_pixels)
    canvas += rng.normal(0.0, cfg.noise_std, canvas.shape).astype(np.float32)
    images = np.rint(np.clip(canvas, 0.0, 1.0) * 255.0).astype(np.uint8)[:, None]  # [N, 1, H, W]
    return Split(images=torch.from_numpy(images), masks=masks, tags=tags_from_masks(masks, cfg.num_classes))


def build_digits(cfg: DigitsConfig) -> SegData:
    """Generate the digit-scenes data set described by ``cfg`` (deterministic: same config, same tensors).

    Args:
        cfg: the generator's settings; ``cfg.seed`` drives the glyph-pool split and every scene.
    """
    start = time.perf_counter()
    _, targets = load_glyphs()
    train_pool, val_pool, test_pool = glyph_pools(targets, cfg.num_classes, cfg.glyph_split, cfg.seed)
    test = _make_split(cfg, cfg.test_size, TEST_STREAM, test_pool) if cfg.test_size else None
    data = SegData(name="digits", class_names=digit_names(cfg.num_classes),
                   train=_make_split(cfg, cfg.train_size, TRAIN_STREAM, train_pool),
                   val=_make_split(cfg, cfg.val_size, VAL_STREAM, val_pool), test=test)
    log.info("generated digit scenes (%d train, %d val, %d test) in %.2f s",
             cfg.train_size, cfg.val_size, cfg.test_size, time.perf_counter() - start)
    return data
