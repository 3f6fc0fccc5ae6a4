"""A loopback cluster whose nodes share nothing but an S3 bucket (moto_server on 127.0.0.1).

A Ray head (no CPUs) and two Ray workers (one CPU each) are started with ``ray start`` on 127.0.0.1, each
worker in its own working folder with its own cache (``OCR_STUDY_CACHE_DIR``) and in its own mount
namespace where an empty tmpfs hides the driver's folder, as on another host (the study's record written
by a worker goes to that tmpfs, never to the driver's mirror); the study's ``storage`` is the bucket.
``ocr-study run --address`` runs two trials that need the same stage 1, one on each worker.
The test checks that the study completes, that its record in the bucket holds every epoch of both trials
(the driver wrote them from Tune's results), that stage 1 was computed once between the nodes (the build
receipts in the bucket) and copied into each node's own cache, and that a trial whose worker process kills
itself with SIGKILL mid-epoch (failpoint ``train.step``) resumes from its checkpoint in the bucket.
Everything started is ended by PID, whatever happened.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from record import FAILPOINT_DIR_ENV, FAILPOINTS_ENV, fired
from storage import BUILDS_SUFFIX, open_store
from tests.conftest import TINY
from tests.docker.services import BIN, Processes, free_port, ray_env, ray_node_cmd, wait_until
from tests.docker.test_cluster_loopback import _ray_nodes
from tests.study.test_storage import KEYS

pytestmark = pytest.mark.slow
EPOCHS = 4
KILL = "train.step[stage=seg,epoch=3,step=2]=kill"  # once, in whichever trial gets there first
BUCKET = "cluster"
STORAGE = f"s3://{BUCKET}/studies"


def _start(procs: Processes, name: str, cmd: list[str], env: dict[str, str], cwd: Path) -> None:
    """Start one ``ray start --block`` in ``cwd`` and wait until it says it is up (one after the other)."""
    node = procs.start(name, cmd, env=env, cwd=cwd)
    log = procs.log_dir / f"{name}.log"
    wait_until(lambda: "Ray runtime started" in log.read_text(errors="replace"), 120, name,
               lambda: node.poll() is None)


def _apart(cmd: list[str], hidden: Path) -> list[str]:
    """``cmd`` in a new mount namespace where ``hidden`` is an empty tmpfs: a node on another host."""
    return ["unshare", "--mount", "sh", "-c", 'mount -t tmpfs ocr-apart "$0" && exec "$@"', str(hidden), *cmd]


def _can_isolate() -> bool:
    probe = subprocess.run(["unshare", "--mount", "sh", "-c", "mount -t tmpfs ocr-apart /mnt"], capture_output=True,
                           check=False) if shutil.which("unshare") else None
    return probe is not None and probe.returncode == 0


def _moto(procs: Processes) -> str:
    import boto3

    port = free_port()
    server = procs.start("moto", [str(BIN / "moto_server"), "-H", "127.0.0.1", "-p", str(port)])
    endpoint = f"http://127.0.0.1:{port}"
    client = boto3.session.Session().client("s3", endpoint_url=endpoint, region_name=KEYS["AWS_REGION"],
                                            aws_access_key_id="testing", aws_secret_access_key="testing")

    def up() -> bool:
        try:
            client.create_bucket(Bucket=BUCKET)
            return True
        except Exception:  # not listening yet
            return False

    wait_until(up, 60, "moto_server", lambda: server.poll() is None)
    return endpoint


def _spec(root: Path) -> dict[str, Any]:
    """Two trials (selection none/oc, seed 0) that share one stage 1; 3 steps per epoch."""
    trial = {**TINY, "cache_dir": str(root / "driver" / "cache"), "seg.epochs": EPOCHS}
    return {"name": "bucketed", "trial": trial, "grid": {"ocr.selection": ["none", "oc"]}, "seeds": [0],
            "scheduler": {"type": "none"}, "max_concurrent": 2, "resources": {"cpus": 1, "gpus": 0},
            "tracking": {"uri": f"sqlite:///{root / 'driver' / 'mlflow.db'}"}, "storage": STORAGE}


def _results(store: Any) -> dict[str, list[dict[str, Any]]]:
    """Tune's result.json lines of every trial, read from the bucket."""
    out = {}
    for name in store.names("tune"):
        raw = store.read_bytes("tune", name, "result.json")
        if raw is not None:
            out[name] = [json.loads(line) for line in raw.decode().splitlines() if line.strip()]
    return out


