"""A local study's Ray, measured: which addresses its processes listen on, and that a driver without the
study's token is refused by its GCS. A tiny study runs through the real CLI; every process it made is
ended by PID."""

from __future__ import annotations

import ipaddress
import os
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest
import yaml

from tests.study.test_faults import EPOCHS, Processes, _spec_file, _wait_for

pytestmark = pytest.mark.slow
OCR_STUDY = str(Path(sys.executable).parent / "ocr-study")
CONNECT = """
import sys, ray
ray.init(address=sys.argv[1], logging_level="ERROR", log_to_driver=False)
print("CONNECTED", ray.cluster_resources().get("CPU"))
"""
# Ray 2.60's gRPC servers bind every interface whatever node address they are given (measured: `::`),
# and its runtime-env agent binds the node's address; token authentication is what guards them.
RAY_SERVERS = {"gcs_server", "raylet", "ray::RuntimeEnvAgent"}


@pytest.fixture
def procs(tmp_path: Path) -> Iterator[Processes]:
    token = tmp_path / "home" / "ray_auth_token"
    p = Processes(tmp_path, OCR_STUDY_RAY_TOKEN_FILE=str(token))
    for key in ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH"):  # the defaults under test
        p.env.pop(key, None)
    yield p
    p.kill_all()


def _listening(procs: Processes) -> list[tuple[str, str, int]]:
    """(process name, address, port) of every listening TCP socket of the study's processes."""
    procs.track()
    names = {}
    for pid, proc in procs.seen.items():
        try:
            names[pid] = proc.name() if not proc.cmdline() or "ray::" not in proc.cmdline()[0] \
                else proc.cmdline()[0].split()[0]
        except psutil.Error:
            continue
    return sorted((names[c.pid], c.laddr.ip, c.laddr.port) for c in psutil.net_connections("tcp")
                  if c.status == psutil.CONN_LISTEN and c.pid in names)


def _connect(address: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", CONNECT, address], env=env, capture_output=True, text=True,
                          timeout=180)


def test_a_local_study_has_token_auth_and_refuses_a_driver_without_the_token(tmp_path: Path,
                                                                               procs: Processes) -> None:
    path, spec = _spec_file(tmp_path, tmp_path / "cache", seeds=[0], grid={"ocr.selection": ["oc"]},
                            search={"samples": 1, "seed": 0,
                                    "params": {"ocr.delta": {"type": "uniform", "low": 0.0, "high": 4.0}}})
    doc = yaml.safe_load(path.read_text())
    doc["trial"]["seg.epochs"] = EPOCHS * 2  # long enough to look at it while it runs
    path.write_text(yaml.safe_dump(doc))
    proc = procs.start("run", str(path))
    _wait_for("the GCS to listen", lambda: any(n == "gcs_server" for n, _, _ in _listening(procs)), proc, procs)
    _wait_for("a trial to report", lambda: any(Path(spec.study_dir).glob("trials/*/epochs.jsonl")), proc,
              procs)
    listening = _listening(procs)
    print("listening:", listening)
    token = Path(procs.env["OCR_STUDY_RAY_TOKEN_FILE"])
    assert stat.S_IMODE(token.stat().st_mode) == 0o600 and len(token.read_text()) == 64
    others = [(n, ip, port) for n, ip, port in listening if not ipaddress.ip_address(ip).is_loopback]
    # Ray's servers, its workers (ray::...) and the driver's core worker: nothing else, and nothing of ours
    assert {n for n, _, _ in others if not n.startswith("ray::")} <= RAY_SERVERS | {"ocr-study"}, others
    assert not [x for x in listening if x[2] in (8265, 10001)], "no dashboard, no Ray Client server"
    gcs = next(f"127.0.0.1:{port}" for n, _, port in listening if n == "gcs_server")
    bare = {k: v for k, v in procs.env.items() if k != "OCR_STUDY_RAY_TOKEN_FILE"}
    # a few tries at the GCS, not Ray's default minute of them
    refused = _connect(gcs, {**bare, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": "0" * 64,
                             "RAY_gcs_server_port_wait_time_s": "5"})
    assert "CONNECTED" not in refused.stdout and refused.returncode != 0, refused.stdout
    assert "auth" in refused.stderr.lower() or "ConnectionError" in refused.stderr, refused.stderr[-2000:]
    allowed = _connect(gcs, {**bare, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": str(token)})
    assert "CONNECTED" in allowed.stdout, allowed.stderr[-2000:]
    proc.kill()  # seen enough: the fixture ends the rest of the study's processes by PID
    out, _ = proc.communicate(timeout=60)
    assert token.read_text() not in out  # never printed
    for log in Path(spec.study_dir).rglob("*"):
        if log.is_file() and log.stat().st_size < 10_000_000:
            assert token.read_text().encode() not in log.read_bytes(), log
    assert os.environ.get("RAY_AUTH_TOKEN") != token.read_text()
