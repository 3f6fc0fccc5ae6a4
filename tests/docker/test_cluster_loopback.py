"""A real multi-node study on loopback: the compose topology without containers.

PostgreSQL, ``mlflow server`` on it, a Ray head (no CPUs) and two Ray worker nodes that each declare one
GPU are started on 127.0.0.1; ``ocr-study run --address`` runs a tiny study on that cluster with
``tracking.uri`` at that server. The test checks that trials ran on both workers, that every trial is in
MLflow (REST API, client, and the PostgreSQL tables themselves), that artifacts went through the server,
and that the Parquet dataset is collected. Everything started is ended by PID, whatever happened.
"""

from __future__ import annotations

import base64
import importlib.util
import json
import os
import secrets
import subprocess
import sys
import tempfile
import textwrap
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.conftest import TINY
from tests.docker.services import (
    BIN,
    Postgres,
    Processes,
    free_port,
    ray_env,
    ray_node_cmd,
    start_mlflow,
    start_postgres,
    wait_until,
)

pytestmark = pytest.mark.slow
WORKERS = 2
# MLflow's basic-auth app needs Flask-WTF (mlflow[auth]); without it the server runs without auth.
AUTH = importlib.util.find_spec("flask_wtf") is not None
if not AUTH and os.environ.get("CI"):  # requirements-cpu.txt pins mlflow[auth]: under CI a skip would hide a gap
    raise RuntimeError("Flask-WTF is missing: requirements-cpu.txt installs mlflow[auth] for the basic-auth app")
ADMIN = ("admin", secrets.token_urlsafe(12))  # the MLflow basic-auth admin of this run, as in compose
NODES_SCRIPT = textwrap.dedent("""
    import json, sys, time
    import ray
    ray.init(address=sys.argv[1], logging_level="ERROR", log_to_driver=False)
    deadline = time.monotonic() + float(sys.argv[3])
    while True:
        nodes = [n for n in ray.nodes() if n["Alive"]]
        if len(nodes) >= int(sys.argv[2]) or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    print(json.dumps([{"id": n["NodeID"], "resources": n["Resources"]} for n in nodes]))
""")


@dataclass(frozen=True)
class Cluster:
    """Addresses of the servers on loopback, and the Ray nodes as ``{"id", "resources"}``."""

    ray_address: str
    tracking_uri: str
    database: Postgres
    nodes: list[dict[str, Any]]
    root: Path

    @property
    def worker_ids(self) -> set[str]:
        """The ids of the nodes that declare a GPU (the workers)."""
        return {n["id"] for n in self.nodes if n["resources"].get("GPU", 0) >= 1}


def _ray_nodes(address: str, count: int, timeout: float) -> list[dict[str, Any]]:
    out = subprocess.run([sys.executable, "-c", NODES_SCRIPT, address, str(count), str(timeout)],
                         env=ray_env(), capture_output=True, text=True, timeout=timeout + 60)
    if out.returncode != 0:
        raise RuntimeError(f"cannot list Ray nodes: {out.stderr[-3000:]}")
    nodes: list[dict[str, Any]] = json.loads(out.stdout.strip().splitlines()[-1])
    return nodes


def _start_node(procs: Processes, name: str, cmd: list[str]) -> None:
    """Start one ``ray start --block`` and wait until it says it is up.

    Nodes start one after the other: a worker started before the head's GCS answers gives up, and two
    nodes of one machine starting together race for their socket names in the shared session folder.
    """
    node = procs.start(name, cmd, env=ray_env())
    log = procs.log_dir / f"{name}.log"
    wait_until(lambda: "Ray runtime started" in log.read_text(errors="replace"), 120, name,
               lambda: node.poll() is None)


def _start_ray(procs: Processes, temp_dir: Path) -> tuple[str, list[dict[str, Any]]]:
    port = free_port()
    address = f"127.0.0.1:{port}"
    _start_node(procs, "ray-head", ray_node_cmd(temp_dir, cpus=0, gpus=0, head_port=port))
    for i in range(WORKERS):
        _start_node(procs, f"ray-worker-{i}", ray_node_cmd(temp_dir, cpus=1, gpus=1, address=address))
    nodes = _ray_nodes(address, 1 + WORKERS, timeout=60)
    if len(nodes) != 1 + WORKERS:
        raise RuntimeError(f"expected {1 + WORKERS} Ray nodes, got {nodes}")
    return address, nodes


def _processes_mentioning(root: Path) -> list[str]:
    """Processes whose command line names ``root`` (a check that does not rely on the process tree)."""
    import psutil

    found = []
    for proc in psutil.process_iter(["pid", "cmdline"]):
        cmdline = " ".join(proc.info.get("cmdline") or [])
        if str(root) in cmdline and proc.pid != os.getpid():
            found.append(f"{proc.pid} {cmdline[:160]}")
    return found


