"""Report files (Markdown, LaTeX, CSV, HTML, plots) and the ``report``/``export`` commands."""

from __future__ import annotations

import base64
import re
from pathlib import Path

import pandas as pd
import pytest

from results import Dataset, ResultsError, collect_study, load_dataset, parse_formats, report_tables, write_report
from results._export import latex_escape
from study.cli import main
from tests.results.conftest import make_study

PLOTS = {"miou_vs_delta", "miou_vs_tau", "oc_vs_miou", "learning_curves", "priors", "asha_budget"}


@pytest.fixture(scope="module")
def report(synthetic: Dataset, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return write_report(synthetic, tmp_path_factory.mktemp("report"))


def test_every_format_is_written_with_every_plot(report: dict[str, Path]) -> None:
    assert set(report) == {"md", "tex", "csv", "html"}
    plots = report["md"].parent / "plots"
    assert {p.stem for p in plots.glob("*.png")} == PLOTS
    for path in plots.glob("*.png"):
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 5000


def test_markdown_has_the_tables_and_links_the_plots(report: dict[str, Path]) -> None:
    text = report["md"].read_text()
    assert "## Ablation: each cell at its best setting" in text and "| selection" in text
    assert "(n = 3)" in text and "±" in text
    for name in PLOTS:
        assert f"](plots/{name}.png)" in text


def test_latex_is_booktabs_and_escaped(report: dict[str, Path]) -> None:
    text = report["tex"].read_text()
    assert text.count(r"\toprule") == text.count(r"\bottomrule") == text.count(r"\begin{tabular}") == 4
    assert r"$\pm$" in text and r"\%" in text and "±" not in text and "δ" not in text
    assert "ocr.selection=none" not in text.split(r"\caption")[0]
    assert latex_escape("a_b & 50% ± 1, n < 2") == r"a\_b \& 50\% $\pm$ 1, n $<$ 2"


def test_csv_holds_the_numbers(report: dict[str, Path], synthetic: Dataset) -> None:
    tables = {t.name: t for t in report_tables(synthetic)}
    files = {p.stem: p for p in report["csv"].glob("*.csv")}
    assert set(files) == set(tables) == {"ablation", "sensitivity_delta", "sensitivity_tau", "outcomes"}
    ablation = pd.read_csv(files["ablation"])
    assert ablation["val_miou_mean"].tolist() == pytest.approx(tables["ablation"].values["val_miou_mean"].tolist())


def test_html_is_one_self_contained_page(report: dict[str, Path]) -> None:
    text = report["html"].read_text()
    images = re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', text)
    assert len(images) == len(PLOTS)
    assert all(base64.b64decode(i)[:4] == b"\x89PNG" for i in images)
    assert not re.search(r'(src|href)="(http|file|/)', text)
    assert text.count("<table>") == 4 and "21 trials" in text


def test_formats_are_checked() -> None:
    assert parse_formats("md, HTML,md") == ("md", "html")
    with pytest.raises(ResultsError, match=r"unknown format pdf.*md, tex, csv, html"):
        parse_formats("md,pdf")
    with pytest.raises(ResultsError, match="none given"):
        parse_formats(",")


def test_report_and_export_commands(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    make_study(tmp_path, name="small")
    out = tmp_path / "rep"
    assert main(["report", "small", "--storage", str(tmp_path), "--format", "md,csv", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert f"report of study small: {out}" in printed and (out / "report.md").is_file()
    assert not (out / "report.html").exists()
    assert main(["export", "small", "--storage", str(tmp_path)]) == 0
    assert (tmp_path / "small" / "results" / "trials.parquet").is_file()
    assert "trials.parquet" in capsys.readouterr().out


@pytest.mark.parametrize(("argv", "message"), [
    (["report", "nope"], "no study 'nope'.*known: \\['small'\\].*--storage"),
    (["report", "small", "--format", "pdf"], "unknown format pdf"),
])
def test_command_errors_exit_2_and_say_what_to_do(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                 argv: list[str], message: str) -> None:
    make_study(tmp_path, name="small")
    (tmp_path / "empty" / "tune").mkdir(parents=True)
    assert main([*argv, "--storage", str(tmp_path)]) == 2
    assert re.search(message, capsys.readouterr().err)


@pytest.mark.parametrize("command", ["report", "export"])
def test_a_study_without_a_finished_trial_says_its_state_and_exits_0(tmp_path: Path, command: str,
                                                                    capsys: pytest.CaptureFixture[str]) -> None:
    """Issue 14, item 3: no traceback (it was ``KeyError: 'epochs'``), the state of the study instead."""
    make_study(tmp_path, name="small")
    (tmp_path / "empty" / "tune").mkdir(parents=True)
    assert main([command, "empty", "--storage", str(tmp_path)]) == 0
    assert "study empty: trials planned: unknown; no trial has started yet" in capsys.readouterr().out
    folder = make_study(tmp_path, name="early", running=3, failed=2, max_trials=5)  # started, none finished
    assert main([command, "early", "--storage", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "5 trials planned; 3 running, 2 failed" in out, out
    assert (folder / ("report/report.md" if command == "report" else "results/trials.parquet")).is_file()


def test_trials_without_any_epoch_yet_do_not_crash_the_report(tmp_path: Path,
                                                                capsys: pytest.CaptureFixture[str]) -> None:
    """The crash of issue 14, item 3 (``KeyError: 'epochs'``): every trial still in stage 1, no epoch line."""
    import json

    folder = make_study(tmp_path, name="stage1", failed=0, max_trials=4)
    for path in (folder / "trials").glob("*/trial.json"):
        (path.parent / "epochs.jsonl").unlink()
        path.write_text(json.dumps({**json.loads(path.read_text()), "status": "RUNNING"}))
    assert main(["report", "stage1", "--storage", str(tmp_path), "--format", "md"]) == 0
    assert "4 trials planned; 4 running" in capsys.readouterr().out
    assert main(["export", "stage1", "--storage", str(tmp_path)]) == 0
    assert "4 trials planned; 4 running" in capsys.readouterr().out
    trials = load_dataset(folder / "results").trials
    assert (trials["epochs"] == 0).all() and len(trials) == 4


def test_run_ends_by_writing_the_report(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    from types import SimpleNamespace

    from study import commands, runner

    folder = make_study(tmp_path, name="done")
    monkeypatch.setattr(commands, "run", lambda args: 0)
    monkeypatch.setattr(runner, "resolve_spec", lambda name, overrides=(): SimpleNamespace(study_dir=str(folder)))
    assert main(["run", "done"]) == 0
    out = capsys.readouterr().out
    assert f"report of study done: {folder / 'report'}" in out and (folder / "report" / "report.html").is_file()
    assert main(["run", "done", "--dry-run"]) == 0
    assert "report of study" not in capsys.readouterr().out


def test_a_study_without_its_record_is_reported_from_its_exported_dataset(tmp_path: Path,
                                                                            capsys: pytest.CaptureFixture[str]) -> None:
    import shutil

    folder = make_study(tmp_path, name="gone")
    assert main(["export", "gone", "--storage", str(tmp_path)]) == 0
    shutil.rmtree(folder / "tune")
    shutil.rmtree(folder / "trials")
    (folder / "study.json").unlink()
    assert main(["report", "gone", "--storage", str(tmp_path), "--format", "md"]) == 0
    assert (folder / "report" / "report.md").is_file()
    shutil.rmtree(folder / "results")
    (folder / "spec.yaml").write_text("name: gone\n")
    assert main(["report", "gone", "--storage", str(tmp_path)]) == 2
    assert "export gone --mlflow URI" in capsys.readouterr().err


def test_a_study_where_every_trial_failed_still_reports(tmp_path: Path) -> None:
    ds = load_dataset(collect_study(make_study(tmp_path, failed=21)))
    written = write_report(ds, tmp_path / "report")
    assert "No completed trial yet" in written["md"].read_text()
    tex = written["tex"].read_text()
    assert r"\begin{tabular}{}" not in tex and tex.count(r"\begin{tabular}") == 1  # only the outcomes table
    assert "21 failed" in written["html"].read_text()


def test_export_from_mlflow_refuses_a_name_leaving_the_storage(tmp_path: Path,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    assert main(["export", "../escape", "--storage", str(tmp_path / "studies"), "--mlflow", uri]) == 2
    assert not (tmp_path / "escape").exists() and capsys.readouterr().err
