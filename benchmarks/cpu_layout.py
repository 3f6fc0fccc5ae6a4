"""Contiguous (NCHW) against channels-last tensors for a training step on the CPU, side by side.

Times one optimiser step (forward, cross-entropy, backward, AdamW or SGD) of each network a trial trains,
in both memory layouts, alternating the two layouts repeat by repeat so that a change in the machine's
load hits both alike: the digit scenes' ``CAMNet`` and ``SegNet`` (batch 32, 48², width 16, one
thread: a trial of the ``quick`` spec) and DeepLab-v2 on ResNet-50 (batch 2, ``--size``², stride 16,
random weights). Prints the median milliseconds of each and the ratio contiguous / channels-last (above 1:
channels-last is faster). ``model.channels_last`` (default on) picks the layout for CUDA and the CPU.

Run: ``.venv/bin/python -m benchmarks.cpu_layout`` (``--repeats``, ``--size``, ``--threads``).
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from pipelines.config import from_flat
from pipelines.models import CAMNet, SegNet, build_seg_model


def _step_fn(model: nn.Module, images: Tensor, target: Tensor, multilabel: bool,
             channels_last: bool) -> Callable[[], None]:
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
        images = images.contiguous(memory_format=torch.channels_last)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)

    def step() -> None:
        out = model(images)
        if multilabel:
            loss = F.binary_cross_entropy_with_logits(out[0], target)
        else:
            logits = F.interpolate(out, size=target.shape[1:], mode="bilinear", align_corners=False)
            loss = F.cross_entropy(logits, target)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    return step


def _networks(size: int) -> dict[str, Callable[[bool], Callable[[], None]]]:
    gen = torch.Generator().manual_seed(0)
    digits = torch.rand(32, 3, 48, 48, generator=gen)
    tags = (torch.rand(32, 10, generator=gen) < 0.3).float()
    masks = torch.randint(0, 11, (32, 48, 48), generator=gen)
    natural = torch.rand(2, 3, size, size, generator=gen)
    voc_masks = torch.randint(0, 21, (2, size, size), generator=gen)
    deeplab_cfg = from_flat({"model.name": "deeplab", "model.backbone": "resnet50", "model.output_stride": 16,
                             "seg.init": "scratch"})

    def fresh(build: Callable[[], nn.Module]) -> Callable[[], nn.Module]:
        def make() -> nn.Module:
            torch.manual_seed(0)
            return build().train()
        return make

    cam, seg = fresh(lambda: CAMNet(3, 10, 16)), fresh(lambda: SegNet(3, 10, 16))
    deeplab = fresh(lambda: build_seg_model(deeplab_cfg, 20, 3))
    return {
        "digits CAMNet, batch 32, 48²": lambda cl: _step_fn(cam(), digits, tags, True, cl),
        "digits SegNet, batch 32, 48²": lambda cl: _step_fn(seg(), digits, masks, False, cl),
        f"DeepLab-v2 ResNet-50 (stride 16), batch 2, {size}²": lambda cl: _step_fn(deeplab(), natural, voc_masks,
                                                                                 False, cl),
    }


def measure(repeats: int, size: int) -> list[tuple[str, float, float]]:
    """``(network, contiguous ms, channels-last ms)``: medians over ``repeats`` alternating timings."""
    rows = []
    for name, make in _networks(size).items():
        steps = {cl: make(cl) for cl in (False, True)}
        for step in steps.values():  # warm-up: allocator, oneDNN primitive caches
            step()
        times: dict[bool, list[float]] = {False: [], True: []}
        for _ in range(repeats):
            for cl, step in steps.items():
                start = time.perf_counter()
                step()
                times[cl].append(time.perf_counter() - start)
        rows.append((name, 1e3 * statistics.median(times[False]), 1e3 * statistics.median(times[True])))
    return rows


def main() -> None:
    """Print the table."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--size", type=int, default=193)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"one training step on the CPU, {args.threads} thread(s); torch {torch.__version__}; "
          f"median of {args.repeats} alternating repeats after a warm-up")
    print("| network | contiguous (ms) | channels-last (ms) | contiguous / channels-last |")
    print("|---|---|---|---|")
    for name, nchw, nhwc in measure(args.repeats, args.size):
        print(f"| {name} | {nchw:.0f} | {nhwc:.0f} | {nchw / nhwc:.2f} |")


if __name__ == "__main__":
    main()
