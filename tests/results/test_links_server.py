"""The report's MLflow links against a real ``mlflow server``: each link opens its trial's run in the UI."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from results import run_links
from tests.conftest import require_executable

pytestmark = pytest.mark.slow


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _up(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/health", timeout=2) as reply:
            return bool(reply.status == 200)
    except OSError:
        return False


@pytest.fixture()
def server(tmp_path: Path) -> Iterator[str]:
    """An MLflow server on a SQLite store, on a free local port (ended with its workers after the test)."""
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    cmd = [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", f"sqlite:///{tmp_path / 'm.db'}",
           "--host", "127.0.0.1", "--port", str(port), "--workers", "1"]
    proc = subprocess.Popen(cmd, cwd=tmp_path, start_new_session=True, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL,
                            env={**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"})
    try:
        end = time.monotonic() + 120
        while not _up(url):
            assert proc.poll() is None and time.monotonic() < end, "mlflow server did not start"
            time.sleep(0.5)
        yield url
    finally:
        os.killpg(proc.pid, signal.SIGTERM)  # its own session: the server and its workers
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=20)


def test_each_link_opens_its_trials_run_in_the_mlflow_ui(server: str, tmp_path: Path) -> None:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=server)
    experiment = client.create_experiment("linked")
    runs = {t: client.create_run(experiment, tags={"ocr_study.trial_id": t}, run_name=f"oc · {t}").info.run_id
            for t in ("aa11", "bb22")}
    links = run_links(server, "linked")
    assert links is not None
    assert dict(links.runs) == {t: f"{server}/#/experiments/{experiment}/runs/{r}" for t, r in runs.items()}
    chromium = require_executable("chromium", "chromium-browser")
    cmd = [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
           "--virtual-time-budget=20000", "--dump-dom", links.runs["bb22"]]
    dom = subprocess.run(cmd, capture_output=True, text=True, timeout=180, check=False).stdout
    assert "oc · bb22" in dom and runs["bb22"] in dom, "the run page does not show the run"
    assert "oc · aa11" not in dom
