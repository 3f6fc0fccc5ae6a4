"""``ocr-study train``: one trial in this process, with a progress bar and a metrics table at the end."""

from __future__ import annotations

import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

from pipelines.config import TrialConfig, from_flat, nested_to_flat
from record import HOME


class UsageError(ValueError):
    """Bad input from the user: printed without a traceback, exit code 2."""


def parse_overrides(items: Sequence[str]) -> dict[str, Any]:
    """``["ocr.delta=2", "seed=1"]`` → ``{"ocr.delta": 2, "seed": 1}`` (values parsed as YAML scalars)."""
    out: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise UsageError(f"override {item!r} is not of the form key=value (e.g. ocr.delta=2)")
        out[key.strip()] = yaml.safe_load(raw) if raw else ""
    return out


def load_trial_config(path: Path | None, overrides: Mapping[str, Any]) -> TrialConfig:
    """A trial config from an optional YAML file (nested or dotted keys) and ``key=value`` overrides."""
    values: dict[str, Any] = {}
    if path is not None:
        if not path.is_file():
            raise UsageError(f"config file {path} not found")
        tree = yaml.safe_load(path.read_text()) or {}
        if not isinstance(tree, dict):
            raise UsageError(f"{path}: expected a mapping of config keys at the top level")
        values.update(nested_to_flat(tree))
    values.update(overrides)
    try:
        return from_flat(values)
    except ValueError as err:
        raise UsageError(str(err)) from err


class BarReporter:
    """Shows a tqdm bar per stage and remembers each epoch's metrics.

    Off a terminal (output to a file or a pipe) there is no bar; instead one line goes to stdout when a
    stage starts and one per report (``lines``; default: when stderr, the bar's stream, is not a terminal).
    """

    def __init__(self, lines: bool | None = None) -> None:
        self.reports: list[dict[str, float]] = []
        self._bar: Any = None
        self._stage = ""
        self._done, self._total = 0, 0
        self.lines = not sys.stderr.isatty() if lines is None else lines
        self._start = time.perf_counter()

    def progress(self, stage: str, done: int, total: int) -> None:
        """Advance (or open) the bar of ``stage``."""
        from tqdm import tqdm

        if stage != self._stage:
            self.close()
            # disable=None: no bar when stderr is not a terminal (a log file gets lines, not 10^4 redraws)
            self._bar = tqdm(total=total, desc=f"{stage:>4}", unit="step", dynamic_ncols=True,
                             disable=True if self.lines else None)
            self._stage = stage
            if self.lines:
                print(f"[{self._elapsed()}] stage {stage}: {total} steps", flush=True)
        self._done, self._total = done, total
        self._bar.n = done
        self._bar.refresh()

    def report(self, metrics: Mapping[str, float], checkpoint_dir: Path | None = None) -> None:
        """Keep the metrics and show the headline figures on the bar (off a terminal: print a line)."""
        self.reports.append(dict(metrics))
        if self._bar is not None:
            self._bar.set_postfix(epoch=int(metrics["epoch"]), miou=f"{metrics['val_miou']:.3f}",
                                  oc=f"{metrics['val_oc_rate_fg']:.3f}")
        if self.lines:
            figures = "  ".join(f"{k} {metrics[k]:.4f}" for k in LINE_KEYS if k in metrics)
            print(f"[{self._elapsed()}] {self._stage or 'seg'} step {self._done}/{self._total}  "
                  f"epoch {int(metrics['epoch'])}  {figures}", flush=True)

    def _elapsed(self) -> str:
        seconds = int(time.perf_counter() - self._start)
        return f"{seconds // 60:d}:{seconds % 60:02d}"

    def close(self) -> None:
        """Close the open bar, if any."""
        if self._bar is not None:
            self._bar.close()
            self._bar = None


def format_table(rows: list[dict[str, float]], keys: Sequence[str]) -> str:
    """A plain-text table of ``keys`` (columns) over ``rows``."""
    header = ["epoch", *keys]
    lines = [header]
    lines += [[f"{int(r['epoch'])}"] + [f"{r.get(k, float('nan')):.4f}" for k in keys] for r in rows]
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    return "\n".join("  ".join(cell.rjust(w) for cell, w in zip(line, widths, strict=True)) for line in lines)


LINE_KEYS = ("val_miou", "val_oc_rate_fg", "train_ce", "train_ocr", "epoch_seconds")
FINAL_KEYS = ("val_final_miou", "val_final_oracle_miou", "val_final_oc_rate_fg", "val_final_oc_rate",
              "val_final_miou_crf")
TABLE_KEYS = ("val_miou", "val_oracle_miou", "val_oc_rate_fg", "val_oc_rate", "train_ce", "train_ocr",
              "epoch_seconds")


def train_command(config: Path | None, overrides: Sequence[str], out: Path | None) -> int:
    """Run one trial; returns the exit code."""
    from pipelines.trial import run_trial

    cfg = load_trial_config(config, parse_overrides(overrides))
    work_dir = out or Path(HOME) / "train" / time.strftime("%Y%m%d-%H%M%S")
    reporter = BarReporter()
    start = time.perf_counter()
    try:
        final = run_trial(cfg, reporter, work_dir)
    finally:
        reporter.close()
    print(format_table(reporter.reports, TABLE_KEYS))
    final_keys = [k for k in FINAL_KEYS if k in final]
    if final_keys:  # eval.final_scales: the last report's figures by the papers' protocol
        print(f"last report, final protocol ({cfg.eval.final.describe() if cfg.eval.final else ''}): "
              + ", ".join(f"{k} {final[k]:.4f}" for k in final_keys))
    print(f"\npseudo-mask mIoU {final.get('pseudo_miou', float('nan')):.4f}; "
          f"trial took {time.perf_counter() - start:.0f} s; checkpoint in {work_dir / 'checkpoint'}")
    return 0
