"""How collecting and reporting a study scales: 1,000 / 3,000 / 10,000 trials × 50 epochs.

Each size is a synthetic study in the study record's format (``results.testing.write_synthetic_study``:
``study.json``, and per trial a ``trial.json`` with the whole config, padded to a real trial's ~55 keys,
and an ``epochs.jsonl`` line per epoch), written into a temporary folder. Prints the seconds to collect
(record → Parquet, read back) and to report (tables, plots, every format), the best of two runs after an
untimed warm-up, and how the time grows from the smallest to the largest size (linear: the ratio of sizes).

Before the record (commit 677c106), collecting read Tune's own files (``result.json`` lines carrying the
whole config, cut by bytes); on a shared 2-core machine that measured 0.73 / 2.10 / 6.60 s to collect
1,000 / 3,000 / 10,000 trials × 50 epochs (93 / 280 / 934 MB of Tune files).

Run: ``.venv/bin/python -m benchmarks.results_scale`` (``--sizes 1000,3000,10000 --epochs 50``).
"""

from __future__ import annotations

import argparse
import math
import os
import shutil
import tempfile
import time
from pathlib import Path

from results import collect_study, load_dataset, write_report
from results.testing import SyntheticStudy, write_synthetic_study

SELECTIONS = ("none", "all", "oc")
SEEDS = (0, 1, 2, 3, 4)
EXTRA_KEYS = 40
REPEATS = 2


def _study(trials: int, epochs: int) -> SyntheticStudy:
    per_seed = math.ceil(trials / len(SEEDS))
    settings = math.ceil((per_seed - 1) / (len(SELECTIONS) - 1))  # the `none` cell has one setting
    return SyntheticStudy(name=f"scale{trials}", settings=settings, seeds=SEEDS, epochs=epochs, failed=5,
                          max_trials=trials, artifacts=False, extra_keys=EXTRA_KEYS)


def measure(trials: int, epochs: int, root: Path) -> dict[str, float]:
    """Write one synthetic study, then time collecting and reporting it."""
    start = time.perf_counter()
    folder = write_synthetic_study(root, _study(trials, epochs))
    os.sync()  # the synthetic files reach the disk before the clock starts
    written = time.perf_counter() - start
    size = sum(p.stat().st_size for p in (folder / "trials").rglob("*") if p.is_file())
    collected, reported = math.inf, math.inf
    for _ in range(REPEATS):  # the best of a few: the machine is shared
        start = time.perf_counter()
        dataset = load_dataset(collect_study(folder))
        collected = min(collected, time.perf_counter() - start)
        start = time.perf_counter()
        write_report(dataset, folder / "report")
        reported = min(reported, time.perf_counter() - start)
    if len(dataset.trials) != trials or len(dataset.curves) != int(dataset.trials["epochs"].sum()):
        raise RuntimeError("the collected dataset does not match the study written")
    return {"write": written, "collect": collected, "report": reported, "mb": size / 2**20,
            "reports": float(len(dataset.curves))}


def main() -> None:
    """Measure each size and print seconds and growth."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="1000,3000,10000", help="trial counts, comma-separated")
    parser.add_argument("--epochs", type=int, default=50)
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    results: dict[int, dict[str, float]] = {}
    with tempfile.TemporaryDirectory(prefix="results-warmup-") as warm:  # imports and font caches, untimed
        measure(50, args.epochs, Path(warm))
    print(f"{'trials':>7} {'epochs':>6} {'reports':>9} {'record MB':>9} {'collect s':>10} {'report s':>9} "
          f"{'total s':>8}  (writing the synthetic study, untimed)")
    for n in sizes:
        root = Path(tempfile.mkdtemp(prefix="results-scale-"))
        try:
            r = results[n] = measure(n, args.epochs, root)
        finally:
            shutil.rmtree(root, ignore_errors=True)
        print(f"{n:>7} {args.epochs:>6} {int(r['reports']):>9} {r['mb']:>9.0f} {r['collect']:>10.2f} "
              f"{r['report']:>9.2f} {r['collect'] + r['report']:>8.2f}  ({r['write']:.1f} s)", flush=True)
    low, high = results[sizes[0]], results[sizes[-1]]
    ratio = sizes[-1] / sizes[0]
    for key in ("collect", "report"):
        print(f"{key}: {high[key] / low[key]:.1f}× the time for {ratio:.0f}× the trials "
              f"({'linear or better' if high[key] / low[key] <= ratio * 1.2 else 'worse than linear'})")


if __name__ == "__main__":
    main()