def _logs(root: Path) -> str:
    return "\n".join(f"--- {p.name}\n{p.read_text(errors='replace')[-2000:]}" for p in sorted(root.glob("*.log")))


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    """PostgreSQL + MLflow server + Ray head and two GPU-declaring workers, all on 127.0.0.1."""
    if sys.platform != "linux":
        pytest.skip("the loopback cluster needs Linux (child subreaper, runuser, Debian's PostgreSQL)")
    # A short path under /tmp: Ray's unix sockets must fit in 107 bytes, and the postgres user must reach it.
    root = Path(tempfile.mkdtemp(prefix="ocr-cl-"))
    root.chmod(0o711)  # the postgres user must reach its folder inside
    procs = Processes(root)
    try:
        pg_dir = root / "pg"
        pg_dir.mkdir()
        database = start_postgres(procs, pg_dir)
        mlflow_dir = root / "mlflow"
        mlflow_dir.mkdir()
        tracking = start_mlflow(procs, database, mlflow_dir, ADMIN if AUTH else None)
        address, nodes = _start_ray(procs, root / "ray")
        yield Cluster(address, tracking, database, nodes, root)
    except Exception:
        print(_logs(root), file=sys.stderr)
        raise
    finally:
        survivors = procs.stop() + _processes_mentioning(root)
        if procs.killed:
            print(f"needed SIGKILL: {procs.killed}", file=sys.stderr)
        subprocess.run(["rm", "-rf", str(root)], check=False)
        assert not survivors, f"processes left behind: {survivors}"


def _spec(cluster: Cluster, cache: Path) -> dict[str, Any]:
    """A tiny study: selection none/oc × 2 seeds = 4 trials, each half a (declared) GPU and one CPU."""
    return {
        "name": "loopback",
        "trial": {**TINY, "cache_dir": str(cache)},
        "grid": {"ocr.selection": ["none", "oc"]},
        "seeds": [0, 1],
        "scheduler": {"type": "none"},
        "max_concurrent": 2,
        "resources": {"cpus": 1, "gpus": 0.5},
        "tracking": {"uri": cluster.tracking_uri, "experiment": "loopback-cluster"},
        "storage": str(cluster.root / "studies"),
    }


def _rest(url: str, body: dict[str, Any] | None = None, auth: tuple[str, str] | None = ADMIN) -> dict[str, Any]:
    data = json.dumps(body).encode() if body is not None else None
    headers = {"Content-Type": "application/json"}
    if auth is not None and AUTH:
        headers["Authorization"] = "Basic " + base64.b64encode(":".join(auth).encode()).decode()
    request = urllib.request.Request(url, data=data, headers=headers)
    with urllib.request.urlopen(request, timeout=30) as response:
        answer: dict[str, Any] = json.loads(response.read())
    return answer


def _tune_trials(study: Path) -> dict[str, set[str]]:
    """``{trial_id: node ids it reported from}`` from Tune's result.json files."""
    trials: dict[str, set[str]] = {}
    for path in (study / "tune").glob("*/result.json"):
        for line in path.read_text().splitlines():
            if line.strip():
                result = json.loads(line)
                trials.setdefault(result["trial_id"], set()).add(result["node_id"])
    return trials


@pytest.fixture(scope="module")
def study(cluster: Cluster) -> Iterator[tuple[Path, float]]:
    """Run the study with ``ocr-study run --address`` against the cluster; yields its folder and seconds."""
    spec_path = cluster.root / "loopback.yaml"
    spec_path.write_text(yaml.safe_dump(_spec(cluster, cluster.root / "cache")))
    env = {**ray_env(), "TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S": "0",
           "MLFLOW_TRACKING_USERNAME": ADMIN[0], "MLFLOW_TRACKING_PASSWORD": ADMIN[1]}
    start = time.monotonic()
    out = subprocess.run([str(BIN / "ocr-study"), "run", str(spec_path), "--address", cluster.ray_address],
                         env=env, cwd=cluster.root, capture_output=True, text=True, timeout=900)
    seconds = time.monotonic() - start
    assert out.returncode == 0, f"ocr-study run failed:\n{out.stdout[-3000:]}\n{out.stderr[-6000:]}"
    yield cluster.root / "studies" / "loopback", seconds


def test_cluster_has_a_head_without_cpus_and_two_gpu_workers(cluster: Cluster) -> None:
    assert len(cluster.nodes) == 3
    assert len(cluster.worker_ids) == WORKERS
    assert sorted(n["resources"].get("CPU", 0) for n in cluster.nodes) == [0, 1, 1]


def test_a_driver_without_the_cluster_token_is_refused(cluster: Cluster) -> None:
    env = {**ray_env(), "RAY_AUTH_TOKEN": "not-the-token"}
    out = subprocess.run([sys.executable, "-c", NODES_SCRIPT, cluster.ray_address, "1", "0"], env=env,
                         capture_output=True, text=True, timeout=180)
    assert out.returncode != 0 and "ConnectionError" in out.stderr, out.stdout + out.stderr[-2000:]


