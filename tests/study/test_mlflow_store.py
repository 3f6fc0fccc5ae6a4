"""MLflow's artifacts of a study on object storage land in the study's bucket: the ``mlflow server`` that
``ocr-study ui`` starts gets ``--artifacts-destination s3://.../mlflow-artifacts`` and the store's endpoint,
and an artifact logged through it is found in the bucket (moto_server on 127.0.0.1, stopped by PID)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pyarrow.fs as pafs
import pytest

from storage import open_store
from study.commands.ui import mlflow_server
from study.handle import UnknownStudyError, open_study
from study.processes import end_group
from study.spec import load_spec
from tests.docker.services import free_port, http_ok, wait_until
from tests.study.test_storage import KEYS, bucket, endpoint  # noqa: F401  (fixtures)
from tests.study.test_tune_study import tiny_doc

pytestmark = pytest.mark.slow


def test_an_artifact_logged_through_the_ui_server_lands_in_the_bucket(bucket: str, endpoint: str,  # noqa: F811
                                                                     tmp_path: Path) -> None:
    from mlflow.tracking import MlflowClient

    spec = load_spec(tiny_doc(tmp_path, tmp_path / "cache", storage=f"s3://{bucket}/studies",
                              tracking={"uri": f"sqlite:///{tmp_path / 'mlflow.db'}"}))
    port = free_port()
    cmd, env = mlflow_server(open_study(spec), port)
    destination = f"s3://{bucket}/studies/tiny/mlflow-artifacts"
    assert cmd[cmd.index("--artifacts-destination") + 1] == destination
    assert env["MLFLOW_S3_ENDPOINT_URL"] == endpoint
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True, cwd=tmp_path)
    try:
        url = f"http://127.0.0.1:{port}"
        wait_until(lambda: http_ok(f"{url}/health"), 120, "mlflow server", lambda: proc.poll() is None)
        client = MlflowClient(tracking_uri=url)
        run = client.create_run(client.create_experiment("tiny"))
        (tmp_path / "note.txt").write_text("stage-1 mIoU 0.5")
        client.log_artifact(run.info.run_id, str(tmp_path / "note.txt"), artifact_path="report")
        assert [a.path for a in client.list_artifacts(run.info.run_id, "report")] == ["report/note.txt"]
    finally:
        end_group(proc)
    store = open_store(destination)
    listing = store.fs.get_file_info(pafs.FileSelector(store.root, recursive=True))
    found = [info.path for info in listing if info.path.endswith("note.txt")]
    assert len(found) == 1 and found[0].endswith(f"{run.info.run_id}/artifacts/report/note.txt"), found
    assert store.read_bytes(found[0][len(store.root) + 1:]) == b"stage-1 mIoU 0.5"
    assert not (tmp_path / "mlartifacts").exists()  # nothing went to the server's local default


def test_a_study_tracked_by_a_server_is_not_served_again(tmp_path: Path) -> None:
    spec = load_spec(tiny_doc(tmp_path, tmp_path / "cache", storage="s3://b/studies",
                              tracking={"uri": "http://mlflow:5000"}))
    with pytest.raises(UnknownStudyError, match="tracked by the server http://mlflow:5000"):
        mlflow_server(open_study(spec), 5000)
