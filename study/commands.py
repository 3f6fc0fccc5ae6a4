"""The study commands of the CLI: run, resume, status, ui."""

from __future__ import annotations

import argparse
import signal
import sys
from pathlib import Path

from record import SPEC_FILE
from study.plan import format_plan, plan
from study.runner import UnknownStudyError, load_study_spec, resolve_spec
from study.spec import DEFAULT_STORAGE, StudySpec


def run(args: argparse.Namespace) -> int:
    """``ocr-study run SPEC [key=value ...] [--dry-run] [--address ADDR] [--fresh]``."""
    spec = resolve_spec(args.spec, getattr(args, "overrides", ()))
    if args.dry_run:
        print(format_plan(plan(spec)))
        return 0
    from study.runner import run_study

    folder = run_study(spec, address=args.address, fresh=args.fresh)
    return _exit_code(_finished(spec, folder), args)


def _exit_code(failed: int, args: argparse.Namespace) -> int:
    """1 when trials failed (a failure while running), unless ``--allow-failures``."""
    if failed and not getattr(args, "allow_failures", False):
        print(f"ocr-study: {failed} trials failed (see above); exit code 1 (--allow-failures: 0)",
              file=sys.stderr)
        return 1
    return 0


def _finished(spec: StudySpec, folder: Path) -> int:
    """Say how the study ended (trials by outcome, failed ones by reason) and where to look next;
    returns how many trials failed."""
    from collections import Counter

    from study.runner import trial_table
    from study.status_cmd import trial_state

    rows = trial_table(spec)
    states = Counter(trial_state(spec, r) for r in rows)  # the words `ocr-study status` uses
    failed = states.pop("failed", 0)
    counts = ", ".join([*(f"{n} {s}" for s, n in sorted(states.items())), f"{failed} failed"])
    where = f"{spec.name} --storage {spec.storage}" if spec.storage != DEFAULT_STORAGE else spec.name
    print(f"study {spec.name} ended: {len(rows)} trials, {counts}\n  folder: {folder}\n"
          f"  status: ocr-study status {where}\n  MLflow: ocr-study ui {where}")
    if failed:
        from study.failures import failure_reasons

        print(f"  {failed} failed trials: their errors are in `ocr-study status {where}` and MLflow")
        for reason, n in failure_reasons(rows):
            print(f"    {n} × {reason}")
    return failed


def resume(args: argparse.Namespace) -> int:
    """``ocr-study resume NAME``."""
    from study.runner import resume_study

    folder = resume_study(args.name, args.storage, args.address)
    return _exit_code(_finished(load_study_spec(args.name, args.storage), folder), args)


def status(args: argparse.Namespace) -> int:
    """``ocr-study status NAME``."""
    from study.runner import trial_table
    from study.status_cmd import format_status

    spec = load_study_spec(args.name, args.storage)
    print(format_status(spec, trial_table(spec)))
    return 0


def _latest_study(storage: Path) -> str:
    found = sorted(storage.glob(f"*/{SPEC_FILE}"), key=lambda p: p.stat().st_mtime)
    if not found:
        raise UnknownStudyError(f"no study in {storage.absolute()}; run one with `ocr-study run quick`")
    return found[-1].parent.name


def ui(args: argparse.Namespace) -> int:
    """``ocr-study ui [NAME]``: the MLflow UI on 127.0.0.1, until Ctrl-C."""
    from study.storage import is_remote

    if not args.name and args.storage and is_remote(args.storage):
        raise UnknownStudyError(f"name the study: `ocr-study ui NAME --storage {args.storage}`")
    storage = Path(args.storage or DEFAULT_STORAGE)
    spec = load_study_spec(args.name or _latest_study(storage), args.storage)
    from study.tracking import runs_url

    url = runs_url(f"http://127.0.0.1:{args.port}", spec.tracking_uri, spec.tracking.experiment or spec.name)
    cmd, env = mlflow_server(spec, args.port)
    print(f"MLflow UI for study {spec.name}: {url}  (Ctrl-C stops it)", flush=True)
    from study.processes import call_in_own_group  # ended as a group: mlflow, uvicorn/gunicorn workers

    signal.signal(signal.SIGINT, signal.default_int_handler)  # Ctrl-C stops it even when started in the background

    return call_in_own_group(cmd, env)


def mlflow_server(spec: StudySpec, port: int, host: str = "127.0.0.1") -> tuple[list[str], dict[str, str]]:
    """The ``mlflow server`` command line and environment that serve a study's tracking store.

    For a study on an object store, artifacts uploaded through the server go to the same store, under
    ``<study>/mlflow-artifacts`` (``--artifacts-destination``), and the store's endpoint is passed on to
    MLflow's S3 client (``MLFLOW_S3_ENDPOINT_URL``); credentials come from the AWS variables as for the
    study. A tracking server (``tracking.uri: http://...``) is not served again: that is an error.
    """
    import os

    from study.storage import is_remote, mlflow_artifacts, open_store

    if spec.tracking_uri.startswith(("http://", "https://")):
        raise UnknownStudyError(f"study {spec.name!r} is tracked by the server {spec.tracking_uri}: open it there")
    cmd = [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", spec.tracking_uri,
           "--host", host, "--port", str(port), "--workers", "1"]
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    if is_remote(spec.study_dir):
        cmd += ["--artifacts-destination", mlflow_artifacts(spec.study_dir)]
        endpoint = open_store(spec.study_dir).endpoint_url
        if endpoint:
            env.setdefault("MLFLOW_S3_ENDPOINT_URL", endpoint)
    return cmd, env
