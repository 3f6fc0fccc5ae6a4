"""A local study's Ray, measured: every process of the study (the driver and all of Ray's) listens on loopback
only, so nothing on the network reaches it; a client holding the study's token is answered and one without it
is refused by the GCS. A tiny study runs through the real CLI; every process it made is ended by PID."""

from __future__ import annotations

import ipaddress
import os
import socket
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from study.local_ray import LOOPBACK_ENV, LOOPBACK_VALUE, STARTING
from tests.study.cli_procs import Processes, spec_file, wait_for_fired

pytestmark = pytest.mark.slow
CONNECT = """
import sys, ray
ray.init(address=sys.argv[1], logging_level="ERROR", log_to_driver=False)
print("CONNECTED", ray.cluster_resources().get("CPU"))
"""


@pytest.fixture
def procs(tmp_path: Path) -> Iterator[Processes]:
    token = tmp_path / "home" / "ray_auth_token"
    # the driver pauses at the first trial's first report: the study is looked at while it runs
    p = Processes(tmp_path, "driver.trial-result[epoch=1]=pause", OCR_STUDY_RAY_TOKEN_FILE=str(token))
    for key in ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH", LOOPBACK_ENV):  # the defaults under test
        p.env.pop(key, None)
    yield p
    p.kill_all()


def is_loopback(address: str) -> bool:
    """127.0.0.0/8, ::1, and an IPv4 loopback address mapped into IPv6 (``::ffff:127.0.0.1``, which
    ``ipaddress`` alone does not call loopback)."""
    ip = ipaddress.ip_address(address)
    return (getattr(ip, "ipv4_mapped", None) or ip).is_loopback


def test_is_loopback_counts_mapped_addresses_and_not_wildcards() -> None:
    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("::ffff:127.0.0.1")
    assert not is_loopback("::") and not is_loopback("0.0.0.0") and not is_loopback("192.0.2.2")
    assert not is_loopback("::ffff:192.0.2.2")


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


def _own_addresses() -> list[str]:
    """This machine's addresses other than loopback (where a remote client would connect)."""
    return [a.address.split("%")[0] for addrs in psutil.net_if_addrs().values() for a in addrs
            if a.family in (socket.AF_INET, socket.AF_INET6) and not is_loopback(a.address.split("%")[0])
            and not ipaddress.ip_address(a.address.split("%")[0]).is_link_local]


def _answers(address: str, port: int) -> bool:
    try:
        with socket.create_connection((address, port), timeout=5):
            return True
    except OSError:
        return False


def _connect(address: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", CONNECT, address], env=env, capture_output=True, text=True,
                          timeout=180)


def test_a_local_study_listens_on_loopback_only_and_refuses_a_client_without_the_token(
        tmp_path: Path, procs: Processes) -> None:
    path, spec = spec_file(tmp_path, tmp_path / "cache", seeds=[0], grid={"ocr.selection": ["oc"]},
                           search={"samples": 1, "seed": 0,
                                   "params": {"ocr.delta": {"type": "uniform", "low": 0.0, "high": 4.0}}})
    proc = procs.start("run", str(path))
    wait_for_fired(procs, "driver.trial-result", proc)  # a trial reported; the driver holds there
    listening = _listening(procs)
    print("listening:", listening)
    token = Path(procs.env["OCR_STUDY_RAY_TOKEN_FILE"])
    assert stat.S_IMODE(token.stat().st_mode) == 0o600 and len(token.read_text()) == 64

    # the whole process tree: the driver, Ray's servers, the trial's worker; every one on loopback
    names = {n for n, _, _ in listening}
    assert {"ocr-study", "gcs_server", "raylet", "ray::RuntimeEnvAgent"} <= names, listening
    assert any(n.startswith("ray::ImplicitFunc") for n in names), listening
    others = [(n, ip, port) for n, ip, port in listening if not is_loopback(ip)]
    assert not others, f"listening beyond loopback: {others}"
    assert not [x for x in listening if x[2] in (8265, 10001)], "no dashboard, no Ray Client server"
    # the remote path, tried: no port of the study answers on the machine's own (non-loopback) addresses
    reached = [(ip, port) for ip in _own_addresses() for _, _, port in listening if _answers(ip, port)]
    assert not reached, f"reachable from the network: {reached}"

    # a client of this Ray needs the loopback setting too (without it, it does not even get to the GCS)
    gcs = next(f"127.0.0.1:{port}" for n, _, port in listening if n == "gcs_server")
    bare = {k: v for k, v in procs.env.items() if k != "OCR_STUDY_RAY_TOKEN_FILE"}
    client = {**bare, LOOPBACK_ENV: LOOPBACK_VALUE, "RAY_gcs_server_port_wait_time_s": "5"}
    allowed = _connect(gcs, {**client, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": str(token)})
    assert "CONNECTED" in allowed.stdout, allowed.stderr[-2000:]
    # Refused by the GCS: it answers gRPC UNAUTHENTICATED, "InvalidAuthToken: Authentication token is missing
    # or incorrect" (seen with a raw grpcio client), which Ray's client raises as an AuthenticationError;
    # a wrong token, and no token at all (auth off on the client's side: it sends none).
    for refused_env in ({"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": "0" * 64}, {"RAY_AUTH_MODE": "disabled"}):
        refused = _connect(gcs, {**client, **refused_env})
        assert "CONNECTED" not in refused.stdout and refused.returncode != 0, refused.stdout
        assert "AuthenticationError" in refused.stderr and "InvalidAuthToken" in refused.stderr, \
            refused.stderr[-2000:]

    proc.kill()  # seen enough: the fixture ends the rest of the study's processes by PID
    out, _ = proc.communicate(timeout=60)
    assert token.read_text() not in out  # never printed
    for log in Path(spec.study_dir).rglob("*"):
        if log.is_file() and log.stat().st_size < 10_000_000:
            assert token.read_text().encode() not in log.read_bytes(), log
    assert os.environ.get("RAY_AUTH_TOKEN") != token.read_text()
    assert out.count(STARTING) == 1, out[-2000:]  # says, once, that it started a Ray of its own
