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
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil
import pytest

PR_SET_CHILD_SUBREAPER = 36
BIN = Path(sys.executable).parent
DOCKER = Path(__file__).resolve().parents[2] / "docker"


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


def _created(proc: psutil.Process) -> float:
    try:
        return float(proc.create_time())
    except psutil.Error:
        return 0.0


def _set_subreaper(on: bool) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_CHILD_SUBREAPER, int(on), 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_CHILD_SUBREAPER) failed")


class Processes:
    """Starts servers as children of the test process and ends every one of them, and theirs, by PID."""

    def __init__(self, log_dir: Path) -> None:
        self.log_dir = log_dir
        self.me = psutil.Process()
        self.before = {(p.pid, _created(p)) for p in self.me.children()}
        self.started: list[subprocess.Popen[bytes]] = []
        self.seen: set[int] = set()
        self.killed: list[str] = []  # what needed SIGKILL after the grace period (shown by the fixture)
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
        """Live processes we started, their descendants, and orphans re-parented to us since then.

        Processes of anything else in the test process (a local Ray of another test) are left alone.
        """
        roots = [p for p in self.me.children() if (p.pid, _created(p)) not in self.before]
        found: dict[int, psutil.Process] = {}
        for root in roots:
            with contextlib.suppress(psutil.Error):
                for proc in [root, *root.children(recursive=True)]:
                    if proc.status() != psutil.STATUS_ZOMBIE:
                        found[proc.pid] = proc
        self.seen.update(found)
        return list(found.values())

    def stop(self, grace: float = 15.0) -> list[str]:
        """End what we started, last started first: SIGTERM to the command we ran (``ray start --block``
        and the servers shut their own children down), then SIGKILL to whatever of it outlives ``grace``;
        last, the same for anything else of ours. Returns what is still alive (nothing, normally)."""
        try:
            for popen in reversed(self.started):
                with contextlib.suppress(psutil.Error):
                    root = psutil.Process(popen.pid)
                    self._end([root, *root.children(recursive=True)], [root], grace)
                with contextlib.suppress(subprocess.TimeoutExpired):
                    popen.wait(timeout=5)
            for _ in range(3):  # orphans re-parented to us while we stopped the others
                procs = self.ours()
                if not procs:
                    break
                self._end(procs, procs, grace)
            self._reap()
            return [f"{p.pid} {p.name()}" for p in self.ours()]
        finally:
            _set_subreaper(False)

    def _end(self, procs: list[psutil.Process], signalled: list[psutil.Process], grace: float) -> None:
        """SIGTERM ``signalled``, wait for all of ``procs`` up to ``grace`` seconds, SIGKILL the rest."""
        self.seen.update(p.pid for p in procs)
        for proc in signalled:
            with contextlib.suppress(psutil.Error):
                proc.send_signal(signal.SIGTERM)
        _, alive = psutil.wait_procs(procs, timeout=grace)
        for proc in alive:
            with contextlib.suppress(psutil.Error):
                self.killed.append(f"{proc.pid} {proc.name()}")
                proc.kill()
        psutil.wait_procs(alive, timeout=5)

    def _reap(self) -> None:
        """Collect the exit status of every process of ours that was re-parented to us (no zombies)."""
        for pid in self.seen:
            with contextlib.suppress(ChildProcessError, OSError):
                os.waitpid(pid, os.WNOHANG)


def as_postgres_user(cmd: list[str]) -> list[str]:
    """PostgreSQL refuses to run as root: run ``cmd`` as the ``postgres`` user when we are root."""
    if os.geteuid() != 0:
        return cmd
    runuser = shutil.which("runuser")
    if runuser is None:
        pytest.fail("running as root without runuser: cannot start PostgreSQL as an unprivileged user")
    return [runuser, "-u", "postgres", "--", *cmd]


