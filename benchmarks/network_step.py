"""Where a training step of the field's network goes: DeepLab-v2 on ResNet-50 at 321², 21 channels (VOC).

Times, per step, the network's forward + backward (backward of the logits' gradient), cross-entropy's
forward + backward, and the OCR term's (``selection`` oc and all, ``group`` paper) on the same logits, and
prints the OCR term's share of the whole step. Logits are the network's own at initialisation (most
pixels out of candidate, like the first iterations) and "trained-like" ones where candidate channels
are lifted so that about 4 % of pixels are out of candidate. Median of ``--repeats`` steps after a warm-up.
On CUDA the step runs as the GPU path does (channels-last, cuDNN autotuning, bf16/fp16 autocast).

Run: ``.venv/bin/python -m benchmarks.network_step`` (CPU, batch 2), or on a GPU
``python -m benchmarks.network_step --device cuda --batch 16``.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

from ocr import oc_pixels, ocr_loss, prior_matrix
from pipelines.accel import configure_backend, place_batch, place_model
from pipelines.config import from_flat
from pipelines.engine import Precision
from pipelines.models import build_seg_model, normalize_imagenet

CLASSES = 20  # VOC foreground classes


def _time(fn: Callable[[], None], repeats: int, device: torch.device) -> float:
    fn()  # warm-up (cuDNN autotuning, allocator)
    times = []
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def _tags(b: int, gen: torch.Generator) -> Tensor:
    """One or two tagged classes per image, as in VOC (about 1.5 on average)."""
    tags = torch.zeros(b, CLASSES, dtype=torch.long)
    for i in range(b):
        tags[i, torch.randperm(CLASSES, generator=gen)[: 1 + i % 2]] = 1
    return tags


def _trained_like(logits: Tensor, tags: Tensor, oc_share: float, gen: torch.Generator) -> Tensor:
    """Lift candidate channels so that only about ``oc_share`` of the pixels stay out of candidate."""
    b, _, h, w = logits.shape
    cand = torch.cat([torch.ones(b, 1, dtype=torch.long), tags], dim=1).bool().to(logits.device)  # (B, K)
    lift = (torch.rand(b, 1, h, w, generator=gen) >= oc_share).to(logits.device, logits.dtype) * 12.0
    return logits + cand[:, :, None, None] * lift


def _model_parts(args: argparse.Namespace, device: torch.device) -> tuple[Callable[[], Tensor], Tensor]:
    cfg = from_flat({"model.name": "deeplab", "model.backbone": "resnet50", "model.head": "v2",
                     "model.output_stride": args.output_stride, "seg.init": "scratch"})
    torch.manual_seed(0)
    configure_backend(device)
    model = place_model(build_seg_model(cfg, CLASSES, 3), device, channels_last=True).train()
    images = normalize_imagenet(torch.rand(args.batch, 3, args.size, args.size))
    x = place_batch(images, device, channels_last=True)
    precision = Precision(device, enabled=True)

    def forward() -> Tensor:
        with precision.autocast():
            return model(x)  # (B, 21, H, W)

    return forward, x


def measure(args: argparse.Namespace) -> list[dict[str, float | str]]:
    """One row per (logits, selection): milliseconds of each part and the OCR term's share of the step."""
    device = torch.device(args.device)
    forward, _ = _model_parts(args, device)
    gen = torch.Generator().manual_seed(0)
    tags = _tags(args.batch, gen)
    target = torch.randint(0, CLASSES + 1, (args.batch, args.size, args.size), generator=gen).to(device)
    prior = prior_matrix(_tags(500, gen), "cooc_minmax").to(device)

    def network() -> None:
        logits = forward()
        logits.backward(torch.ones_like(logits) / logits.numel())

    t_net = _time(network, args.repeats, device)
    with torch.no_grad():
        at_init = forward().detach()
    logits_sets = {"at init": at_init, "trained-like": _trained_like(at_init.float(), tags, 0.04, gen)}

    def ce() -> None:
        z = logits.clone().requires_grad_(True)
        F.cross_entropy(z.float(), target, ignore_index=255).backward()

    rows: list[dict[str, float | str]] = []
    for name, logits in logits_sets.items():
        t_ce = _time(ce, args.repeats, device)
        share = float(oc_pixels(logits.float(), tags.to(device)).float().mean())
        for selection in ("oc", "all"):
            def ocr(sel: str = selection, z0: Tensor = logits) -> None:
                z = z0.clone().requires_grad_(True)
                ocr_loss(z, tags.to(device), prior, delta=6.0, tau=0.2, selection=sel, group="paper").backward()

            t_ocr = _time(ocr, args.repeats, device)
            step = t_net + t_ce + t_ocr
            rows.append({"logits": name, "oc": share, "selection": selection, "net": t_net, "ce": t_ce,
                         "ocr": t_ocr, "step": step})
    return rows


def main() -> None:
    """Print the table."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--size", type=int, default=321)
    parser.add_argument("--output-stride", type=int, default=8, choices=(8, 16))
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    where = torch.cuda.get_device_name() if args.device == "cuda" else f"CPU, {args.threads} thread(s)"
    print(f"DeepLab-v2 ResNet-50 (stride {args.output_stride}), {args.size}², batch {args.batch}, 21 channels; "
          f"{where}; torch {torch.__version__}; median of {args.repeats} after a warm-up")
    print("| logits | OC pixels | selection | network fwd+bwd (ms) | CE (ms) | OCR (ms) | step (ms) | OCR share |")
    print("|---|---|---|---|---|---|---|---|")
    for r in measure(args):
        print(f"| {r['logits']} | {100 * float(r['oc']):.0f} % | {r['selection']} | {1e3 * float(r['net']):.0f} "
              f"| {1e3 * float(r['ce']):.1f} | {1e3 * float(r['ocr']):.1f} | {1e3 * float(r['step']):.0f} "
              f"| {100 * float(r['ocr']) / float(r['step']):.1f} % |")


if __name__ == "__main__":
    main()
