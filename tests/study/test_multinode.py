"""Multi-node scheduling on one machine: a Ray cluster of a head and two worker nodes that each declare one
GPU (``ray.cluster_utils.Cluster``); trials asking half a GPU run on both workers and fall back to CPU."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from study.handle import open_study
from study.runner import run_study, trial_table
from study.spec import load_spec
from tests.study.test_tune_study import tiny_doc

pytestmark = pytest.mark.slow


@pytest.fixture
def two_gpu_nodes(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[str, set[str]]]:
    import ray
    from ray.cluster_utils import Cluster

    from study.ray_auth import configure, refresh_loaded_ray

    for key in ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN_PATH"):  # the cluster and the driver share one token
        monkeypatch.setenv(key, os.environ.get(key, ""))
        monkeypatch.delenv(key)
    configure(local=True)
    refresh_loaded_ray()  # this process talks to the cluster's GCS too
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 0, "include_dashboard": False})
    workers = {cluster.add_node(num_cpus=1, num_gpus=1).node_id for _ in range(2)}
    try:
        cluster.wait_for_nodes()
        yield cluster.address, workers
    finally:
        ray.shutdown()
        cluster.shutdown()


def _node_ids(spec: Any) -> dict[str, set[str]]:
    out: dict[str, set[str]] = {}
    for path in (open_study(spec).folder / "tune").glob("*/result.json"):
        lines = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
        out[lines[0]["trial_id"]] = {line["node_id"] for line in lines}
    return out


def test_half_gpu_trials_run_on_both_worker_nodes(two_gpu_nodes: tuple[str, set[str]], tmp_path: Path,
                                                 shared_cache: Path) -> None:
    address, workers = two_gpu_nodes
    doc = tiny_doc(tmp_path, shared_cache, resources={"cpus": 1, "gpus": 0.5}, max_concurrent=2)
    doc["trial"]["device"] = "auto"  # CUDA where the node has it; these declared GPUs are not real
    spec = load_spec(doc)
    run_study(open_study(spec), address=address)
    rows = trial_table(open_study(spec))
    assert len(rows) == 6 and {r["status"] for r in rows} == {"TERMINATED"}
    nodes = _node_ids(spec)
    assert set(nodes) == {r["trial_id"] for r in rows}
    used = set().union(*nodes.values())
    assert used == workers  # both GPU workers, never the CPU-less head
    assert all(r["config"]["device"] == "auto" for r in rows)  # and they trained: torch fell back to CPU
