"""A small natural-image segmentation benchmark any machine makes offline, in the ``folder`` layout.

Backgrounds are crops of scikit-learn's two bundled photographs (``load_sample_images``), rescaled,
mirrored and colour-jittered; on each, one to three objects of six shape classes (disc, square,
triangle, star, ring, cross) are pasted, each filled with its class's hue (jittered; any hue with
``--shape-only``) shaded by a grey photo texture, with anti-aliased edges. The ground-truth mask is
exact (a pixel is an object's where its coverage is at least one half; later objects occlude earlier
ones), with a VOC-style band of 255 ("void") ``band`` pixels wide along every boundary between two
labels. Classes co-occur in fixed pairs (disc-square, triangle-star, ring-cross) half of the time, so
the co-occurrence prior has something to find.

The pseudo-mask folder is the ground truth degraded the way CAM output is: each object's mask is
blurred and re-thresholded (blobby, grown or shrunk), shifted by a few pixels, loses a part (a disc cut
out) some of the time, is missed entirely or given a wrong class some of the time, and a blob of a
present class spills onto the background now and then; no 255 band (IRN's ``sem_seg`` masks have none).

Writes ``OUT/images/<id>.jpg``, ``OUT/masks/<id>.png``, ``OUT/train.txt``, ``OUT/val.txt``,
``OUT/classes.txt`` and ``OUT/pseudo/<id>.png`` (train ids), and prints the pseudo-masks' mIoU against the
ground truth (255 of the ground truth ignored)::

    python -m benchmarks.natural_images --out /tmp/natural --train 400 --val 100
"""

from __future__ import annotations

import argparse
import colorsys
import json
import math
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw
from scipy import ndimage

CLASSES = ("disc", "square", "triangle", "star", "ring", "cross")
PARTNER = (1, 0, 3, 2, 5, 4)  # classes co-occur in pairs: disc-square, triangle-star, ring-cross
SUPERSAMPLE = 4  # shapes are drawn at 4x and averaged down: anti-aliased edges, exact coverage


@dataclass(frozen=True)
class Degradation:
    """How the pseudo-masks differ from the ground truth (probabilities are per object)."""

    miss: float = 0.08          # the object is absent from the pseudo-mask
    wrong_class: float = 0.08   # the object carries another class
    cut: float = 0.35           # a disc of the object is missing
    spill: float = 0.15         # per image: a blob of a present class on the background
    blur: tuple[float, float] = (1.0, 3.0)        # Gaussian sigma (px) of the blob-making blur
    threshold: tuple[float, float] = (0.3, 0.6)   # re-threshold of the blurred mask (low = grown)
    shift: int = 3              # max translation in pixels, each axis


@dataclass(frozen=True)
class Scene:
    """One generated image: ``image (H, W, 3)`` uint8, ``mask (H, W)`` uint8 with 255 bands,
    ``pseudo (H, W)`` uint8 (no 255)."""

    image: np.ndarray
    mask: np.ndarray
    pseudo: np.ndarray


@lru_cache(maxsize=1)
def photos() -> tuple[np.ndarray, ...]:
    """scikit-learn's two sample photographs, ``(427, 640, 3)`` uint8 each."""
    from sklearn.datasets import load_sample_images

    return tuple(np.asarray(p) for p in load_sample_images().images)