@dataclass(frozen=True)
class Postgres:
    """A PostgreSQL server on loopback: password authentication over TCP, as in compose.yaml."""

    port: int
    user: str
    password: str
    database: str

    @property
    def uri(self) -> str:
        """The SQLAlchemy URI MLflow gets: no password in it (libpq reads ``PGPASSWORD``, as in compose)."""
        return f"postgresql+psycopg2://{self.user}@127.0.0.1:{self.port}/{self.database}"

    def connect(self, database: str | None = None) -> Any:
        """A psycopg2 connection."""
        import psycopg2

        return psycopg2.connect(host="127.0.0.1", port=self.port, user=self.user, password=self.password,
                                dbname=database or self.database)


def start_postgres(procs: Processes, root: Path) -> Postgres:
    """A fresh PostgreSQL cluster on 127.0.0.1 (socket in ``root``) with an empty database ``mlflow``."""
    initdb, postgres = find_executable("initdb"), find_executable("postgres")
    if os.geteuid() == 0:
        shutil.chown(root, "postgres", "postgres")
    data, port, password = root / "data", free_port(), secrets.token_urlsafe(16)
    pwfile = root / "pw"
    pwfile.write_text(password + "\n")
    if os.geteuid() == 0:
        shutil.chown(pwfile, "postgres", "postgres")
    init = subprocess.run(as_postgres_user([initdb, "-D", str(data), "-U", "mlflow", "--pwfile", str(pwfile),
                                            "--auth-host=scram-sha-256", "--auth-local=trust", "--no-sync",
                                            "-E", "UTF8"]), capture_output=True, text=True, timeout=120)
    pwfile.unlink()
    if init.returncode != 0:
        raise RuntimeError(f"initdb failed: {init.stdout}\n{init.stderr}")
    server = procs.start("postgres", as_postgres_user(
        [postgres, "-D", str(data), "-h", "127.0.0.1", "-p", str(port), "-k", str(root), "-F"]))
    db = Postgres(port, "mlflow", password, "mlflow")
    import psycopg2

    def ready() -> bool:
        try:
            db.connect("postgres").close()
            return True
        except psycopg2.OperationalError:
            return False

    wait_until(ready, 60, "PostgreSQL", lambda: server.poll() is None)
    conn = db.connect("postgres")
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute("CREATE DATABASE mlflow")
    conn.close()
    return db


def start_mlflow(procs: Processes, db: Postgres, root: Path, admin: tuple[str, str] | None) -> str:
    """``mlflow server`` as compose.yaml runs it: PostgreSQL (password from ``PGPASSWORD``), artifacts
    served from ``root/artifacts``, and with ``admin``, the basic-auth app with the shipped basic_auth.ini
    and credentials from the environment; one worker on 127.0.0.1. Returns its URL."""
    port = free_port()
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false", "PGPASSWORD": db.password}
    app: list[str] = []
    if admin is not None:
        ini = (DOCKER / "mlflow" / "basic_auth.ini").read_text()
        auth_db = f"sqlite:///{root / 'basic_auth.db'}"
        (root / "basic_auth.ini").write_text(re.sub(r"(?m)^database_uri = .*$", f"database_uri = {auth_db}", ini))
        env.update({"MLFLOW_AUTH_CONFIG_PATH": str(root / "basic_auth.ini"), "MLFLOW_AUTH_ADMIN_USERNAME": admin[0],
                    "MLFLOW_AUTH_ADMIN_PASSWORD": admin[1], "MLFLOW_FLASK_SERVER_SECRET_KEY": secrets.token_hex(16)})
        app = ["--app-name", "basic-auth"]
    server = procs.start("mlflow", [str(BIN / "mlflow"), "server", *app, "--backend-store-uri", db.uri,
                                    "--artifacts-destination", str(root / "artifacts"), "--host", "127.0.0.1",
                                    "--port", str(port), "--workers", "1"], env=env)
    url = f"http://127.0.0.1:{port}"
    wait_until(lambda: http_ok(f"{url}/health"), 180, "mlflow server", lambda: server.poll() is None)
    return url


RAY_TOKEN = secrets.token_hex(16)


def ray_env() -> dict[str, str]:
    """The environment of every Ray process and driver: token auth with one shared token (as compose.yaml
    sets it up), no usage stats."""
    return {**os.environ, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": RAY_TOKEN, "RAY_USAGE_STATS_ENABLED": "0"}


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
