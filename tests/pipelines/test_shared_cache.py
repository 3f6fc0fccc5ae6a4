"""Stage 1 shared through an object store (moto_server on 127.0.0.1, stopped by PID): nodes that share
nothing but the bucket compute it once between them, and each keeps its own local copy."""

from __future__ import annotations

import dataclasses
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

import pipelines.stage1_key as stage1_key
import pipelines.stage_cam as stage_cam
from pipelines.config import ConfigError, TrialConfig, from_flat
from pipelines.data import open_data
from pipelines.reporter import ListReporter
from record import FAILPOINT_DIR_ENV, FAILPOINTS_ENV, fired
from storage import BUILDS_SUFFIX, fetch_or_build, open_store
from tests.pipelines import trees
from tests.pipelines.test_disk_trial import TINY_DISK
from tests.study.test_storage import KEYS, bucket, endpoint  # noqa: F401  (fixtures)


def _count_builds(monkeypatch: pytest.MonkeyPatch, name: str) -> list[int]:
    calls: list[int] = []
    real = getattr(stage_cam, name)

    def counting(*args: Any) -> Any:
        calls.append(1)
        return real(*args)

    monkeypatch.setattr(stage_cam, name, counting)
    return calls


def _receipts(uri: str, name: str) -> list[str]:
    return open_store(uri).names("stage1", f"{name}{BUILDS_SUFFIX}")


def test_nodes_sharing_only_a_bucket_build_stage1_once(tiny_config: TrialConfig, bucket: str,  # noqa: F811
                                                       tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    uri = f"s3://{bucket}/studies/x/cache"
    builds = _count_builds(monkeypatch, "_build_tensor")
    nodes = [dataclasses.replace(tiny_config, cache_dir=str(tmp_path / f"node{i}"), shared_cache=uri)
             for i in range(3)]
    results: dict[int, stage_cam.CamResult] = {}

    def node(i: int) -> None:
        torch.set_num_threads(1)
        results[i] = stage_cam.run_cam_stage(nodes[i], open_data(nodes[i]), ListReporter())

    threads = [threading.Thread(target=node, args=(i,)) for i in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(results) == 3 and len(builds) == 1
    first = results[0].pseudo_masks
    assert isinstance(first, torch.Tensor)
    assert all(torch.equal(first, r.pseudo_masks) for r in results.values())  # type: ignore[arg-type]
    name = f"cam-{stage1_key.stage_key(tiny_config)}.pt"
    for i in range(3):  # each node keeps its own copy, beside its checksum
        assert (tmp_path / f"node{i}" / "stage1" / name).is_file()
        assert (tmp_path / f"node{i}" / "stage1" / f"{name}.sha256").is_file()
    assert len(_receipts(uri, name)) == 1
    assert not open_store(uri).exists("stage1", f"{name}.lease")


def test_a_disk_stage1_travels_as_one_archive(tmp_path: Path, bucket: str,  # noqa: F811
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    voc = trees.write_voc(tmp_path / "data")
    uri = f"s3://{bucket}/studies/y/cache"
    builds = _count_builds(monkeypatch, "_build_folder")
    folders: list[Path] = []
    for i in range(2):
        cfg = from_flat({**TINY_DISK, "data.root": str(voc), "cache_dir": str(tmp_path / f"node{i}"),
                         "shared_cache": uri})
        masks = stage_cam.run_cam_stage(cfg, open_data(cfg), ListReporter()).pseudo_masks
        assert isinstance(masks, Path) and masks.is_relative_to(tmp_path / f"node{i}")
        folders.append(masks)
    assert len(builds) == 1
    a, b = (sorted(p.name for p in f.iterdir()) for f in folders)
    pngs = [n for n in a if n.endswith(".png")]
    assert a == b and stage_cam.STATE_FILE in a and len(pngs) == len(trees.VOC_LISTS["train"])
    for png in pngs:
        assert np.array_equal(np.asarray(Image.open(folders[0] / png)), np.asarray(Image.open(folders[1] / png)))
    assert len(_receipts(uri, f"{folders[0].name}.tar")) == 1


def test_shared_cache_must_be_a_store_uri() -> None:
    with pytest.raises(ConfigError, match="shared_cache"):
        from_flat({"shared_cache": "/some/folder"})


@pytest.mark.parametrize("where", ["s3", "local"])
def test_a_builder_killed_while_publishing_leaves_nothing_and_is_taken_over(where: str, tmp_path: Path,
                                                                            request: pytest.FixtureRequest) -> None:
    """The builder dies (SIGKILL) at the failpoint ``stage1.publish``: built, not yet uploaded, holding the
    lease. Nothing is published, the lease stays until it runs out, and the next asker builds and publishes."""
    uri = f"s3://{request.getfixturevalue('bucket')}/cache" if where == "s3" else str(tmp_path / "store")
    for node in ("dead", "live"):
        (tmp_path / node).mkdir()
    program = ("from pathlib import Path\nfrom storage import fetch_or_build, open_store\n"
               f"fetch_or_build(open_store({uri!r}), 'stage1/cam.pt', Path({str(tmp_path / 'dead' / 'cam.pt')!r}), "
               "lambda out: out.write_bytes(b'dead'), lease_s=1.0)\n")
    env = {**os.environ, FAILPOINTS_ENV: "stage1.publish=kill", FAILPOINT_DIR_ENV: str(tmp_path / "fired")}
    dead = subprocess.run([sys.executable, "-c", program], env=env, capture_output=True, text=True, timeout=300)
    assert dead.returncode == -signal.SIGKILL, dead.stderr
    (fault,) = fired(tmp_path / "fired")
    assert fault["name"] == "stage1.publish" and fault["context"] == {"name": "stage1/cam.pt"}
    store = open_store(uri)
    assert not store.exists("stage1/cam.pt") and not (tmp_path / "dead" / "cam.pt").exists()  # nothing published
    assert store.exists("stage1/cam.pt.lease")  # held by the dead builder until its lease runs out
    assert fetch_or_build(store, "stage1/cam.pt", tmp_path / "live" / "cam.pt",
                          lambda out: out.write_bytes(b"live"), poll_s=0.05)  # this asker built it
    assert (tmp_path / "live" / "cam.pt").read_bytes() == b"live" and store.read_bytes("stage1/cam.pt") == b"live"
    assert len(store.names("stage1", f"cam.pt{BUILDS_SUFFIX}")) == 1 and not store.exists("stage1/cam.pt.lease")
