"""Real servers for the loopback cluster test: PostgreSQL, an MLflow server on it, Ray nodes.

Everything binds 127.0.0.1 on a free port. Every process is started through :class:`Processes`, which
makes the test process a *child subreaper* (Linux): whatever a server daemonizes or leaves orphaned is
re-parented to the test process, so :meth:`Processes.stop` can end all of it by PID, and check that
nothing is left, whatever happened.
"""

from __future__ import annotations

import contextlib
import ctypes
import glob
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from pathlib import Path

import psutil
import pytest

PR_SET_CHILD_SUBREAPER = 36
BIN = Path(sys.executable).parent


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def find_executable(name: str) -> str:
    """``name`` on PATH or in Debian's ``/usr/lib/postgresql/<ver>/bin``; skip without it, fail under CI."""
    found = shutil.which(name)
    if found:
        return found
    candidates = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"),
                        key=lambda p: int(Path(p).parts[-3]) if Path(p).parts[-3].isdigit() else 0)
    if candidates:
        return candidates[-1]
    message = f"needs {name} (PostgreSQL; `make system` installs it)"
    if os.environ.get("CI"):
        pytest.fail(message)
    pytest.skip(message)


def wait_until(check: Callable[[], bool], timeout: float, what: str, alive: Callable[[], bool]) -> None:
    """Poll ``check`` until it holds; fail after ``timeout`` seconds or once ``alive`` says the server died."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        if not alive():
            raise RuntimeError(f"{what} exited before it was ready")
        time.sleep(0.5)
    raise TimeoutError(f"{what} not ready after {timeout:.0f} s")


def http_ok(url: str) -> bool:
    """Whether ``url`` answers 200."""
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return bool(response.status == 200)
    except (OSError, urllib.error.URLError):
        return False


def _set_subreaper(on: bool) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_CHILD_SUBREAPER, int(on), 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_CHILD_SUBREAPER) failed")


class Processes:
    """Starts servers as children of the test process and ends every one of them, and theirs, by PID."""

    def __init__(self, log_dir: Path) -> None:
        self.log_dir = log_dir
        self.me = psutil.Process()
        self.before = {(p.pid, p.create_time()) for p in self.me.children(recursive=True)}
        self.started: list[subprocess.Popen[bytes]] = []
        _set_subreaper(True)

    def start(self, name: str, cmd: Sequence[str], env: dict[str, str] | None = None,
              cwd: Path | None = None) -> subprocess.Popen[bytes]:
        """Start ``cmd`` with its output in ``<log_dir>/<name>.log``."""
        log = open(self.log_dir / f"{name}.log", "wb")  # noqa: SIM115 (closed with the process)
        proc = subprocess.Popen(list(cmd), stdout=log, stderr=subprocess.STDOUT, env=env, cwd=cwd,
                                stdin=subprocess.DEVNULL)
        log.close()
        self.started.append(proc)
        return proc

    def ours(self) -> list[psutil.Process]:
        """Every live descendant of the test process that was not there before this object."""
        procs = []
        for proc in self.me.children(recursive=True):
            with contextlib.suppress(psutil.Error):
                if (proc.pid, proc.create_time()) not in self.before and proc.status() != psutil.STATUS_ZOMBIE:
                    procs.append(proc)
        return procs

    def stop(self, grace: float = 15.0) -> list[str]:
        """SIGTERM everything we started (and its children), SIGKILL what is left; returns survivors."""
        try:
            for _ in range(3):  # processes may be re-parented to us while we stop others
                procs = self.ours()
                if not procs:
                    break
                for proc in procs:
                    with contextlib.suppress(psutil.Error):
                        proc.send_signal(signal.SIGTERM)
                _, alive = psutil.wait_procs(procs, timeout=grace)
                for proc in alive:
                    with contextlib.suppress(psutil.Error):
                        proc.kill()
                psutil.wait_procs(alive, timeout=5)
            for popen in self.started:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    popen.wait(timeout=5)
            self._reap()
            return [f"{p.pid} {p.name()}" for p in self.ours()]
        finally:
            _set_subreaper(False)

    def _reap(self) -> None:
        """Collect exit statuses of re-parented children (no zombies left behind)."""
        while True:
            try:
                pid, _ = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return


def as_postgres_user(cmd: list[str]) -> list[str]:
    """PostgreSQL refuses to run as root: run ``cmd`` as the ``postgres`` user when we are root."""
    if os.geteuid() != 0:
        return cmd
    runuser = shutil.which("runuser")
    if runuser is None:
        pytest.fail("running as root without runuser: cannot start PostgreSQL as an unprivileged user")
    return [runuser, "-u", "postgres", "--", *cmd]


def start_postgres(procs: Processes, root: Path) -> str:
    """A fresh PostgreSQL cluster on 127.0.0.1 (socket in ``root``); returns the URI of database ``mlflow``."""
    initdb, postgres = find_executable("initdb"), find_executable("postgres")
    if os.geteuid() == 0:
        shutil.chown(root, "postgres", "postgres")
    data, port = root / "data", free_port()
    init = subprocess.run(as_postgres_user([initdb, "-D", str(data), "-U", "mlflow", "-A", "trust", "--no-sync",
                                            "-E", "UTF8"]), capture_output=True, text=True, timeout=120)
    if init.returncode != 0:
        raise RuntimeError(f"initdb failed: {init.stdout}\n{init.stderr}")
    server = procs.start("postgres", as_postgres_user(
        [postgres, "-D", str(data), "-h", "127.0.0.1", "-p", str(port), "-k", str(root), "-F"]))
    import psycopg2

    def ready() -> bool:
        try:
            psycopg2.connect(host="127.0.0.1", port=port, user="mlflow", dbname="postgres").close()
            return True
        except psycopg2.OperationalError:
            return False

    wait_until(ready, 60, "PostgreSQL", lambda: server.poll() is None)
    conn = psycopg2.connect(host="127.0.0.1", port=port, user="mlflow", dbname="postgres")
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute("CREATE DATABASE mlflow")
    conn.close()
    return f"postgresql+psycopg2://mlflow@127.0.0.1:{port}/mlflow"  # SQLAlchemy 2.1 defaults to psycopg 3


def start_mlflow(procs: Processes, backend: str, artifacts: Path) -> str:
    """``mlflow server`` on ``backend`` (one worker, 127.0.0.1, serving artifacts); returns its URL."""
    port = free_port()
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    server = procs.start("mlflow", [str(BIN / "mlflow"), "server", "--backend-store-uri", backend,
                                    "--artifacts-destination", str(artifacts), "--host", "127.0.0.1",
                                    "--port", str(port), "--workers", "1"], env=env)
    url = f"http://127.0.0.1:{port}"
    wait_until(lambda: http_ok(f"{url}/health"), 180, "mlflow server", lambda: server.poll() is None)
    return url


def ray_env() -> dict[str, str]:
    """The environment of every Ray process: no token auth, no usage stats."""
    return {**os.environ, "RAY_AUTH_MODE": "disabled", "RAY_USAGE_STATS_ENABLED": "0"}


def ray_node_cmd(temp_dir: Path, cpus: int, gpus: int, head_port: int | None = None,
                 address: str | None = None) -> list[str]:
    """``ray start --block`` for a head (``head_port``) or a worker (``address``) on loopback."""
    cmd = [str(BIN / "ray"), "start", "--block", "--node-ip-address=127.0.0.1", f"--temp-dir={temp_dir}",
           f"--num-cpus={cpus}", f"--num-gpus={gpus}", "--object-store-memory=100000000",
           f"--dashboard-agent-listen-port={free_port()}", "--disable-usage-stats"]
    if head_port is not None:
        # No Ray Client server here: it needs grpcio (ray[client]), which the images carry.
        return [*cmd, "--head", f"--port={head_port}", "--include-dashboard=false"]
    return [*cmd, f"--address={address}"]
