"""A study without ``--address`` starts a Ray of its own, held to loopback, whatever Ray's temp folder says
(a stale ``ray start`` record); with ``--address`` it joins that one and leaves Ray's node address alone."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from study.handle import open_study
from study.local_ray import LOOPBACK_ENV, STARTING
from study.runner import trial_table
from tests.study.cli_procs import Processes, finish, spec_file

# Runs the CLI's dispatch with the study commands replaced by a probe: what the environment holds, and
# whether Ray was imported, at the moment a run or resume command starts.
PROBE = """
import json, os, sys
from study import cli
from study.commands import run

def probe(args):
    print(json.dumps({"loopback": os.environ.get(sys.argv[1]), "ray_imported": "ray" in sys.modules}))
    return 0

run.run = run.resume = probe
sys.exit(cli.main(sys.argv[2:]))
"""


def _probe(*args: str) -> str:
    env = {k: v for k, v in os.environ.items() if k != LOOPBACK_ENV}
    done = subprocess.run([sys.executable, "-c", PROBE, LOOPBACK_ENV, *args], env=env, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout.strip().splitlines()[-1]


@pytest.mark.slow
def test_the_cli_holds_a_local_study_to_loopback_before_ray_is_imported() -> None:
    assert _probe("run", "spec.yaml") == '{"loopback": "0", "ray_imported": false}'
    assert _probe("resume", "tiny") == '{"loopback": "0", "ray_imported": false}'


@pytest.mark.slow
def test_the_cli_leaves_a_cluster_study_alone() -> None:
    assert _probe("run", "spec.yaml", "--address", "10.0.0.5:6379") == '{"loopback": null, "ray_imported": false}'
    assert _probe("resume", "tiny", "--address", "10.0.0.5:6379") == '{"loopback": null, "ray_imported": false}'


@pytest.fixture
def procs(tmp_path: Path) -> Iterator[Processes]:
    p = Processes(tmp_path, "driver.trial-result[epoch=1]=sleep(0)")  # marks the first trial's first report
    p.env.pop(LOOPBACK_ENV, None)
    p.env["TMPDIR"] = str(p.ray_tmp)  # Ray's temp folder, with RAY_TMPDIR: a private one for this test
    yield p
    p.kill_all()


def _dead_port() -> int:
    """A port nothing listens on (bound, then freed)."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.slow
def test_a_stale_ray_start_record_does_not_stop_a_local_study(tmp_path: Path, shared_cache: Path,
                                                               procs: Processes,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    from ray._common.utils import get_ray_address_file

    # what `ray start --head` leaves behind when its cluster dies uncleanly: the record of a dead GCS
    record = procs.ray_tmp / "ray" / "ray_current_cluster"
    record.parent.mkdir(parents=True)
    record.write_text(f"127.0.0.1:{_dead_port()}")
    monkeypatch.setenv("RAY_TMPDIR", str(procs.ray_tmp))
    assert Path(get_ray_address_file(None)) == record  # where Ray, started as the study starts it, looks
    path, spec = spec_file(tmp_path, shared_cache, grid={"ocr.selection": ["none"]}, search=None, seeds=[0])
    start = time.time()
    proc = procs.start("run", str(path))
    out = finish(proc)
    first_trial = procs.fired("driver.trial-result")[0]["time"] - start  # reported, not asserted: machine load
    print(f"stale record: first trial reported {first_trial:.1f} s after `ocr-study run` started, "
          f"study done in {time.time() - start:.1f} s")
    assert out.count(STARTING) == 1, out[-3000:]
    assert "Failed to connect" not in out, out[-3000:]
    assert [r["status"] for r in trial_table(open_study(spec))] == ["TERMINATED"]
    assert record.read_text().startswith("127.0.0.1:")  # left as it was: not the study's to remove


def _idle_workers() -> list[int]:
    import psutil

    return [p.pid for p in psutil.Process().children(recursive=True)
            if any(part.endswith("default_worker.py") for part in p.cmdline()) or p.name() == "ray::IDLE"]


@pytest.mark.slow
def test_a_local_ray_starts_no_idle_workers(local_ray: None) -> None:
    """Ray would start one idle worker per CPU as the driver connects (Tune's actors never use them); the
    study's Ray starts none. Polled for 3 s: Ray starts them within a second of the driver connecting."""
    deadline = time.monotonic() + 3.0
    while time.monotonic() < deadline:
        assert _idle_workers() == []
        time.sleep(0.2)


@pytest.mark.slow
def test_a_local_ray_started_in_process_listens_on_loopback_only(local_ray: None) -> None:
    """As the tests (and a program using :func:`study.runner.init_ray`) start it: Ray was imported before,
    without the setting; its processes, including workers started later, still get it."""
    import psutil
    import ray

    from tests.study.test_local_ray_security import is_loopback

    @ray.remote
    def setting() -> str | None:
        return os.environ.get(LOOPBACK_ENV)

    assert ray.get([setting.remote() for _ in range(2)]) == ["0", "0"]
    me = psutil.Process()
    pids = {me.pid} | {p.pid for p in me.children(recursive=True)}
    listening = [(c.pid, c.laddr.ip, c.laddr.port) for c in psutil.net_connections("tcp")
                 if c.status == psutil.CONN_LISTEN and c.pid in pids]
    assert len(listening) >= 4, listening  # at least the GCS, the raylet's two ports and this driver
    assert all(is_loopback(ip) for _, ip, _ in listening), listening


def test_a_run_called_in_process_leaves_the_loopback_setting_as_it_found_it(monkeypatch: pytest.MonkeyPatch) -> None:
    """A program (or a test) that calls the CLI in its own process and starts a cluster afterwards (``ray
    start`` refuses the loopback setting) keeps its own environment: set for the command, restored after."""
    from study import cli
    from study.commands import run

    seen: list[str | None] = []
    monkeypatch.delenv(LOOPBACK_ENV, raising=False)
    monkeypatch.setattr(run, "run", lambda args: seen.append(os.environ.get(LOOPBACK_ENV)) or 0)
    assert cli.main(["run", "spec.yaml"]) == 0
    assert seen == ["0"] and LOOPBACK_ENV not in os.environ