def _background(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """A crop of a photo, rescaled to ``(height, width)``, maybe mirrored, colour-jittered: float 0..1."""
    photo = photos()[int(rng.integers(len(photos())))]
    ph, pw = photo.shape[:2]
    side = rng.uniform(0.25, 0.9)
    ch, cw = int(ph * side), int(min(pw, ph * side * width / height))
    y, x = int(rng.integers(0, ph - ch + 1)), int(rng.integers(0, pw - cw + 1))
    crop = Image.fromarray(photo[y : y + ch, x : x + cw]).resize((width, height), Image.Resampling.BILINEAR)
    out = np.asarray(crop, dtype=np.float32) / 255.0
    if rng.random() < 0.5:
        out = out[:, ::-1]
    grey = out.mean(axis=2, keepdims=True)
    out = grey + (out - grey) * rng.uniform(0.5, 1.4)                 # saturation
    out = (out - 0.5) * rng.uniform(0.7, 1.2) + 0.5 + rng.uniform(-0.15, 0.15)  # contrast, brightness
    out = out * rng.uniform(0.85, 1.15, size=3).astype(np.float32)   # colour cast
    return np.clip(out, 0.0, 1.0)


def _polygon(cls: int, cx: float, cy: float, r: float, angle: float) -> list[list[tuple[float, float]]]:
    """The outline(s) of class ``cls`` at centre ``(cx, cy)``, radius ``r``: a list of polygons, the
    first filled, any further ones cut out (the ring's hole)."""
    def ring(n: int, radius: Sequence[float], phase: float) -> list[tuple[float, float]]:
        return [(cx + radius[i % len(radius)] * math.cos(phase + 2 * math.pi * i / n),
                 cy + radius[i % len(radius)] * math.sin(phase + 2 * math.pi * i / n)) for i in range(n)]

    name = CLASSES[cls]
    if name == "disc":
        return [ring(48, [r], 0.0)]
    if name == "square":
        return [ring(4, [r], angle + math.pi / 4)]
    if name == "triangle":
        return [ring(3, [r], angle - math.pi / 2)]
    if name == "star":
        return [ring(10, [r, 0.45 * r], angle - math.pi / 2)]
    if name == "ring":
        return [ring(48, [r], 0.0), ring(48, [0.55 * r], 0.0)]
    arm = 0.33 * r  # cross: a plus sign of arms 2r long, 2*arm wide, rotated
    pts = [(-arm, -r), (arm, -r), (arm, -arm), (r, -arm), (r, arm), (arm, arm), (arm, r), (-arm, r),
           (-arm, arm), (-r, arm), (-r, -arm), (-arm, -arm)]
    c, s = math.cos(angle), math.sin(angle)
    return [[(cx + x * c - y * s, cy + x * s + y * c) for x, y in pts]]


def _coverage(outlines: list[list[tuple[float, float]]], height: int, width: int) -> np.ndarray:
    """The share of each pixel a shape covers, ``(H, W)`` float 0..1 (supersampled rasterisation)."""
    k = SUPERSAMPLE
    canvas = Image.new("L", (width * k, height * k), 0)
    draw = ImageDraw.Draw(canvas)
    for i, poly in enumerate(outlines):
        draw.polygon([(x * k, y * k) for x, y in poly], fill=255 if i == 0 else 0)
    big = np.asarray(canvas, dtype=np.float32) / 255.0
    return big.reshape(height, k, width, k).mean(axis=(1, 3))


def _fill(rng: np.random.Generator, cls: int, height: int, width: int, class_hue: bool = True) -> np.ndarray:
    """The object's colour: its class's hue (jittered; any hue without ``class_hue``), shaded by a grey
    photo texture, ``(H, W, 3)``."""
    hue = (cls / len(CLASSES) + rng.uniform(-0.04, 0.04)) % 1.0 if class_hue else rng.uniform(0.0, 1.0)
    rgb = np.array(colorsys.hsv_to_rgb(hue, rng.uniform(0.55, 0.95), rng.uniform(0.6, 1.0)), np.float32)
    texture = _background(rng, height, width).mean(axis=2, keepdims=True)
    return np.clip(rgb * (0.65 + 0.6 * texture), 0.0, 1.0)


def boundary_band(mask: np.ndarray, width: int) -> np.ndarray:
    """Pixels within ``width`` of a boundary between two labels (VOC's void band), ``(H, W)`` bool."""
    if width <= 0:
        return np.zeros(mask.shape, dtype=bool)
    size = 2 * width + 1
    return ndimage.maximum_filter(mask, size=size) != ndimage.minimum_filter(mask, size=size)


def _degrade(rng: np.random.Generator, covers: list[tuple[int, np.ndarray]], shape: tuple[int, int],
             deg: Degradation) -> np.ndarray:
    """A CAM-like pseudo-mask from the objects' coverage maps (painted in the same order)."""
    pseudo = np.zeros(shape, dtype=np.uint8)
    present = [c for c, _ in covers]
    for cls, cover in covers:
        if rng.random() < deg.miss:
            continue
        label = cls
        if rng.random() < deg.wrong_class:
            label = int(rng.choice([c for c in range(len(CLASSES)) if c != cls]))
        blob = ndimage.gaussian_filter(cover, rng.uniform(*deg.blur))
        dy, dx = rng.integers(-deg.shift, deg.shift + 1, size=2)
        blob = ndimage.shift(blob, (float(dy), float(dx)), order=1, mode="constant")
        keep = blob >= rng.uniform(*deg.threshold)
        if rng.random() < deg.cut and keep.any():
            ys, xs = np.nonzero(keep)
            i = int(rng.integers(len(ys)))
            radius = 0.5 * math.sqrt(keep.sum() / math.pi) * rng.uniform(0.6, 1.1)
            yy, xx = np.ogrid[: shape[0], : shape[1]]
            keep &= (yy - ys[i]) ** 2 + (xx - xs[i]) ** 2 > radius ** 2
        pseudo[keep] = label + 1
    if present and rng.random() < deg.spill:
        h, w = shape
        cy, cx = rng.uniform(0, h), rng.uniform(0, w)
        yy, xx = np.ogrid[:h, :w]
        spot = (yy - cy) ** 2 / (0.12 * h) ** 2 + (xx - cx) ** 2 / (0.12 * w) ** 2 < 1.0
        pseudo[spot & (pseudo == 0)] = int(rng.choice(present)) + 1
    return pseudo


def make_scene(rng: np.random.Generator, min_side: int, max_side: int, band: int,
               deg: Degradation = Degradation(), class_hue: bool = True) -> Scene:
    """One image with its exact mask (255 bands) and its degraded pseudo-mask; without ``class_hue`` the
    objects' colours say nothing of their class (shape alone does)."""
    long_side = int(rng.integers(min_side, max_side + 1))
    short_side = int(long_side * rng.uniform(0.7, 1.0))
    height, width = (long_side, short_side) if rng.random() < 0.35 else (short_side, long_side)
    image = _background(rng, height, width)
    first = int(rng.integers(len(CLASSES)))
    count = int(rng.integers(1, 4))
    classes = [first]
    for _ in range(count - 1):
        classes.append(PARTNER[first] if rng.random() < 0.5 else int(rng.integers(len(CLASSES))))
    label = np.zeros((height, width), dtype=np.uint8)
    covers: list[tuple[int, np.ndarray]] = []
    for cls in classes:
        r = rng.uniform(0.16, 0.3) * min(height, width)
        cx, cy = rng.uniform(r, width - r), rng.uniform(r, height - r)
        cover = _coverage(_polygon(cls, cx, cy, r, rng.uniform(0, 2 * math.pi)), height, width)
        alpha = cover[:, :, None]
        image = image * (1 - alpha) + _fill(rng, cls, height, width, class_hue) * alpha
        label[cover >= 0.5] = cls + 1
        covers = [(c, np.where(cover >= 0.5, 0.0, v)) for c, v in covers]  # occluded parts go
        covers.append((cls, cover))
    image = np.clip(image + rng.normal(0.0, 0.015, image.shape), 0.0, 1.0)
    mask = label.copy()
    mask[boundary_band(label, band)] = 255
    pseudo = _degrade(rng, covers, (height, width), deg)
    return Scene((image * 255 + 0.5).astype(np.uint8), mask, pseudo)


def miou(pred: Sequence[np.ndarray], truth: Sequence[np.ndarray], num_labels: int) -> tuple[float, list[float]]:
    """mIoU of index masks ``pred`` against ``truth`` (255 in ``truth`` ignored), and the per-label IoU."""
    conf = np.zeros((num_labels, num_labels), dtype=np.int64)
    for p, t in zip(pred, truth, strict=True):
        keep = t != 255
        conf += np.bincount(t[keep].astype(np.int64) * num_labels + p[keep].clip(0, num_labels - 1),
                            minlength=num_labels ** 2).reshape(num_labels, num_labels)
    inter = np.diag(conf).astype(np.float64)
    union = conf.sum(0) + conf.sum(1) - inter
    ious = [float(i / u) if u else float("nan") for i, u in zip(inter, union, strict=True)]
    return float(np.nanmean(ious)), ious


def generate(out: Path, train: int, val: int, *, min_side: int = 96, max_side: int = 160, band: int = 2,
             seed: int = 0, deg: Degradation = Degradation(), class_hue: bool = True) -> dict[str, Any]:
    """Write the benchmark to ``out`` (the ``folder`` layout plus ``pseudo/``); returns its summary."""
    from pipelines.data._png import write_index_png

    rng = np.random.default_rng(seed)
    for sub in ("images", "masks", "pseudo"):
        (out / sub).mkdir(parents=True, exist_ok=True)
    (out / "classes.txt").write_text("\n".join(CLASSES) + "\n")
    pseudo_all: list[np.ndarray] = []
    truth_all: list[np.ndarray] = []
    for split, n in (("train", train), ("val", val)):
        ids = [f"{split}_{i:05d}" for i in range(n)]
        for stem in ids:
            scene = make_scene(rng, min_side, max_side, band, deg, class_hue)
            Image.fromarray(scene.image).save(out / "images" / f"{stem}.jpg", quality=95)
            write_index_png(out / "masks" / f"{stem}.png", scene.mask)
            if split == "train":
                write_index_png(out / "pseudo" / f"{stem}.png", scene.pseudo)
                pseudo_all.append(scene.pseudo)
                truth_all.append(scene.mask)
        (out / f"{split}.txt").write_text("\n".join(ids) + "\n")
    score, ious = miou(pseudo_all, truth_all, len(CLASSES) + 1)
    summary = {"train": train, "val": val, "classes": len(CLASSES), "pseudo_miou": round(score, 4),
               "pseudo_iou": {name: round(v, 4) for name, v in zip(("background", *CLASSES), ious, strict=True)}}
    (out / "summary.json").write_text(json.dumps(summary, indent=1) + "\n")
    return summary


def main(argv: Sequence[str] | None = None) -> int:
    """The command line: ``python -m benchmarks.natural_images --out DIR``."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True, help="the folder to write (created)")
    parser.add_argument("--train", type=int, default=400, help="training images (default 400)")
    parser.add_argument("--val", type=int, default=100, help="validation images (default 100)")
    parser.add_argument("--min-side", type=int, default=96, help="shortest long side in pixels (96)")
    parser.add_argument("--max-side", type=int, default=160, help="longest long side in pixels (160)")
    parser.add_argument("--band", type=int, default=2, help="255 band half-width in pixels (2)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--shape-only", action="store_true",
                        help="colour objects with any hue: only their shape tells their class")
    args = parser.parse_args(argv)
    if args.train < 1 or args.val < 1 or not 32 <= args.min_side <= args.max_side:
        parser.error("--train and --val must be >= 1 and 32 <= --min-side <= --max-side")
    summary = generate(args.out, args.train, args.val, min_side=args.min_side, max_side=args.max_side,
                       band=args.band, seed=args.seed, class_hue=not args.shape_only)
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
