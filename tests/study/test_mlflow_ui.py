"""``ocr-study ui`` as a user meets it: the URL it prints opens MLflow's runs table in headless Chromium, in
the training view (not GenAI), with every run, their names (a run ASHA stopped says so), val mIoU in percent
and the outcome as columns; Ctrl-C (SIGINT) then leaves no listener."""

from __future__ import annotations

import html
import re
import signal
import socket
import subprocess
import sys
from pathlib import Path

import psutil
import pytest
import yaml

from study.spec import load_spec
from tests.conftest import require_executable
from tests.docker.services import http_ok, wait_until
from tests.study.test_tracking import track_fake_study
from tests.study.test_tune_study import tiny_doc

pytestmark = pytest.mark.slow
OCR_STUDY = str(Path(sys.executable).parent / "ocr-study")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _listening(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


def _page_text(chromium: str, url: str) -> str:
    """The text of the page at ``url`` once its scripts ran (the DOM, tags and scripts stripped)."""
    cmd = [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
           "--virtual-time-budget=20000", "--window-size=1600,1000", "--dump-dom", url]
    dom = subprocess.run(cmd, capture_output=True, text=True, timeout=180, check=False).stdout
    dom = re.sub(r"<(script|style)\b.*?</\1>", " ", dom, flags=re.S)
    return html.unescape(re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", dom)))


def test_ui_opens_on_the_runs_table_and_ctrl_c_stops_it(tmp_path: Path) -> None:
    chromium = require_executable("chromium", "chromium-browser")
    spec = load_spec(tiny_doc(tmp_path, tmp_path / "cache"))
    folder = Path(spec.study_dir)
    folder.mkdir(parents=True)
    (folder / "spec.yaml").write_text(yaml.safe_dump(spec.to_dict()))
    track_fake_study(spec.tracking_uri, spec.name, folder / "mlartifacts", spec.to_dict())
    port = _free_port()
    proc = subprocess.Popen([OCR_STUDY, "ui", spec.name, "--storage", spec.storage, "--port", str(port)],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    started: list[psutil.Process] = []
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        url = re.search(r"http://\S+", line)
        assert url and "/#/experiments/" in url.group() and "/runs?viewStateShareKey=" in url.group(), line
        assert "workflowType=machine_learning" in url.group(), line
        wait_until(lambda: http_ok(f"http://127.0.0.1:{port}/health"), 120, "the MLflow UI",
                   lambda: proc.poll() is None)
        started = psutil.Process(proc.pid).children(recursive=True)
        text = _page_text(chromium, url.group())
        table = text[text.find("Run Name"):]
        assert "Run Name" in text, f"no runs table: {text[:500]}"
        assert "Model registry" in text and "Judges" not in text, text[:500]  # the training view's side bar
        names = ("search · none · s0", "search · oc · δ 7.7 · τ 0.06 · s1",
                 "search · oc · δ 2 · τ 0.2 · s0 · stopped by ASHA at epoch 1 of 4")
        for name in names:
            assert name in table, f"run {name!r} not listed: {table[:800]}"
        header = table[: table.find("search · ")]
        for column in ("1 val/miou pct", "ocr.delta", "ocr_study.outcome", "ocr_study.phase", "ocr_study.cell"):
            assert column in header, header
        assert table.count("completed") >= 2  # the outcome column of the two runs that completed
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=60) == 0
        _, alive = psutil.wait_procs(started, timeout=10)
        assert not alive, f"left running: {[p.pid for p in alive]}"
        assert not _listening(port)
    finally:
        for p in [*started, psutil.Process(proc.pid) if proc.poll() is None else None]:
            if p is not None and p.is_running():
                p.kill()
