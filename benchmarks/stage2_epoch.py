"""Stage 2 as a trial trains it, on a synthetic VOC-sized tree: images per second, and the share of
time the GPU waits for data.

Writes ``--images`` (default 200) VOC-sized JPEGs with masks (:func:`benchmarks.data_loading.write_tree`),
uses the masks as the pseudo-mask folder (``stage1.source=masks``), and runs ``--iterations`` optimiser
steps of the trial's own stage-2 step (``pipelines.stage_seg``: DeepLab-v2 on ResNet-50, output stride 8,
random weights, crop ``--crop``, cross-entropy + OCR with ``selection=oc``, SGD with poly decay;
channels-last, cuDNN autotuning and bf16/fp16 autocast on CUDA) after one warm-up step, streaming
batches from the trial's ``DataLoader`` (``--workers`` processes). Each step is timed in two parts:
blocked in the loader (the next batch on the device) and compute (forward, losses, backward, optimiser,
synchronised on CUDA). It prints images/s over the timed steps and, on a GPU, the share of that time the
GPU waited for data (``n/a`` on the CPU, where loading and compute share the cores).

Run: ``.venv/bin/python -m benchmarks.stage2_epoch`` (CPU: batch 2, 3 iterations); on a GPU
``--device cuda --batch 16 --iterations 30 --workers 8``. ``--keep DIR`` reuses a tree.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch

from benchmarks.data_loading import write_tree
from pipelines.accel import configure_backend
from pipelines.config import TrialConfig, from_flat
from pipelines.data import open_data
from pipelines.engine import Precision, endless, input_feed, resolve_device
from pipelines.stage_seg import _loss_fn, _new_state


def _config(voc: Path, cache: Path, args: argparse.Namespace) -> TrialConfig:
    return from_flat({
        "data.name": "voc", "data.root": str(voc), "data.train_split": "train_aug", "data.val_split": "val",
        "data.crop_size": args.crop, "data.workers": args.workers, "cam.ink_threshold": 0.0,
        "stage1.source": "masks", "stage1.masks_dir": str(voc / "SegmentationClassAug"), "seg.init": "scratch",
        "seg.batch_size": args.batch, "seg.iterations": args.iterations + 1, "seg.lr": 7e-4,
        "model.name": "deeplab", "model.backbone": "resnet50", "model.head": "v2", "model.output_stride": 8,
        "ocr.selection": "oc", "device": args.device, "threads": args.threads, "cache_dir": str(cache),
    })


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure(voc: Path, cache: Path, args: argparse.Namespace) -> dict[str, float]:
    """Seconds blocked in the loader and in compute over ``args.iterations`` steps after a warm-up."""
    cfg = _config(voc, cache, args)
    torch.set_num_threads(cfg.threads)
    device = resolve_device(cfg.device)
    configure_backend(device)
    data = open_data(cfg)
    generator = torch.Generator().manual_seed(0)
    loader = data.train_loader(cfg.seg.batch_size, generator, Path(cfg.stage1.masks_dir), device)
    state = _new_state(cfg, data, device, None, cfg.seg.iterations, generator)
    loss_fn, precision = _loss_fn(state, cfg, device, input_feed(data, cfg, device)), Precision(device, cfg.amp)
    state.model.train()
    stream = endless(loader)
    waits: list[float] = []
    computes: list[float] = []
    for step in range(args.iterations + 1):
        start = time.perf_counter()
        batch = next(stream)
        _sync(device)
        ready = time.perf_counter()
        with precision.autocast():
            parts = loss_fn(batch)
        precision.step(parts["total"], state.optimizer)
        state.schedule.step()
        _sync(device)
        if step:  # the first step warms up (cuDNN autotuning, worker start)
            waits.append(ready - start)
            computes.append(time.perf_counter() - ready)
    return {"wait_s": sum(waits), "compute_s": sum(computes), "median_step_s": statistics.median(
        w + c for w, c in zip(waits, computes, strict=True)), "device_cuda": float(device.type == "cuda")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=200)
    parser.add_argument("--iterations", type=int, default=3)
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--crop", type=int, default=321)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--keep", type=Path, help="write (or reuse) the tree here")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = args.keep or Path(tmp)
        voc = write_tree(root / "tree", args.images)
        r = measure(voc, Path(tmp) / "cache", args)
    total = r["wait_s"] + r["compute_s"]
    images = args.iterations * args.batch
    share = f"{100 * r['wait_s'] / total:.1f} %" if r["device_cuda"] else "n/a (CPU)"
    print(f"DeepLab-v2 ResNet-50 OS8 stage 2, {args.images} images, crop {args.crop}, batch {args.batch}, "
          f"{args.iterations} iterations after 1 warm-up, {args.workers} workers, device {args.device}")
    print("| images/s | median step (s) | blocked in loader (s) | compute (s) | GPU waits for data |")
    print("|---|---|---|---|---|")
    print(f"| {images / total:.2f} | {r['median_step_s']:.2f} | {r['wait_s']:.2f} | {r['compute_s']:.2f} "
          f"| {share} |")


if __name__ == "__main__":
    main()
