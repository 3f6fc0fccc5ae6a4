"""The default digit-scenes benchmark: baseline vs OCR pixel selections over seeds, one core per trial.

Runs ``ocr.selection`` ∈ {none, all, oc} × seeds with the default trial config (both stages, stage 1
shared per seed through the cache), two trials at a time, and prints final-epoch validation mIoU,
oracle-tag mIoU, OC rates and trial time as mean ± std over seeds.

Run: ``.venv/bin/python -m benchmarks.selection_figures [--seeds 0 1 2] [--jobs 2] [key=value ...]``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

SELECTIONS = ("none", "all", "oc")
COLUMNS = ("val_miou", "val_oracle_miou", "val_oc_rate_fg", "val_oc_image_rate", "pseudo_miou", "seconds")


def _one(args: tuple[str, int, dict[str, Any], str]) -> dict[str, Any]:
    selection, seed, overrides, cache = args
    from pipelines.config import from_flat
    from pipelines.reporter import ListReporter
    from pipelines.trial import run_trial

    cfg = from_flat({**overrides, "ocr.selection": selection, "seed": seed, "cache_dir": cache,
                     "threads": 1})
    start = time.perf_counter()
    final = run_trial(cfg, ListReporter(), Path(cache) / "runs" / f"{selection}-{seed}-{time.time_ns()}")
    return {"selection": selection, "seed": seed, **final, "seconds": time.perf_counter() - start}


def _fmt(values: list[float], scale: float) -> str:
    mean = statistics.fmean(values) * scale
    std = statistics.stdev(values) * scale if len(values) > 1 else float("nan")
    return f"{mean:.1f} ± {std:.1f}" if len(values) > 1 else f"{mean:.1f} (n = 1)"


def main() -> None:
    """Run the grid and print the table."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--cache", default=".ocr-study/bench-cache")
    parser.add_argument("--json", type=Path, help="also write every trial's final metrics here")
    parser.add_argument("overrides", nargs="*", help="trial config key=value overrides")
    args = parser.parse_args()
    overrides = dict(item.split("=", 1) for item in args.overrides)
    # Stage 1 of each seed first (one trial per seed), then the rest reuse it from the cache.
    jobs = [(sel, seed, overrides, args.cache) for seed in args.seeds for sel in SELECTIONS]
    with ProcessPoolExecutor(args.jobs) as pool:
        rows = list(pool.map(_one, jobs))
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))
    print("| selection | val mIoU | oracle-tag mIoU | OC % of fg predictions | images with OC % | "
          "pseudo-mask mIoU | trial s |")
    print("|---|---|---|---|---|---|---|")
    for sel in SELECTIONS:
        mine = [r for r in rows if r["selection"] == sel]
        cells = [_fmt([r[c] for r in mine], 1.0 if c == "seconds" else 100.0) for c in COLUMNS]
        print(f"| {sel} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