def test_nodes_sharing_only_a_bucket_build_stage1_once_and_resume_a_killed_worker() -> None:
    if sys.platform != "linux":
        pytest.skip("the loopback cluster needs Linux (child subreaper)")
    if not _can_isolate():
        pytest.skip("needs `unshare --mount` and tmpfs mounts (root) to keep the workers off the driver's folder")
    start = time.monotonic()
    root = Path(tempfile.mkdtemp(prefix="ocr-cb-"))  # short: Ray's unix sockets must fit in 107 bytes
    procs = Processes(root)
    try:
        endpoint = _moto(procs)
        aws = {**KEYS, "AWS_ENDPOINT_URL": endpoint}
        port = free_port()
        for folder in ("head", "node0", "node1", "driver"):
            (root / folder).mkdir()
        _start(procs, "ray-head", ray_node_cmd(root / "ray", cpus=0, gpus=0, head_port=port),
               {**ray_env(), **aws}, root / "head")
        for i in range(2):
            env = {**ray_env(), **aws, "OCR_STUDY_CACHE_DIR": str(root / f"node{i}" / "cache"),
                   FAILPOINTS_ENV: KILL, FAILPOINT_DIR_ENV: str(root / "fired")}  # seen by both workers
            node = ray_node_cmd(root / "ray", cpus=1, gpus=0, address=f"127.0.0.1:{port}")
            _start(procs, f"ray-worker-{i}", _apart(node, root / "driver"), env, root / f"node{i}")
        nodes = _ray_nodes(f"127.0.0.1:{port}", 3, timeout=60)
        assert sorted(n["resources"].get("CPU", 0) for n in nodes) == [0, 1, 1], nodes
        spec_path = root / "driver" / "bucketed.yaml"
        spec_path.write_text(yaml.safe_dump(_spec(root)))
        env = {**ray_env(), **aws, "TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S": "0"}
        driver = procs.start("driver", [str(BIN / "ocr-study"), "run", str(spec_path), "--address",
                                        f"127.0.0.1:{port}"], env=env, cwd=root / "driver")
        driver.wait(timeout=600)
        log = (root / "driver.log").read_text(errors="replace")
        assert driver.returncode == 0, log[-4000:]
        (fault,) = fired(root / "fired")  # a trial's worker killed itself mid-epoch 3, after epoch 2's checkpoint
        _check(root, endpoint, int(fault["pid"]))
        print(f"bucket-only cluster test: {time.monotonic() - start:.1f} s wall")
    except Exception:
        for path in sorted(root.glob("*.log")):
            print(f"--- {path.name}\n{path.read_text(errors='replace')[-2500:]}", file=sys.stderr)
        raise
    finally:
        survivors = procs.stop()
        subprocess.run(["rm", "-rf", str(root)], check=False)
        assert not survivors, f"processes left behind: {survivors}"


def _check(root: Path, endpoint: str, victim: int) -> None:
    with pytest.MonkeyPatch.context() as mp:
        for key, value in {**KEYS, "AWS_ENDPOINT_URL": endpoint}.items():
            mp.setenv(key, value)
        study = open_store(f"{STORAGE}/bucketed")
        results = _results(study)
        assert len(results) == 2, list(results)
        nodes = {line["node_id"] for lines in results.values() for line in lines}
        seen = {name[:20]: [(line["node_id"][:6], line["pid"], line["epoch"], round(line["timestamp"]))
                            for line in lines] for name, lines in results.items()}
        assert len(nodes) == 2, seen  # one trial on each worker (at least before the kill)
        resumed = [lines for lines in results.values() if len({line["pid"] for line in lines}) == 2]
        assert len(resumed) == 1 and victim in {line["pid"] for line in resumed[0]}, (victim, seen)
        for lines in results.values():
            epochs = [int(line["epoch"]) for line in lines]
            assert epochs[-1] == EPOCHS and set(epochs) == set(range(1, EPOCHS + 1)), epochs
            if lines is not resumed[0]:
                assert epochs == sorted(set(epochs)), epochs
        after = [int(line["epoch"]) for line in resumed[0] if line["pid"] != victim]
        before = [int(line["epoch"]) for line in resumed[0] if line["pid"] == victim]
        # continued from epoch 2's checkpoint (registered before epoch 3 began), nothing run again
        assert before == [1, 2] and after == list(range(3, EPOCHS + 1)), seen
        for trial in study.names("trials"):  # the workers wrote theirs into a tmpfs: these are the driver's
            lines = (study.read_bytes("trials", trial, "epochs.jsonl") or b"").decode().splitlines()
            epochs = [int(json.loads(line)["epoch"]) for line in lines if line.strip()]
            assert set(epochs) == set(range(1, EPOCHS + 1)), (trial, epochs)
            assert json.loads(study.read_bytes("trials", trial, "trial.json") or b"{}")["status"] == "TERMINATED"
        assert len(study.names("trials")) == 2, study.names("trials")
        stage1 = study.child("cache", "stage1")
        entries = [n for n in stage1.names() if n.endswith(".pt")]
        assert len(entries) == 1, stage1.names()
        assert len(stage1.names(f"{entries[0]}{BUILDS_SUFFIX}")) == 1  # computed once between the nodes
        for i in range(2):  # and each node keeps its own copy
            assert (root / f"node{i}" / "cache" / "stage1" / entries[0]).is_file()
        assert not (root / "driver" / "cache" / "stage1").exists()  # the driver computes no stage 1
        tune = study.names("tune")
        assert any(name.startswith("checkpoint_") for trial in tune if trial in results
                   for name in study.names("tune", trial)), tune
