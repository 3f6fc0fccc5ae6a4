"""A tiny study whose storage is an S3 bucket (moto_server on 127.0.0.1, stopped by PID): Tune's experiment
and the study record land in the bucket, and `status` reads the study back from the bucket alone."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pyarrow.fs as pafs
import pytest
import yaml

from storage import join_uri, mirror_dir, open_store
from study.handle import load_study_spec, open_study
from study.runner import trial_table
from tests.study.cli_procs import Processes
from tests.study.test_storage import KEYS, bucket, endpoint  # noqa: F401  (fixtures)
from tests.study.test_tune_study import tiny_doc

pytestmark = pytest.mark.slow
OCR_STUDY = str(Path(sys.executable).parent / "ocr-study")


def test_a_study_on_s3_keeps_tune_and_its_record_in_the_bucket(bucket: str, endpoint: str,  # noqa: F811
                                                                 tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    storage = f"s3://{bucket}/studies?endpoint_url={endpoint}"  # the endpoint in the URI, not the environment
    monkeypatch.delenv("AWS_ENDPOINT_URL")
    doc = tiny_doc(tmp_path, tmp_path / "cache", seeds=[0], grid={"ocr.selection": ["none", "oc"]},
                   search={"samples": 1, "seed": 0,
                           "params": {"ocr.delta": {"type": "uniform", "low": 0.0, "high": 4.0}}},
                   storage=storage, tracking={"uri": f"sqlite:///{tmp_path / 'mlflow.db'}"})
    (tmp_path / "spec.yaml").write_text(yaml.safe_dump(doc))
    procs = Processes(tmp_path, **KEYS)
    try:
        proc = procs.start("run", str(tmp_path / "spec.yaml"))
        out, _ = proc.communicate(timeout=500)
    finally:
        procs.kill_all()
    assert proc.returncode == 0, out[-3000:]
    store = open_store(join_uri(storage, "tiny"))
    assert {"spec.yaml", "study.json", "trials", "tune"} <= set(store.names())
    # the report at the end of the run is made in the mirror and pushed (it was looked for at "s3:/…" before)
    assert "report of study tiny" in out and "report.html" in store.names("report")
    assert any(name.endswith(".json") or name.endswith(".pkl") for name in store.names("tune"))
    assert len(store.names("trials")) == 2
    artifacts = store.child("mlflow-artifacts")  # the driver tracks into SQLite and logs artifacts to the bucket
    listing = artifacts.fs.get_file_info(pafs.FileSelector(artifacts.root, recursive=True))
    assert sum(info.base_name == "class_iou.json" for info in listing) == 2, [i.path for i in listing]
    mirror = tmp_path / mirror_dir(join_uri(storage, "tiny")).relative_to(Path.cwd())
    shutil.rmtree(mirror)  # what status shows comes from the bucket
    monkeypatch.chdir(tmp_path)
    spec = load_study_spec("tiny", storage)
    rows = trial_table(open_study(spec))
    assert sorted(row["status"] for row in rows) == ["TERMINATED", "TERMINATED"], rows
    assert all(row["epochs"] == 2 for row in rows)
    for command in ("status", "export", "report"):
        cli = _cli(tmp_path, procs.env, command, "tiny", "--storage", storage)
        assert cli.returncode == 0 and "tiny" in cli.stdout, cli.stdout + cli.stderr
    assert {"trials.parquet", "curves.parquet"} <= set(store.names("results"))
    assert "report.md" in store.names("report") or store.names("report"), store.names()
    shutil.rmtree(mirror)
    resumed = _cli(tmp_path, procs.env, "resume", "tiny", "--storage", storage)  # Tune restores from the bucket
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]


def _cli(cwd: Path, env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    procs = Processes(cwd, **{k: v for k, v in env.items() if k.startswith("AWS_")})
    try:
        proc = procs.start(*args)
        out, _ = proc.communicate(timeout=300)
    finally:
        procs.kill_all()
    return subprocess.CompletedProcess(proc.args, proc.returncode or 0, out, "")
