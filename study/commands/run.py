"""``ocr-study run`` and ``ocr-study resume``: the study on Ray Tune, a summary of how it ended, its report."""

from __future__ import annotations

import argparse
import sys
from collections import Counter

from record import StopReason
from study.commands.report import report_after
from study.handle import Study, load_study, open_study, resolve_spec
from study.plan import format_plan


def run(args: argparse.Namespace) -> int:
    """``ocr-study run SPEC [key=value ...] [--dry-run] [--address ADDR] [--fresh]``, then the study's report
    (not after ``--dry-run``; after failed trials too: the others are reported)."""
    study = open_study(resolve_spec(args.spec, getattr(args, "overrides", ())))
    if args.dry_run:
        print(format_plan(study.plan))
        return 0
    from study.runner import run_study, stop_ray_in_background

    run_study(study, address=args.address, fresh=args.fresh)
    stopping = stop_ray_in_background()  # while the report is written
    try:
        code = _exit_code(_finished(study), args)
        report_after(study)
    finally:
        stopping.join()
    return code


def resume(args: argparse.Namespace) -> int:
    """``ocr-study resume NAME``, then the study's report."""
    from study.runner import resume_study, stop_ray_in_background

    study = load_study(args.name, args.storage)
    resume_study(study, args.address)
    stopping = stop_ray_in_background()
    try:
        code = _exit_code(_finished(study), args)
        report_after(study)
    finally:
        stopping.join()
    return code


def _exit_code(failed: int, args: argparse.Namespace) -> int:
    """1 when trials failed (a failure while running), unless ``--allow-failures``."""
    if failed and not getattr(args, "allow_failures", False):
        print(f"ocr-study: {failed} trials failed (see above); exit code 1 (--allow-failures: 0)",
              file=sys.stderr)
        return 1
    return 0


def _finished(study: Study) -> int:
    """Say how the study ended (trials by why they stopped, failed ones by reason) and where to look next;
    returns how many trials failed."""
    from study.runner import trial_table

    rows = trial_table(study)
    reasons = Counter(StopReason(r["stop_reason"]) for r in rows)  # the words `ocr-study status` uses
    failed = reasons.pop(StopReason.FAILED, 0)
    ordered = sorted(reasons.items(), key=lambda item: item[0].rank)
    counts = ", ".join([*(f"{n} {r.text}" for r, n in ordered), f"{failed} failed"])
    print(f"study {study.name} ended: {len(rows)} trials, {counts}\n  folder: {study.folder}\n"
          f"  status: ocr-study status {study.where}\n  MLflow: ocr-study ui {study.where}")
    if failed:
        from study.failures import failure_reasons

        print(f"  {failed} failed trials: their errors are in `ocr-study status {study.where}` and MLflow")
        for reason, n in failure_reasons(rows):
            print(f"    {n} × {reason}")
    return failed
