"""``ocr-study ui``: the MLflow UI of a study's tracking store, on 127.0.0.1, until Ctrl-C."""

from __future__ import annotations

import argparse
import os
import signal
import sys

from record import SPEC_FILE
from storage import is_remote, local_path, mlflow_artifacts
from study.handle import Study, UnknownStudyError, load_study
from study.spec import DEFAULT_STORAGE


def _latest_study(storage: str) -> str:
    root = local_path(storage)
    found = sorted(root.glob(f"*/{SPEC_FILE}"), key=lambda p: p.stat().st_mtime)
    if not found:
        raise UnknownStudyError(f"no study in {root.absolute()}; run one with `ocr-study run quick`")
    return found[-1].parent.name


def ui(args: argparse.Namespace) -> int:
    """``ocr-study ui [NAME]``: the MLflow UI on 127.0.0.1, until Ctrl-C."""
    if not args.name and args.storage and is_remote(args.storage):
        raise UnknownStudyError(f"name the study: `ocr-study ui NAME --storage {args.storage}`")
    study = load_study(args.name or _latest_study(args.storage or DEFAULT_STORAGE), args.storage)
    from study.tracking import prepare_ui, runs_url

    prepare_ui(study.spec.tracking_uri, study.experiment)
    url = runs_url(f"http://127.0.0.1:{args.port}", study.spec.tracking_uri, study.experiment)
    cmd, env = mlflow_server(study, args.port)
    print(f"MLflow UI for study {study.name}: {url}  (Ctrl-C stops it)", flush=True)
    from study.processes import call_in_own_group  # ended as a group: mlflow, uvicorn/gunicorn workers

    signal.signal(signal.SIGINT, signal.default_int_handler)  # Ctrl-C stops it even when started in the background

    return call_in_own_group(cmd, env)


def mlflow_server(study: Study, port: int, host: str = "127.0.0.1") -> tuple[list[str], dict[str, str]]:
    """The ``mlflow server`` command line and environment that serve a study's tracking store.

    For a study on an object store, artifacts uploaded through the server go to the same store, under
    ``<study>/mlflow-artifacts`` (``--artifacts-destination``), and the store's endpoint is passed on to
    MLflow's S3 client (``MLFLOW_S3_ENDPOINT_URL``); credentials come from the AWS variables as for the
    study. A tracking server (``tracking.uri: http://...``) is not served again: that is an error.
    """
    uri = study.spec.tracking_uri
    if uri.startswith(("http://", "https://")):
        raise UnknownStudyError(f"study {study.name!r} is tracked by the server {uri}: open it there")
    cmd = [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", uri,
           "--host", host, "--port", str(port), "--workers", "1"]
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    if study.remote:
        cmd += ["--artifacts-destination", mlflow_artifacts(study.uri)]
        endpoint = study.store.endpoint_url
        if endpoint:
            env.setdefault("MLFLOW_S3_ENDPOINT_URL", endpoint)
    return cmd, env
