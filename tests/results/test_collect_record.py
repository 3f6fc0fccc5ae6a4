"""Collecting a study's record: schema, round trip against the raw files, idempotence, a running study."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from results import SCHEMA_VERSION, Dataset, ResultsError, collect_study, load_dataset
from tests.results.conftest import make_study


def _raw_reports(study_dir: Path) -> dict[str, list[dict[str, object]]]:
    """Every complete epoch line of every trial's record, read the plain way."""
    out: dict[str, list[dict[str, object]]] = {}
    for path in (study_dir / "trials").glob("*/epochs.jsonl"):
        for line in path.read_text().splitlines():
            try:
                row = json.loads(line)
            except ValueError:
                continue
            out.setdefault(str(row["trial_id"]), []).append(row)
    return out


def _trial_docs(study_dir: Path) -> dict[str, dict[str, object]]:
    return {p.parent.name: json.loads(p.read_text()) for p in (study_dir / "trials").glob("*/trial.json")}


def test_files_have_the_schema_version_zstd_and_dictionary_categoricals(synthetic_dir: Path,
                                                                        synthetic: Dataset) -> None:
    folder = synthetic_dir / "results"
    for name in ("trials.parquet", "curves.parquet"):
        meta = pq.read_schema(folder / name).metadata
        assert meta[b"ocr_study.schema_version"].decode() == SCHEMA_VERSION
        assert meta[b"ocr_study.source"] == b"record"
        row_group = pq.ParquetFile(folder / name).metadata.row_group(0)
        assert {row_group.column(i).compression for i in range(row_group.num_columns)} == {"ZSTD"}
    trials = pq.read_schema(folder / "trials.parquet")
    for column in ("study", "cell", "status", "stop_reason", "node_id", "params.ocr.selection"):
        assert pa.types.is_dictionary(trials.field(column).type), column
    assert trials.field("params.ocr.delta").type == pa.float64()
    assert trials.field("params.seed").type == pa.int64()
    assert trials.field("params.amp").type == pa.bool_()
    assert trials.field("epochs").type == pa.int64()
    curves = pq.read_schema(folder / "curves.parquet")
    assert pa.types.is_dictionary(curves.field("trial_id").type)
    assert curves.names[:3] == ["study", "trial_id", "epoch"]


def test_round_trip_matches_the_raw_record_files(synthetic_dir: Path, synthetic: Dataset) -> None:
    raw = _raw_reports(synthetic_dir)
    docs = _trial_docs(synthetic_dir)
    trials = synthetic.trials.set_index("trial_id")
    assert set(trials.index) == set(raw) and len(trials) == 21
    assert len(synthetic.curves) == sum(len(rows) for rows in raw.values())
    for trial_id, rows in raw.items():
        last = rows[-1]
        row = trials.loc[trial_id]
        assert row["epochs"] == last["epoch"]
        assert row["final_val_miou"] == last["val_miou"]
        assert row["wall_s"] == last["trial_wall_s"]
        doc = docs[trial_id]
        assert row["node_id"] == doc["node_id"]
        assert row["cell"] == doc["config"]["meta.cell"]  # type: ignore[index]
        if doc["config"]["ocr.selection"] == "none":  # type: ignore[index]
            assert pd.isna(row["params.ocr.delta"])  # a baseline's δ changed nothing: not exported
        else:
            assert row["params.ocr.delta"] == doc["config"]["ocr.delta"]  # type: ignore[index]
        curve = synthetic.curves[synthetic.curves["trial_id"] == trial_id]
        assert curve["val_miou"].tolist() == [r["val_miou"] for r in rows]
        best = max(rows, key=lambda r: float(r["val_miou"]))  # type: ignore[arg-type]
        assert row["best_epoch"] == best["epoch"] and row["best_val_oc_rate"] == best["val_oc_rate"]


def test_stop_reasons_rungs_and_errors(synthetic: Dataset) -> None:
    trials = synthetic.trials
    reasons = trials["stop_reason"].astype(str)
    assert set(reasons) == {"completed", "early_stopped", "failed", "running"}
    stopped = trials[reasons == "early_stopped"]
    assert set(stopped["stop_rung"].astype(int)) <= set(synthetic.info.rungs) == {1, 2, 4}
    assert (stopped["epochs"] == stopped["stop_rung"]).all()
    assert (trials.loc[reasons == "completed", "epochs"] == 8).all()
    assert trials.loc[reasons != "early_stopped", "stop_rung"].isna().all()
    failed = trials[reasons == "failed"]
    assert failed["error"].tolist() == [
        "pipelines.engine.NonFiniteLossError: non-finite loss in stage 'seg' at epoch 2"]
    assert trials.loc[reasons != "failed", "error"].isna().all()
    assert (trials["gpu_s"] == 0.0).all()  # CPU trials


