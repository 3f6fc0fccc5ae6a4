"""``ocr-study pseudo-masks``: stage 1 of a trial config, its pseudo-masks written as index PNGs to look at
and to reuse (``stage1.source: masks``) in another study."""

from __future__ import annotations

import shutil
from collections.abc import Sequence
from pathlib import Path

from study.commands.train import BarReporter, UsageError, load_trial_config, parse_overrides


def _refuse_overwrite(out: Path) -> None:
    if out.exists() and any(out.glob("*.png")):
        raise UsageError(f"{out} already holds PNG files; choose an empty or new --out folder")


def pseudo_masks_command(config: Path | None, overrides: Sequence[str], out: Path) -> int:
    """Compute (or read from the cache) the CAM pseudo-masks of a trial config and write them to ``out``:
    one palette PNG per training image (``<image id>.png``; ``<index>.png`` for the digit scenes), values
    0 background, 1..C the classes. Returns the exit code."""
    from pipelines.data import check_data, open_data, write_index_png
    from pipelines.stage_cam import run_cam_stage

    cfg = load_trial_config(config, parse_overrides(overrides))
    if cfg.stage1.source != "cam":
        raise UsageError("stage1.source = 'masks' already is a folder of PNGs; pseudo-masks writes the CAM "
                         "stage's (stage1.source=cam)")
    _refuse_overwrite(out)
    check_data(cfg)
    reporter = BarReporter()
    try:
        result = run_cam_stage(cfg, open_data(cfg), reporter)
    finally:
        reporter.close()
    out.mkdir(parents=True, exist_ok=True)
    if isinstance(result.pseudo_masks, Path):
        pngs = sorted(result.pseudo_masks.glob("*.png"))
        for png in pngs:
            shutil.copyfile(png, out / png.name)
        count = len(pngs)
    else:
        width = len(str(len(result.pseudo_masks)))
        for i, mask in enumerate(result.pseudo_masks):
            write_index_png(out / f"{i:0{width}d}.png", mask.numpy())
        count = len(result.pseudo_masks)
    miou = result.metrics.get("pseudo_miou")
    score = f"; pseudo-mask mIoU {miou:.4f}" if miou is not None else ""
    print(f"wrote {count} pseudo-masks to {out}{score}")
    return 0
