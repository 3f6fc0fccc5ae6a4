"""Collecting Tune's storage: schema, round trip against the raw files, idempotence, a running study."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from results import SCHEMA_VERSION, Dataset, ResultsError, collect_study, load_dataset
from results._collect_tune import error_line
from tests.results.conftest import make_study


def _raw_reports(study_dir: Path) -> dict[str, list[dict[str, object]]]:
    """Every complete report line of every trial, read the plain way."""
    out: dict[str, list[dict[str, object]]] = {}
    for path in (study_dir / "tune").glob("*/result.json"):
        for line in path.read_text().splitlines():
            try:
                row = json.loads(line)
            except ValueError:
                continue
            out.setdefault(str(row["trial_id"]), []).append(row)
    return out


def test_files_have_the_schema_version_zstd_and_dictionary_categoricals(synthetic_dir: Path,
                                                                        synthetic: Dataset) -> None:
    folder = synthetic_dir / "results"
    for name in ("trials.parquet", "curves.parquet"):
        meta = pq.read_schema(folder / name).metadata
        assert meta[b"ocr_study.schema_version"].decode() == SCHEMA_VERSION
        assert meta[b"ocr_study.source"] == b"tune"
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


def test_round_trip_matches_the_raw_tune_files(synthetic_dir: Path, synthetic: Dataset) -> None:
    raw = _raw_reports(synthetic_dir)
    trials = synthetic.trials.set_index("trial_id")
    assert set(trials.index) == set(raw) and len(trials) == 21
    assert len(synthetic.curves) == sum(len(rows) for rows in raw.values())
    for trial_id, rows in raw.items():
        last = rows[-1]
        row = trials.loc[trial_id]
        assert row["epochs"] == last["epoch"]
        assert row["final_val_miou"] == last["val_miou"]
        assert row["wall_s"] == last["time_total_s"]
        assert row["node_id"] == last["node_id"]
        assert row["cell"] == last["config"]["meta.cell"]  # type: ignore[index]
        assert row["params.ocr.delta"] == last["config"]["ocr.delta"]  # type: ignore[index]
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
    path = next((study / "tune").glob("*/result.json"))
    lines = path.read_text().splitlines(keepends=True)
    path.write_text("".join(lines) + lines[-1])  # a report written twice (a retried trial)
    second = load_dataset(collect_study(study))
    pd.testing.assert_frame_equal(first.trials, second.trials)
    pd.testing.assert_frame_equal(first.curves, second.curves)
    assert not second.curves.duplicated(["trial_id", "epoch"]).any()
    assert not list((study / "results").glob(".*tmp"))


def test_a_running_study_is_collected_as_it_stands(synthetic_dir: Path, synthetic: Dataset) -> None:
    running = synthetic.trials[synthetic.trials["status"].astype(str) == "RUNNING"]
    assert len(running) == 2  # one known to Tune's state, one newer than its last save
    state = json.loads(next((synthetic_dir / "tune").glob("experiment_state-*.json")).read_text())
    listed = {json.loads(entry[0])["trial_id"] for entry in state["trial_data"]}
    assert len(set(running["trial_id"]) - listed) == 1
    assert (running["epochs"] == 4).all()  # the half-written fifth report is skipped
    assert (running["stop_reason"].astype(str) == "running").all()


def test_missing_fields_of_older_results_and_resumed_cpu_time(tmp_path: Path) -> None:
    study = make_study(tmp_path, running=0, failed=0, asha=False)
    path = next((study / "tune").glob("*/result.json"))
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    for i, row in enumerate(rows):
        row.pop("node_id")
        row["trial_cpu_s"] = float(i % 4 + 1)  # resumed after epochs 4: the counter starts again
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    trials = load_dataset(collect_study(study)).trials.set_index("trial_id")
    row = trials.loc[str(rows[0]["trial_id"])]
    assert row["cpu_s"] == 4.0 + 4.0
    assert row["node_id"] == rows[0]["node_ip"]


def test_errors_name_the_problem(tmp_path: Path) -> None:
    with pytest.raises(ResultsError, match="no study folder"):
        collect_study(tmp_path / "nothing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ResultsError, match="has no Tune storage"):
        collect_study(tmp_path / "empty")
    (tmp_path / "empty" / "tune").mkdir()
    with pytest.raises(ResultsError, match="no trials yet"):
        collect_study(tmp_path / "empty")


def test_an_old_schema_version_asks_to_collect_again(tmp_path: Path) -> None:
    folder = collect_study(make_study(tmp_path))
    table = pq.read_table(folder / "trials.parquet")
    meta = dict(table.schema.metadata)
    meta[b"ocr_study.schema_version"] = b"0"
    pq.write_table(table.replace_schema_metadata(meta), folder / "trials.parquet")
    with pytest.raises(ResultsError, match=r"schema version 0.*export"):
        load_dataset(folder)


@pytest.mark.parametrize(("text", "expected"), [
    ("Failure # 1\n  File x\nValueError: boom\n", "ValueError: boom"),
    ("Failure # 1\nKeyError: 'a'\nFailure # 2\n\x1b[36mray::X\x1b[39m\nmod.NonFiniteLossError: nan\n\n"
     "During handling\nTypeError: pickling\n", "mod.NonFiniteLossError: nan"),
    ("something odd\nlast words\n", "last words"),
])
def test_error_line_takes_the_first_exception_of_the_last_failure(text: str, expected: str) -> None:
    assert error_line(text) == expected


def test_reading_imports_neither_ray_nor_the_training_code(synthetic_dir: Path, tmp_path: Path) -> None:
    code = (f"import sys, results; results.report_study({str(synthetic_dir)!r}, {str(tmp_path)!r}); "
            "bad = [m for m in sys.modules if m.split('.')[0] in ('ray', 'torch', 'pipelines', 'ocr', 'study', "
            "'mlflow')]; print(bad); sys.exit(1 if bad else 0)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                          cwd=Path(__file__).parents[2])
    assert done.returncode == 0, done.stdout + done.stderr


def test_a_config_text_with_braces_is_still_read(tmp_path: Path) -> None:
    study = make_study(tmp_path, running=0, failed=0)
    path = next((study / "tune").glob("*/result.json"))
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    for row in rows:
        row["config"]["data.root"] = "/data/{voc}"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    curves = load_dataset(collect_study(study)).curves
    assert len(curves[curves["trial_id"] == rows[0]["trial_id"]]) == len(rows)
    assert len(curves) == sum(len(p.read_text().splitlines()) for p in (study / "tune").glob("*/result.json"))


def test_a_pending_trial_without_a_folder_is_listed(tmp_path: Path) -> None:
    study = make_study(tmp_path, running=0, failed=0)
    state_file = next((study / "tune").glob("experiment_state-*.json"))
    state = json.loads(state_file.read_text())
    info, runtime = (json.loads(part) for part in state["trial_data"][0])
    info.update(trial_id="feedbeef", status="PENDING", relative_logdir="", config={**info["config"], "seed": 9})
    state["trial_data"].append([json.dumps(info), json.dumps({**runtime, "last_result": {}})])
    state_file.write_text(json.dumps(state))
    trials = load_dataset(collect_study(study)).trials.set_index("trial_id")
    assert len(trials) == 22
    pending = trials.loc["feedbeef"]
    assert pending["stop_reason"] == "pending" and pending["epochs"] == 0 and pending["seed"] == 9
    assert pd.isna(pending["final_val_miou"]) and pending["cell"] == info["config"]["meta.cell"]


def test_a_trial_reporting_only_nan_has_no_best_epoch(tmp_path: Path) -> None:
    study = make_study(tmp_path, running=0, failed=0)
    path = next((study / "tune").glob("*/result.json"))
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    for row in rows:
        row["val_miou"] = float("nan")
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    trials = load_dataset(collect_study(study)).trials.set_index("trial_id")
    row = trials.loc[str(rows[0]["trial_id"])]
    assert pd.isna(row["best_epoch"]) and pd.isna(row["final_val_miou"]) and row["epochs"] == len(rows)
    assert trials["best_epoch"].notna().sum() == len(trials) - 1
