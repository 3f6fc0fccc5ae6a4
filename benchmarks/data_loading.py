"""The old in-memory loader against the streaming one, on a synthetic VOC-sized tree.

Writes a ``VOC2012`` tree of ``--images`` (default 10,582, as ``train_aug``) JPEGs of about 500×375
(landscape, portrait and 500×333) with index-PNG masks into a temporary folder, then, for each loader and
each training-split size in ``--sizes``, runs one fresh process that builds the training split and runs
``--iterations`` training iterations of the tiny segmentation network (batch 8), and prints:

- resident memory when the first batch is ready, and peak RSS of that process over the whole run (and
  of its ``DataLoader`` workers, for the streaming loader);
- time from the process's start of building the data to the first training batch;
- loader throughput in images per second per worker (for the old loader: per decoding thread).

The streaming loader is measured twice: ``cold`` (its one-off pass that reads every mask for the tags)
and ``warm`` (tags cached, as every later trial of a study finds them).

Run: ``.venv/bin/python -m benchmarks.data_loading`` (``--images N``, ``--sizes 1000,10582``,
``--keep DIR`` to reuse a tree).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable, Iterator
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
from torch import Tensor

SHAPES = ((500, 375), (375, 500), (500, 333))
BATCH, WIDTH = 8, 16


def _write_one(args: tuple[Path, int]) -> None:
    from PIL import Image

    voc, i = args
    rng = np.random.default_rng(i)
    w, h = SHAPES[i % len(SHAPES)]
    yy, xx = np.mgrid[0:h, 0:w]
    base = (np.sin(xx / rng.uniform(20, 60)) + np.cos(yy / rng.uniform(20, 60))) * 40 + 110
    image = np.repeat(base[:, :, None], 3, axis=2) + rng.normal(0, 12, (h, w, 3))
    mask = np.zeros((h, w), dtype=np.uint8)
    for _ in range(rng.integers(1, 4)):
        c = int(rng.integers(1, 21))
        x0, y0 = int(rng.integers(0, w - 100)), int(rng.integers(0, h - 100))
        x1, y1 = x0 + int(rng.integers(40, 100)), y0 + int(rng.integers(40, 100))
        mask[y0:y1, x0:x1] = c
        image[y0:y1, x0:x1] = rng.uniform(0, 255, 3)
        mask[y0:y1, [x0, x1 - 1]] = 255
    stem = f"2009_{i:06d}"
    Image.fromarray(np.clip(image, 0, 255).astype(np.uint8)).save(voc / "JPEGImages" / f"{stem}.jpg", quality=90)
    Image.fromarray(mask, mode="L").save(voc / "SegmentationClassAug" / f"{stem}.png")


def write_tree(root: Path, n: int) -> Path:
    """A ``VOC2012`` tree of ``n`` images with ``train_aug.txt`` and ``val.txt`` (its first 50 images)."""
    voc = root / "VOC2012"
    lists = voc / "ImageSets" / "Segmentation"
    if (lists / "train_aug.txt").is_file() and len((lists / "train_aug.txt").read_text().split()) == n:
        return voc
    for folder in ("JPEGImages", "SegmentationClassAug", "ImageSets/Segmentation"):
        (voc / folder).mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    with ProcessPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
        list(pool.map(_write_one, [(voc, i) for i in range(n)], chunksize=64))
    stems = [f"2009_{i:06d}" for i in range(n)]
    (lists / "train_aug.txt").write_text("\n".join(stems) + "\n")
    (lists / "val.txt").write_text("\n".join(stems[:50]) + "\n")
    print(f"wrote {n} images and masks to {voc} in {time.perf_counter() - start:.0f} s", flush=True)
    return voc


def _train_steps(batches: Iterable[tuple[Tensor, Tensor | None]], iterations: int) -> None:
    import torch
    import torch.nn.functional as F

    from pipelines.models import SegNet

    torch.manual_seed(0)
    model = SegNet(3, 20, WIDTH)
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-3)
    for step, (images, masks) in enumerate(batches):
        if masks is None:
            raise ValueError("the benchmark trains on masks")
        loss = F.cross_entropy(model(images), masks, ignore_index=255)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if step + 1 == iterations:
            break


def _old(voc: Path, n: int, iterations: int) -> dict[str, float]:
    import torch

    from pipelines.data._disk import MAX_WORKERS, decode_split
    from pipelines.data._voc import voc_pairs

    start = time.perf_counter()
    split = decode_split(voc_pairs(voc, "train_aug", n), 320, 20)
    decoded = time.perf_counter() - start
    gen = torch.Generator().manual_seed(0)

    def batches() -> Iterator[tuple[Tensor, Tensor | None]]:
        for idx in torch.randperm(len(split), generator=gen).split(BATCH):
            yield split.images[idx].float() / 255, split.masks[idx].long()

    first = time.perf_counter() - start
    built = _rss_mb()
    _train_steps(batches(), iterations)
    threads = min(MAX_WORKERS, os.cpu_count() or 1)
    return {"first_batch_s": first, "images_per_s_per_worker": n / decoded / threads, "built_rss_mb": built}


def _new(voc: Path, n: int, iterations: int, cache: Path) -> dict[str, float]:
    import torch

    from pipelines.config import from_flat
    from pipelines.data import open_data

    start = time.perf_counter()
    cfg = from_flat({"data.name": "voc", "data.root": str(voc), "data.max_images": n, "data.workers": 1,
                     "cam.ink_threshold": 0.0, "cache_dir": str(cache), "device": "cpu"})
    data = open_data(cfg)
    loader = data.train_loader(BATCH, torch.Generator().manual_seed(0), None, torch.device("cpu"))
    stream = iter(loader)
    first_batch = next(stream)
    first = time.perf_counter() - start
    built = _rss_mb()
    pairs = ((b.images, b.masks) for b in [first_batch, *(next(stream) for _ in range(iterations - 1))])
    _train_steps(pairs, iterations)
    del stream
    count, t0 = 0, 0.0
    for step, batch in enumerate(loader):  # loader throughput alone: one worker, no training
        if step == 2:  # the worker prefetches two batches: start the clock after them
            t0 = time.perf_counter()
        elif step > 2:
            count += len(batch)
        if count >= 320:
            break
    return {"first_batch_s": first, "images_per_s_per_worker": count / (time.perf_counter() - t0),
            "built_rss_mb": built}


def _rss_mb() -> float:
    """This process's resident memory now, in MB."""
    return int(Path("/proc/self/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def _child(args: argparse.Namespace) -> None:
    voc = Path(args.root)
    if args.child == "old":
        out = _old(voc, args.n, args.iterations)
    else:
        out = _new(voc, args.n, args.iterations, Path(args.cache))
    out["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    out["worker_peak_rss_mb"] = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    print(json.dumps(out))


def _measure(kind: str, voc: Path, n: int, iterations: int, cache: Path) -> dict[str, float]:
    cmd = [sys.executable, "-m", "benchmarks.data_loading", "--child", kind, "--root", str(voc), "--n", str(n),
           "--iterations", str(iterations), "--cache", str(cache)]
    done = subprocess.run(cmd, check=True, capture_output=True, text=True)
    return dict(json.loads(done.stdout.strip().splitlines()[-1]))


def main() -> None:
    """Parse the arguments, write (or reuse) the tree, and print the side-by-side table."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=10582)
    parser.add_argument("--sizes", default="1000,10582", help="training-split sizes to measure")
    parser.add_argument("--iterations", type=int, default=3)
    parser.add_argument("--keep", type=Path, help="write the tree here (and reuse it) instead of a temp folder")
    parser.add_argument("--child", choices=["old", "new"], help=argparse.SUPPRESS)
    parser.add_argument("--root", help=argparse.SUPPRESS)
    parser.add_argument("--n", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--cache", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        _child(args)
        return
    with tempfile.TemporaryDirectory(prefix="ocr-data-bench-") as tmp:
        voc = write_tree(args.keep or Path(tmp), args.images)
        print(f"{'loader':<16} {'images':>7} {'RSS at 1st batch MB':>20} {'peak RSS MB':>12} "
              f"{'worker RSS MB':>14} {'1st batch s':>12} {'img/s/worker':>13}")
        for n in (int(x) for x in args.sizes.split(",")):
            cache = Path(tmp) / f"cache-{n}"
            for kind, label in (("old", "old in-memory"), ("new", "streaming cold"), ("new", "streaming warm")):
                r = _measure(kind, voc, n, args.iterations, cache)
                workers = f"{r['worker_peak_rss_mb']:.0f}" if kind == "new" else "-"
                print(f"{label:<16} {n:>7} {r['built_rss_mb']:>20.0f} {r['peak_rss_mb']:>12.0f} {workers:>14} "
                      f"{r['first_batch_s']:>12.1f} {r['images_per_s_per_worker']:>13.1f}", flush=True)


if __name__ == "__main__":
    main()
