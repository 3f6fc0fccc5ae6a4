"""storage against a real S3-compatible server (moto_server) that the test starts on 127.0.0.1 and
stops by PID, and against a local folder."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pyarrow.fs as pafs
import pytest

from storage import (
    StorageError,
    StoreLease,
    compute_once,
    is_remote,
    join_uri,
    mlflow_artifacts,
    open_store,
)
from tests.docker.services import free_port

MOTO = Path(sys.executable).parent / "moto_server"
KEYS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_REGION": "us-east-1",
        "AWS_EC2_METADATA_DISABLED": "true"}


@pytest.fixture(scope="module")
def endpoint() -> Iterator[str]:
    port = free_port()
    proc = subprocess.Popen([str(MOTO), "-H", "127.0.0.1", "-p", str(port)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        _wait_port(port, proc)
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _wait_port(port: int, proc: subprocess.Popen[bytes]) -> None:
    import socket

    end = time.monotonic() + 30
    while time.monotonic() < end:
        assert proc.poll() is None, "moto_server exited"
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.1)
    raise TimeoutError("moto_server did not listen")


@pytest.fixture
def bucket(endpoint: str, monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest) -> str:
    import boto3

    for key, value in {**KEYS, "AWS_ENDPOINT_URL": endpoint}.items():
        monkeypatch.setenv(key, value)
    name = f"b{abs(hash(request.node.name)) % 10**8}"
    boto3.client("s3", endpoint_url=endpoint).create_bucket(Bucket=name)
    return name


def test_uris_are_told_apart() -> None:
    assert is_remote("s3://b/p") and is_remote("gs://b/p")
    assert not is_remote("/tmp/x") and not is_remote("file:///tmp/x") and not is_remote("rel/dir")
    local = open_store("file:///tmp/some/where/")
    assert local.local and local.root == "/tmp/some/where"
    with pytest.raises(StorageError, match="names no bucket"):
        open_store("s3:///prefix")
    with pytest.raises(StorageError, match="endpoint_url"):
        open_store("s3://b/p?endpoint_url=127.0.0.1:9000")
    with pytest.raises(StorageError, match="cannot name"):
        local.path("a/../b")


def test_names_join_before_an_endpoint_query() -> None:
    minio = "s3://b/studies?endpoint_url=http://minio:9000"
    assert join_uri(minio, "quick", "cache") == "s3://b/studies/quick/cache?endpoint_url=http://minio:9000"
    assert join_uri("s3://b/", "quick") == join_uri("s3://b", "quick") == "s3://b/quick"
    assert join_uri("/tmp/x/", "quick") == "/tmp/x/quick" and join_uri("file:///tmp/x", "q") == "file:///tmp/x/q"
    assert mlflow_artifacts(join_uri(minio, "quick")) == "s3://b/studies/quick/mlflow-artifacts"  # MLflow: env
    store = open_store(join_uri(minio, "quick"))
    assert store.root == "b/studies/quick" and store.endpoint_url == "http://minio:9000"
    child = store.child("cache")
    assert child.root == "b/studies/quick/cache" and open_store(child.uri).endpoint_url == "http://minio:9000"


def test_objects_round_trip_on_s3_including_a_multipart_upload(bucket: str) -> None:
    store = open_store(f"s3://{bucket}/studies")
    assert isinstance(store.fs, pafs.S3FileSystem) and store.root == f"{bucket}/studies"
    store.write_bytes(b'{"a": 1}', "tiny", "study.json")
    big = os.urandom(12 * 2**20)  # past pyarrow's 5-10 MB part size: a multipart upload
    store.write_bytes(big, "tiny", "trials", "t1", "big.bin")
    assert store.read_bytes("tiny", "study.json") == b'{"a": 1}'
    assert store.read_bytes("tiny/trials/t1/big.bin") == big
    assert store.read_bytes("tiny", "missing") is None
    assert store.names("tiny") == ["study.json", "trials"] and store.names("nothing") == []
    store.delete("tiny", "study.json")
    assert not store.exists("tiny", "study.json")


def test_endpoint_from_the_uri_when_no_variable_names_one(bucket: str, endpoint: str,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AWS_ENDPOINT_URL")
    store = open_store(f"s3://{bucket}/p?endpoint_url={endpoint}")
    store.write_bytes(b"x", "o")
    assert store.read_bytes("o") == b"x" and store.endpoint_url == endpoint


@pytest.mark.parametrize("where", ["s3", "local"])
def test_conditional_create_and_leases(where: str, request: pytest.FixtureRequest, tmp_path: Path) -> None:
    uri = f"s3://{request.getfixturevalue('bucket')}/c" if where == "s3" else str(tmp_path)
    store = open_store(uri)
    assert store.create_exclusive(b"1", "m")
    assert not store.create_exclusive(b"2", "m") and store.read_bytes("m") == b"1"
    first, second = StoreLease(store, "entry", lease_s=60), StoreLease(store, "entry", lease_s=60)
    assert first.try_acquire() and not second.try_acquire()
    first.release()
    assert second.try_acquire()
    dead = StoreLease(store, "other", lease_s=2.0)  # its holder "dies": the lease runs out
    assert dead.try_acquire()
    taker = StoreLease(store, "other", lease_s=60)
    assert not taker.try_acquire()
    time.sleep(2.1)
    assert taker.try_acquire()
    dead.release()  # not the owner any more: the taker keeps the lease
    assert store.exists("other.lease")


@pytest.mark.parametrize("where", ["s3", "local"])
def test_an_entry_is_built_once_by_many_concurrent_askers(where: str, request: pytest.FixtureRequest,
                                                          tmp_path: Path) -> None:
    uri = f"s3://{request.getfixturevalue('bucket')}/cache" if where == "s3" else str(tmp_path)
    builds: list[int] = []
    got: list[bytes] = []

    def build() -> bytes:
        builds.append(1)
        time.sleep(0.5)  # the others arrive while this one builds
        return b"stage-1 " * 1000

    def ask() -> None:
        got.append(compute_once(open_store(uri), "stage1/cam.bin", build, poll_s=0.05))

    threads = [threading.Thread(target=ask) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(builds) == 1 and len(got) == 6 and set(got) == {b"stage-1 " * 1000}
    assert not open_store(uri).exists("stage1/cam.bin.lease")  # the lease is gone once published


@pytest.mark.parametrize("where", ["s3", "local"])
def test_an_expired_lease_is_taken_over_by_exactly_one_of_many_takers(where: str, request: pytest.FixtureRequest,
                                                                     tmp_path: Path) -> None:
    uri = f"s3://{request.getfixturevalue('bucket')}/t" if where == "s3" else str(tmp_path)
    store = open_store(uri)
    for round_ in range(3):
        name = f"entry{round_}"
        store.write_bytes(b'{"owner": "dead", "expires": 0}', f"{name}.lease")  # its holder died
        won: list[bool] = []
        barrier = threading.Barrier(6)

        def take(name: str = name, won: list[bool] = won, barrier: threading.Barrier = barrier) -> None:
            lease = StoreLease(open_store(uri), name, lease_s=60)
            barrier.wait()
            won.append(lease.try_acquire())

        threads = [threading.Thread(target=take) for _ in range(6)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert len(won) == 6 and sum(won) == 1, won


def test_a_record_goes_to_the_store_and_comes_back_without_tunes_folder(bucket: str, tmp_path: Path) -> None:
    from storage import mirror_dir, pull_record, push_record

    local = tmp_path / "run"
    for rel, text in {"spec.yaml": "name: x", "study.json": "{}", "trials/t1/trial.json": "{}",
                      "trials/t1/epochs.jsonl": "{}\\n", "tune/experiment_state.json": "{}",
                      "tune-confirm/experiment_state.json": "{}", "tuned/notes.txt": "a folder of the user's",
                      ".lock": "1", "mlflow.db": "db"}.items():
        (local / rel).parent.mkdir(parents=True, exist_ok=True)
        (local / rel).write_text(text)
    uri = f"s3://{bucket}/studies/x"
    assert push_record(local, uri) == 5  # Tune's two folders named as such, not by their prefix
    back = tmp_path / "back"
    assert pull_record(uri, back) == 5
    assert (back / "trials/t1/epochs.jsonl").read_text() == "{}\\n"
    assert not (back / "tune").exists() and not (back / ".lock").exists()
    assert mirror_dir(uri) == mirror_dir(uri + "/") != mirror_dir(f"s3://{bucket}/studies/y")


def test_a_study_already_in_the_bucket_is_not_overwritten_without_fresh(bucket: str, tmp_path: Path,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    from study import runner
    from study.handle import open_study
    from study.spec import load_spec
    from tests.study.test_tune_study import tiny_doc

    monkeypatch.chdir(tmp_path)
    storage = f"s3://{bucket}/studies"
    spec = load_spec(tiny_doc(tmp_path, tmp_path / "cache", storage=storage,
                              tracking={"uri": f"sqlite:///{tmp_path / 'mlflow.db'}"}))
    store = open_store(spec.study_dir)
    store.write_bytes(b"name: tiny", "spec.yaml")
    store.write_bytes(b"{}", "tune", "old_trial", "result.json")
    with pytest.raises(runner.StudyError, match="resume tiny --storage s3://"):
        runner.run_study(open_study(spec))
    assert store.read_bytes("spec.yaml") == b"name: tiny"
    assert not open_study(spec).folder.exists()  # nothing half-made is left in the mirror
    runner._check_store(open_study(spec), fresh=True)
    assert store.names() == []  # --fresh: no trial of the old study can mix into the new one


def test_an_unknown_study_on_a_store_names_the_ones_there(bucket: str, tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    from results import ResultsError
    from storage import stored_studies
    from study.commands.report import study_folder
    from study.handle import UnknownStudyError, load_study_spec

    monkeypatch.chdir(tmp_path)
    storage = f"s3://{bucket}/studies"
    store = open_store(storage)
    for name in ("alpha", "beta"):
        store.write_bytes(b"name: x", name, "spec.yaml")
    store.write_bytes(b"{}", "gamma", "notes.json")  # a folder without a spec is no study
    assert stored_studies(storage) == ["alpha", "beta"]
    with pytest.raises(UnknownStudyError, match=r"no study 'alhpa' in s3://.*known: \['alpha', 'beta'\]"):
        load_study_spec("alhpa", storage)
    with pytest.raises(ResultsError, match=r"no study 'alhpa' in s3://.*known: \['alpha', 'beta'\]"):
        study_folder("alhpa", storage)
    assert stored_studies(f"s3://{bucket}/elsewhere") == []
