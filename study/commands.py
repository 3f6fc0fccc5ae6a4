"""The study commands of the CLI: run, resume, status, ui."""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

from study.plan import format_plan, plan
from study.runner import StudyError, load_study_spec, resolve_spec


def run(args: argparse.Namespace) -> int:
    """``ocr-study run SPEC [--dry-run] [--address ADDR] [--fresh]``."""
    spec = resolve_spec(args.spec)
    if args.dry_run:
        print(format_plan(plan(spec)))
        return 0
    from study.runner import run_study

    folder = run_study(spec, address=args.address, fresh=args.fresh)
    print(f"study {spec.name} finished: {folder}\n  status: ocr-study status {spec.name}\n"
          f"  MLflow: ocr-study ui {spec.name}")
    return 0


def resume(args: argparse.Namespace) -> int:
    """``ocr-study resume NAME``."""
    from study.runner import resume_study

    folder = resume_study(args.name, args.storage, args.address)
    print(f"study {args.name} finished: {folder}")
    return 0


def status(args: argparse.Namespace) -> int:
    """``ocr-study status NAME``."""
    from study.runner import trial_table
    from study.status_cmd import format_status

    spec = load_study_spec(args.name, args.storage)
    print(format_status(spec, trial_table(spec)))
    return 0


def _latest_study(storage: Path) -> str:
    found = sorted(storage.glob("*/spec.yaml"), key=lambda p: p.stat().st_mtime)
    if not found:
        raise StudyError(f"no study in {storage.absolute()}; run one with `ocr-study run quick`")
    return found[-1].parent.name


def ui(args: argparse.Namespace) -> int:
    """``ocr-study ui [NAME]``: the MLflow UI on 127.0.0.1, until Ctrl-C."""
    storage = Path(args.storage or ".ocr-study/studies")
    spec = load_study_spec(args.name or _latest_study(storage), args.storage)
    url = f"http://127.0.0.1:{args.port}"
    print(f"MLflow UI for study {spec.name}: {url}  (Ctrl-C stops it)", flush=True)
    cmd = [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", spec.tracking_uri,
           "--host", "127.0.0.1", "--port", str(args.port), "--workers", "1"]
    try:
        return subprocess.call(cmd, env={**__import__("os").environ,
                                         "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"})
    except KeyboardInterrupt:
        return 0
