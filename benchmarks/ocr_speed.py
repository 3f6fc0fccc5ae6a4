"""OCR loss speed, measured side by side with cross-entropy on the same logits.

Prints, for B=8, 128×128 and 21/81 channels, on random logits (most pixels out of candidate) and on logits
where 5% are (as once a network trains), OCR forward+backward time over ``F.cross_entropy``
forward+backward (aim: ≤ 2×), and the speed-up of the vectorised loss over the per-pixel Python
implementation of the spec on a small input.

Run: ``.venv/bin/python -m benchmarks.ocr_speed`` (``--threads N``, ``--repeats N``).
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F

from ocr import oc_pixels, ocr_loss, prior_matrix
from ocr._reference import ocr_loss_reference


def _time(fn: Callable[[], None], repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def _inputs(b: int, k: int, size: int, seed: int = 0, oc_share: float | None = None) -> tuple[torch.Tensor, ...]:
    """Random logits and tags; with ``oc_share``, candidate channels are lifted so that only about that share of
    pixels is out of candidate (as with a trained network) instead of most of them."""
    gen = torch.Generator().manual_seed(seed)
    logits = torch.randn(b, k, size, size, generator=gen) * 2
    tags = (torch.rand(b, k - 1, generator=gen) < 0.15).long()
    if oc_share is not None:
        cand = torch.cat([torch.ones(b, 1, dtype=torch.long), tags], dim=1).bool()  # (B, K)
        lift = (torch.rand(b, 1, size, size, generator=gen) >= oc_share).float() * 12.0  # (B, 1, H, W)
        logits = logits + cand[:, :, None, None] * lift
    target = torch.randint(0, k, (b, size, size), generator=gen)
    train_tags = (torch.rand(500, k - 1, generator=gen) < 0.15).long()
    return logits, tags, target, prior_matrix(train_tags, "cooc_minmax")


def bench_vs_ce(k: int, selection: str, repeats: int, oc_share: float | None = None) -> tuple[float, float, float]:
    """Median seconds of CE and OCR forward+backward for B=8, 128×128, ``k`` channels, and the OC share."""
    logits, tags, target, prior = _inputs(8, k, 128, oc_share=oc_share)
    share = float(oc_pixels(logits, tags).float().mean())

    def ce() -> None:
        z = logits.clone().requires_grad_(True)
        F.cross_entropy(z, target, ignore_index=255).backward()

    def ocr() -> None:
        z = logits.clone().requires_grad_(True)
        ocr_loss(z, tags, prior, delta=6.0, tau=0.2, selection=selection, group="paper").backward()

    return _time(ce, repeats), _time(ocr, repeats), share


def bench_vs_reference(repeats: int) -> tuple[float, float]:
    """Median seconds of the per-pixel Python loss and the vectorised one on B=2, 21 channels, 16×16."""
    logits, tags, _, prior = _inputs(2, 21, 16, seed=1)
    kw = dict(delta=6.0, tau=0.2, selection="all", group="paper")

    def ref() -> None:
        ocr_loss_reference(logits.clone().requires_grad_(True), tags, prior, **kw).backward()  # type: ignore[arg-type]

    def vec() -> None:
        ocr_loss(logits.clone().requires_grad_(True), tags, prior, **kw).backward()  # type: ignore[arg-type]

    return _time(ref, max(1, repeats // 5)), _time(vec, repeats)


def main() -> None:
    """Print the benchmark table."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=15)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {args.threads} thread(s), median of {args.repeats}")
    print("| logits | OC pixels | channels | selection | CE fwd+bwd (ms) | OCR fwd+bwd (ms) | OCR / CE |")
    print("|---|---|---|---|---|---|---|")
    for name, oc_share in (("random", None), ("trained-like", 0.05)):
        for k in (21, 81):
            for selection in ("oc", "all"):
                ce, ocr, share = bench_vs_ce(k, selection, args.repeats, oc_share)
                print(f"| {name} | {100 * share:.0f}% | {k} | {selection} | {ce * 1e3:.1f} | {ocr * 1e3:.1f} "
                      f"| {ocr / ce:.2f}x |")
    ref, vec = bench_vs_reference(args.repeats)
    print(f"\nper-pixel Python reference (B=2, 21 ch, 16x16): {ref * 1e3:.0f} ms; "
          f"vectorised: {vec * 1e3:.2f} ms; speed-up {ref / vec:.0f}x")


if __name__ == "__main__":
    main()