def test_collecting_twice_gives_the_same_rows_without_duplicates(tmp_path: Path) -> None:
    study = make_study(tmp_path)
    first = load_dataset(collect_study(study))
    path = next((study / "trials").glob("*/epochs.jsonl"))
    lines = path.read_text().splitlines(keepends=True)
    path.write_text("".join(lines) + lines[-1])  # an epoch written twice (a retried trial)
    second = load_dataset(collect_study(study))
    pd.testing.assert_frame_equal(first.trials, second.trials)
    pd.testing.assert_frame_equal(first.curves, second.curves)
    assert not second.curves.duplicated(["trial_id", "epoch"]).any()
    assert not list((study / "results").glob(".*tmp"))


def test_a_running_study_is_collected_as_it_stands(synthetic: Dataset) -> None:
    running = synthetic.trials[synthetic.trials["status"].astype(str) == "RUNNING"]
    assert len(running) == 2
    assert (running["epochs"] == 4).all()  # the half-written fifth line is skipped
    assert (running["stop_reason"].astype(str) == "running").all()


def test_missing_fields_and_resumed_cpu_and_wall_time(tmp_path: Path) -> None:
    study = make_study(tmp_path, running=0, failed=0, asha=False)
    path = next((study / "trials").glob("*/epochs.jsonl"))
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    for i, row in enumerate(rows):
        row["trial_cpu_s"] = float(i % 4 + 1)  # resumed after epochs 4: the counters start again
        row["trial_wall_s"] = float(i % 4 + 2)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    doc = json.loads((path.parent / "trial.json").read_text())
    doc.pop("node_id")
    (path.parent / "trial.json").write_text(json.dumps(doc))
    trials = load_dataset(collect_study(study)).trials.set_index("trial_id")
    row = trials.loc[str(rows[0]["trial_id"])]
    assert row["cpu_s"] == 4.0 + 4.0 and row["wall_s"] == 5.0 + 5.0
    assert pd.isna(row["node_id"])


def test_errors_name_the_problem(tmp_path: Path) -> None:
    with pytest.raises(ResultsError, match="no study folder"):
        collect_study(tmp_path / "nothing")
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "study.json").write_text("[1, 2]")
    with pytest.raises(ResultsError, match=r"study.json does not hold a study record"):
        collect_study(tmp_path / "empty")


def test_an_old_schema_version_asks_to_collect_again(tmp_path: Path) -> None:
    folder = collect_study(make_study(tmp_path))
    table = pq.read_table(folder / "trials.parquet")
    meta = dict(table.schema.metadata)
    meta[b"ocr_study.schema_version"] = b"0"
    pq.write_table(table.replace_schema_metadata(meta), folder / "trials.parquet")
    with pytest.raises(ResultsError, match=r"schema version 0.*export"):
        load_dataset(folder)


@pytest.mark.slow
def test_reading_imports_neither_ray_nor_the_training_code(synthetic_dir: Path, tmp_path: Path) -> None:
    code = (f"import sys, results; results.report_study({str(synthetic_dir)!r}, {str(tmp_path)!r}); "
            "bad = [m for m in sys.modules if m.split('.')[0] in ('ray', 'torch', 'pipelines', 'ocr', 'study', "
            "'mlflow')]; print(bad); sys.exit(1 if bad else 0)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                          cwd=Path(__file__).parents[2])
    assert done.returncode == 0, done.stdout + done.stderr


def test_a_study_without_trials_gives_an_empty_dataset_with_its_facts(tmp_path: Path) -> None:
    study = make_study(tmp_path, running=0, failed=0)
    shutil.rmtree(study / "trials")
    dataset = load_dataset(collect_study(study))
    assert dataset.trials.empty and dataset.curves.empty and dataset.info.rungs == (1, 2, 4)


def test_without_study_json_the_facts_are_inferred_from_the_trials(tmp_path: Path) -> None:
    study = make_study(tmp_path, running=0, failed=0)
    (study / "study.json").unlink()
    dataset = load_dataset(collect_study(study))
    assert dataset.info.grid == {"ocr.selection": ["all", "none", "oc"]} or set(dataset.info.grid["ocr.selection"]) \
        == {"all", "none", "oc"}
    assert dataset.info.search_keys == ("ocr.delta", "ocr.tau") and len(dataset.trials) == 21


def test_a_trial_reporting_only_nan_has_no_best_epoch(tmp_path: Path) -> None:
    study = make_study(tmp_path, running=0, failed=0)
    path = next((study / "trials").glob("*/epochs.jsonl"))
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    for row in rows:
        row["val_miou"] = None  # a NaN: JSON has none, the record writes null
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    trials = load_dataset(collect_study(study)).trials.set_index("trial_id")
    row = trials.loc[str(rows[0]["trial_id"])]
    assert pd.isna(row["best_epoch"]) and pd.isna(row["final_val_miou"]) and row["epochs"] == len(rows)
    assert trials["best_epoch"].notna().sum() == len(trials) - 1