def test_trials_ran_on_both_workers(cluster: Cluster, study: tuple[Path, float]) -> None:
    folder, seconds = study
    trials = _tune_trials(folder)
    print(f"loopback study: {len(trials)} trials in {seconds:.1f} s")
    assert len(trials) == 4
    assert all(len(nodes) == 1 for nodes in trials.values()), trials  # a trial stays on its node
    used = set().union(*trials.values())
    assert used == cluster.worker_ids, f"trials ran on {used}, workers are {cluster.worker_ids}"


def test_every_trial_is_in_mlflow_through_rest_and_client(cluster: Cluster, study: tuple[Path, float]) -> None:
    folder, _ = study
    tune_ids = set(_tune_trials(folder))
    name = urllib.parse.quote("loopback-cluster")
    experiment = _rest(f"{cluster.tracking_uri}/api/2.0/mlflow/experiments/get-by-name?experiment_name={name}")
    experiment_id = experiment["experiment"]["experiment_id"]
    runs = _rest(f"{cluster.tracking_uri}/api/2.0/mlflow/runs/search",
                 {"experiment_ids": [experiment_id], "max_results": 100})["runs"]
    tags = [{t["key"]: t["value"] for t in run["data"].get("tags", [])} for run in runs]
    trial_runs = [(run, tag) for run, tag in zip(runs, tags, strict=True) if tag.get("ocr_study.role") != "study"]
    assert len(runs) == 5 and len(trial_runs) == 4
    assert {tag["ocr_study.trial_id"] for _, tag in trial_runs} == tune_ids
    assert {run["info"]["status"] for run, _ in trial_runs} == {"FINISHED"}
    assert all(any(m["key"] == "1 val/miou pct" for m in run["data"]["metrics"]) for run, _ in trial_runs)
    with pytest.MonkeyPatch.context() as env:
        env.setenv("MLFLOW_TRACKING_USERNAME", ADMIN[0])
        env.setenv("MLFLOW_TRACKING_PASSWORD", ADMIN[1])
        _check_with_client(cluster, experiment_id, tune_ids, runs, tags)


def _check_with_client(cluster: Cluster, experiment_id: str, tune_ids: set[str], runs: list[dict[str, Any]],
                       tags: list[dict[str, str]]) -> None:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(cluster.tracking_uri)
    found = [r for r in client.search_runs([experiment_id]) if r.data.tags.get("ocr_study.role") != "study"]
    assert {r.data.tags["ocr_study.trial_id"] for r in found} == tune_ids
    assert {r.data.tags["mlflow.parentRunId"] for r in found} == {
        r["info"]["run_id"] for r, tag in zip(runs, tags, strict=True) if tag.get("ocr_study.role") == "study"}
    artifacts = {a.path for a in client.list_artifacts(found[0].info.run_id)}
    assert "class_iou.json" in artifacts  # uploaded through the server to its artifact store
    assert list((cluster.root / "mlflow" / "artifacts").rglob("class_iou.json"))


@pytest.mark.skipif(not AUTH, reason="MLflow's basic-auth app needs Flask-WTF: pip install 'mlflow[auth]'")
def test_mlflow_refuses_requests_without_credentials(cluster: Cluster, study: tuple[Path, float]) -> None:
    import urllib.error

    url = f"{cluster.tracking_uri}/api/2.0/mlflow/experiments/search"
    for auth in (None, (ADMIN[0], "wrong")):
        with pytest.raises(urllib.error.HTTPError) as err:
            _rest(url, {"max_results": 1}, auth=auth)
        assert err.value.code == 401


def test_mlflow_stores_the_runs_in_postgresql(cluster: Cluster, study: tuple[Path, float]) -> None:
    conn = cluster.database.connect()
    with conn, conn.cursor() as cur:
        cur.execute("SELECT count(*) FROM runs r JOIN experiments e ON r.experiment_id = e.experiment_id "
                    "WHERE e.name = %s", ("loopback-cluster",))
        row = cur.fetchone()
    conn.close()
    assert row is not None and row[0] == 5


def test_parquet_dataset_is_collected(cluster: Cluster, study: tuple[Path, float]) -> None:
    import pandas as pd

    from results import collect_study

    folder, _ = study
    out = collect_study(folder)
    assert out == folder / "results"
    trials = pd.read_parquet(out / "trials.parquet")
    curves = pd.read_parquet(out / "curves.parquet")
    assert set(trials["trial_id"].astype(str)) == set(_tune_trials(folder))
    assert set(trials["node_id"].astype(str)) == cluster.worker_ids
    assert len(curves) == 4 * int(TINY["seg.epochs"])
