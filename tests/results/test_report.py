"""Report files (Markdown, LaTeX, CSV, HTML, plots) and the ``report``/``export`` commands."""

from __future__ import annotations

import base64
import html
import re
from pathlib import Path

import pandas as pd
import pytest

from results import Dataset, ResultsError, collect_study, load_dataset, parse_formats, report_tables, write_report
from results._export import latex_escape
from study.cli import main
from tests.results.conftest import make_study

PLOTS = {"miou_vs_delta", "miou_vs_tau", "parallel_coordinates", "importance", "oc_vs_miou", "learning_curves",
         "priors", "asha_budget"}


@pytest.fixture(scope="module")
def report(searched: Dataset, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return write_report(searched, tmp_path_factory.mktemp("report"))


def test_every_format_is_written_with_every_plot(report: dict[str, Path]) -> None:
    assert set(report) == {"md", "tex", "csv", "html"}
    plots = report["md"].parent / "plots"
    assert {p.stem for p in plots.glob("*.png")} == PLOTS
    assert {p.stem for p in plots.glob("*.pdf")} == PLOTS  # a vector version beside each
    for path in plots.glob("*.png"):
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 5000


def test_markdown_has_the_tables_and_links_the_plots(report: dict[str, Path]) -> None:
    text = report["md"].read_text()
    assert "## Ablation: each cell at its best setting" in text and "| selection" in text
    assert "(n = 3)" in text and "±" in text
    for name in PLOTS:
        assert f"](plots/{name}.png)" in text


TABLES = 6  # ablation, the search's selection, sensitivity to δ and to τ, parameter importance, outcomes


def test_latex_is_a_standalone_document_of_booktabs_tables_escaped_with_real_minus_signs(
        report: dict[str, Path], searched: Dataset) -> None:
    text = report["tex"].read_text()
    first = text.splitlines()[0]
    assert first == f"% ocr-study report: {searched.info.name}" and "usepackage" not in first
    assert "\\documentclass{article}" in text and text.rstrip().endswith("\\end{document}")
    assert "\\usepackage{booktabs}" in text.split("\\begin{document}")[0]
    body = text.split("\\begin{document}")[1]
    assert body.count(r"\toprule") == body.count(r"\midrule") == body.count(r"\bottomrule") == TABLES
    assert body.count(r"\begin{tabular}") == body.count(r"\end{tabular}") == TABLES
    assert r"$\pm$" in text and r"\%" in text and "±" not in text and "δ" not in text
    assert latex_escape("a_b & 50% ± 1, n < 2, n ≥ 5") == r"a\_b \& 50\% $\pm$ 1, n $<$ 2, n $\geq$ 5"
    assert not re.search(r"[^\x00-\x7f]", text), "every non-ASCII character is escaped for pdflatex"
    assert not re.search(r"(?<![\w.$-])-\d", body), "a negative number has a minus sign ($-$), not a hyphen"
    ablation = body.split(r"\end{table}")[0]
    assert "Search phase: Ablation" not in text and "Search phase: how each cell's setting was chosen" in text
    assert r"\begin{tabular}{llrrrrr}" in ablation  # selection, setting: text; 3 metrics, Δ and p: numbers
    table = report_tables(searched)[0]
    assert ablation.count(r"\textbf{") == len(table.bold)
    assert "Wilcoxon" not in ablation.split(r"\toprule")[1]  # n < 5: its empty column is gone
    for (cell_row, column) in table.bold:
        line = ablation.split(r"\midrule")[1].splitlines()[cell_row + 1]
        assert r"\textbf{" in line, (cell_row, column)
    assert text.count(r"\includegraphics") == len(list((report["tex"].parent / "plots").glob("*.pdf")))
    assert _balanced(text)


def test_latex_gives_a_negative_difference_a_minus_sign() -> None:
    from results import Table
    from results._report import latex_table

    frame = pd.DataFrame({"Δ (pp)": ["\u22121.50 [\u22122.00, \u22121.00]"]})
    tex = latex_table(Table("t", "t", "n", frame, frame, ("Δ (pp)",)))
    assert r"$-$1.50 [$-$2.00, $-$1.00] \\" in tex and r"\resizebox{" in tex


def _balanced(text: str) -> bool:
    depth = 0
    for char in re.sub(r"\\[{}]", "", text):
        depth += {"{": 1, "}": -1}.get(char, 0)
        if depth < 0:
            return False
    return depth == 0


def test_markdown_keeps_the_figures_as_written() -> None:
    """tabulate would turn "30.00" into "30" and "0.0100" into "0.01"; the report's precision stays."""
    from results import Table
    from results._export import _markdown_table

    frame = pd.DataFrame({"cell": ["a"], "val mIoU (%)": ["30.00"], "p": ["0.0100"]})
    lines = _markdown_table(Table("t", "t", "", frame, frame, ("val mIoU (%)", "p"))).splitlines()
    assert lines[1].endswith(":|") and [c.strip() for c in lines[2].strip("|").split("|")] == ["a", "30.00", "0.0100"]


def test_html_and_latex_tables_escape_text_link_cells_and_bold_only_a_value() -> None:
    """What the Styler writes for one table: escaped headers and cells, a link only in HTML, an empty cell
    for a missing value, bold on the best value but never on an empty cell."""
    from results import Table
    from results._export import table_latex, to_html

    frame = pd.DataFrame({"trial & <id>": ["a_b <1>", "c#2", None], "δ ± x": ["50%", "", "7"]})
    url = 'http://h:5000/#/r?a=1&b="2"'
    table = Table("t x", "T_1 & co", "n < 2; 5 % ~", frame, frame, ("δ ± x",), bold=((0, "δ ± x"), (1, "δ ± x")),
                  links=((0, "trial & <id>", url), (2, "trial & <id>", url)))
    page = to_html("r", [table], [], "s")
    assert '<th class="col_heading level0 col0" >trial &amp; &lt;id&gt;</th>' in page
    assert '><a href="http://h:5000/#/r?a=1&amp;b=&quot;2&quot;">a_b &lt;1&gt;</a></td>' in page
    assert page.count("<a href=") == 1  # the missing trial gets no link
    assert '<td class="data row1 col0" >c#2</td>' in page and '<td class="data row2 col0" ></td>' in page
    assert re.search(r"#T_0_t_x_row0_col1 \{\s*font-weight: bold;", page)
    assert "row1_col1" not in page  # its best value is empty: nothing to make bold
    tex = table_latex(table)
    assert r"\caption{T\_1 \& co. n $<$ 2; 5 \% \textasciitilde{}}" in tex and r"\label{tab:t-x}" in tex
    assert r"trial \& $<$id$>$ & $\delta$ $\pm$ x \\" in tex
    assert r"a\_b $<$1$>$ & \textbf{50\%} \\" in tex and r"c\#2 &  \\" in tex and r" & 7 \\" in tex
    assert r"\begin{tabular}{lr}" in tex and "http" not in tex and tex.count(r"\textbf") == 1


def _pdflatex(folder: Path) -> str:
    """Compile ``folder/report.tex`` with pdflatex; returns its log (the test fails on an error)."""
    import subprocess

    from tests.conftest import require_executable

    pdflatex = require_executable("pdflatex")
    done = subprocess.run([pdflatex, "-interaction=nonstopmode", "-halt-on-error", "report.tex"], cwd=folder,
                          capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stdout[-3000:]
    assert (folder / "report.pdf").read_bytes()[:5] == b"%PDF-"
    return (folder / "report.log").read_text(errors="replace")


def test_report_tex_compiles_with_pdflatex_and_every_table_fits_the_page(report: dict[str, Path],
                                                                         tmp_path: Path) -> None:
    """``pdflatex report.tex`` in the report folder (Debian's texlive-latex-base and -recommended): no error,
    no table or figure wider than the text (no overfull box), the plots' PDFs included."""
    import shutil

    folder = tmp_path / "report"
    shutil.copytree(report["tex"].parent, folder)
    log = _pdflatex(folder)
    assert "Overfull \\hbox" not in log and "Undefined control sequence" not in log and "Missing $" not in log
    assert "Float too large" not in log
    assert log.count("plots/") >= len(list(folder.glob("plots/*.pdf")))  # each figure read from its PDF


def test_a_long_table_breaks_across_pages_and_still_fits_the_text(tmp_path: Path) -> None:
    """A search of many settings: its selection table is a longtable (header on every page, trials
    wrapped), not one float taller than the page."""
    from results._report import LONG_ROWS

    ds = load_dataset(collect_study(make_study(tmp_path, settings=16, failed=0)))
    written = write_report(ds, tmp_path / "report", formats=("tex",))
    text = written["tex"].read_text()
    selection = report_tables(ds)[1]
    assert selection.name == "search_selection" and len(selection.display) > LONG_ROWS
    assert text.count(r"\begin{longtable}") == 1 and r"\endhead" in text
    log = _pdflatex(written["tex"].parent)
    assert "Overfull \\hbox" not in log and "Float too large" not in log
    assert re.search(r"Output written on report.pdf \(([3-9]|\d\d+) pages", log)  # the table spans pages


def test_the_summary_says_why_trials_stopped_in_words(report: dict[str, Path], searched: Dataset) -> None:
    stopped = int((searched.trials["stop_reason"].astype(str) == "early_stopped").sum())
    page = report["html"].read_text()
    assert stopped and f"{stopped} stopped early" in page and "early_stopped)" not in page.split("<h2>")[0]


def test_every_plot_has_a_caption_under_it_in_html_and_markdown(report: dict[str, Path]) -> None:
    from results._plots import plot_caption

    page = report["html"].read_text()
    text = report["md"].read_text()
    for png in (report["md"].parent / "plots").glob("*.png"):
        caption = plot_caption(png.stem)
        assert re.search(rf'<img width="\d+" alt="{png.stem}" [^>]*><figcaption>{re.escape(html.escape(caption)[:40])}',
                         page)
        assert f'<a href="plots/{png.stem}.pdf">(PDF)</a></figcaption>' in page
        assert f"](plots/{png.stem}.png)\n\n*{caption}*" in text
    assert page.count("<figcaption>") == len(list((report["md"].parent / "plots").glob("*.png")))


def test_the_best_value_of_each_metric_column_is_bold_and_numbers_right_aligned(report: dict[str, Path],
                                                                                searched: Dataset) -> None:
    ablation = report_tables(searched)[0]
    best_cell = ablation.values["val_miou_mean"].idxmax()
    lowest_oc = ablation.values["val_oc_rate_fg_mean"].idxmin()
    md = report["md"].read_text().split("## Sensitivity")[0]
    lines = [line for line in md.splitlines() if line.startswith("|")]
    header = [c.strip() for c in lines[0].strip("|").split("|")]
    rule = [c.strip() for c in lines[1].strip("|").split("|")]
    rows = [[c.strip() for c in line.strip("|").split("|")] for line in lines[2:]]
    miou = header.index(next(h for h in header if h.startswith("val mIoU (%")))
    oc = header.index(next(h for h in header if h.startswith("OC rate (%")))
    assert rule[miou].endswith(":") and rule[oc].endswith(":") and not rule[0].endswith(":")
    assert [r[miou].startswith("**") for r in rows] == [i == best_cell for i in range(len(rows))]
    assert [r[oc].startswith("**") for r in rows] == [i == lowest_oc for i in range(len(rows))]  # lower is better
    page = report["html"].read_text()  # pandas' Styler: a CSS rule per numeric column and per best cell
    rules = _css_rules(page)
    assert f'<th class="col_heading level0 col{oc}" >OC rate (%, n = 3)</th>' in page
    for column in (miou, oc):
        assert "text-align: right" in rules[f"#T_0_ablation th.col{column}"]
        assert "text-align: right" in rules[f"#T_0_ablation td.col{column}"]
    assert "#T_0_ablation td.col0" not in rules  # text: the page's default, flush left
    best = ablation.display.iloc[best_cell][ablation.display.columns[miou]]
    cell = f"T_0_ablation_row{best_cell}_col{miou}"
    assert f'<td id="{cell}" class="data row{best_cell} col{miou}" >{best}</td>' in page
    assert "font-weight: bold" in rules[f"#{cell}"]
    assert [f"#T_0_ablation_row{r}_col{miou}" in rules for r in range(len(rows))] == [
        i == best_cell for i in range(len(rows))]


def _css_rules(page: str) -> dict[str, str]:
    """Each CSS selector of the page's ``<style>`` blocks and its declarations."""
    rules: dict[str, str] = {}
    for block in re.findall(r"<style[^>]*>(.*?)</style>", page, re.S):
        for selectors, body in re.findall(r"([^{}]+)\{([^}]*)\}", block):
            for selector in selectors.split(","):
                rules[selector.strip()] = rules.get(selector.strip(), "") + body
    return rules


def test_csv_holds_the_numbers(report: dict[str, Path], searched: Dataset) -> None:
    tables = {t.name: t for t in report_tables(searched)}
    files = {p.stem: p for p in report["csv"].glob("*.csv")}
    assert set(files) == set(tables) == {"ablation", "search_selection", "sensitivity_delta", "sensitivity_tau",
                                         "importance", "outcomes"}
    ablation = pd.read_csv(files["ablation"])
    assert ablation["val_miou_mean"].tolist() == pytest.approx(tables["ablation"].values["val_miou_mean"].tolist())


def test_html_is_one_self_contained_page(report: dict[str, Path]) -> None:
    text = report["html"].read_text()
    images = re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', text)
    assert len(images) == len(PLOTS)
    assert all(base64.b64decode(i)[:4] == b"\x89PNG" for i in images)
    assert not re.search(r'(src|href)="(http|file|/)', text)
    assert len(re.findall(r'<table id="T_\w+">', text)) == TABLES and "33 trials" in text
    assert "Parameter importance per cell" in text


def test_formats_are_checked() -> None:
    assert parse_formats("md, HTML,md") == ("md", "html")
    with pytest.raises(ResultsError, match=r"unknown format pdf.*md, tex, csv, html"):
        parse_formats("md,pdf")
    with pytest.raises(ResultsError, match="none given"):
        parse_formats(",")


@pytest.mark.slow
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


@pytest.mark.slow
def test_report_command_shows_the_oc_rate_asked_for(tmp_path: Path) -> None:
    make_study(tmp_path, name="small")
    for flag, label, other in (([], "OC rate (%", "OC rate of pixels"),
                               (["--oc-rate", "pixels"], "OC rate of pixels (%", "OC rate (%")):
        out = tmp_path / f"rep{len(flag)}"
        assert main(["report", "small", "--storage", str(tmp_path), "--format", "md", "--out", str(out), *flag]) == 0
        text = (out / "report.md").read_text().split("## Plots")[0]
        assert label in text and other not in text


@pytest.mark.parametrize(("argv", "message"), [
    (["report", "nope"], "no study 'nope'.*known: \\['small'\\].*--storage"),
    (["report", "small", "--format", "pdf"], "unknown format pdf"),
    (["report", "small", "--oc-rate", "all"], "OC rate definition 'all': use one of fg, pixels"),
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
    import yaml

    from study import handle, runner, spec

    folder = make_study(tmp_path, name="done")
    spec_file = tmp_path / "done.yaml"
    spec_file.write_text(yaml.safe_dump({"name": "done", "storage": str(tmp_path)}))
    ran: list[object] = []
    loads: list[object] = []
    real_load = spec.load_spec
    monkeypatch.setattr(runner, "run_study", lambda study, **kwargs: ran.append(study))  # the study as made
    monkeypatch.setattr(handle, "load_spec", lambda *a, **k: loads.append(a) or real_load(*a, **k))
    assert main(["run", str(spec_file)]) == 1  # the synthetic study has a failed trial: exit 1, others reported
    out = capsys.readouterr().out
    assert f"report of study done: {folder / 'report'}" in out and (folder / "report" / "report.html").is_file()
    assert "study done ended: 21 trials" in out and len(ran) == 1
    assert len(loads) == 1  # the spec is read once: run, summary and report share the study opened then
    assert main(["run", str(spec_file), "--dry-run"]) == 0
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
    assert r"\begin{tabular}{}" not in tex and tex.count(r"\begin{tabular}") == 2  # the search's trials, outcomes
    assert "failed" in tex.split(r"\begin{tabular}")[1]  # each search trial says what became of it
    assert "21 failed" in written["html"].read_text()


def test_export_from_mlflow_refuses_a_name_leaving_the_storage(tmp_path: Path,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    assert main(["export", "../escape", "--storage", str(tmp_path / "studies"), "--mlflow", uri]) == 2
    assert not (tmp_path / "escape").exists() and capsys.readouterr().err


@pytest.mark.slow
def test_a_report_killed_while_it_is_made_leaves_the_last_report_whole(tmp_path: Path) -> None:
    """``ocr-study report`` dies (SIGKILL) at the failpoint ``report.write`` after its Markdown: the report
    there before is unchanged, file for file; the next report replaces it whole and leaves no stage behind."""
    import os
    import signal
    import subprocess
    import sys

    from record import FAILPOINT_DIR_ENV, FAILPOINTS_ENV, fired

    make_study(tmp_path, name="small")
    out = tmp_path / "small" / "report"
    assert main(["report", "small", "--storage", str(tmp_path)]) == 0
    before = {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()}
    (tmp_path / "small" / "results" / "trials.parquet").unlink()  # the next report collects again
    env = {**os.environ, FAILPOINTS_ENV: "report.write[format=md]=kill", FAILPOINT_DIR_ENV: str(tmp_path / "fired")}
    cli = Path(sys.executable).parent / "ocr-study"
    killed = subprocess.run([str(cli), "report", "small", "--storage", str(tmp_path)], env=env,
                            capture_output=True, text=True, timeout=300)
    assert killed.returncode == -signal.SIGKILL, killed.stdout + killed.stderr
    assert [f["context"] for f in fired(tmp_path / "fired")] == [{"format": "md"}]
    after = {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file() and
             not p.relative_to(out).parts[0].startswith(".")}
    assert after == before  # the killed report's files are in its hidden stage, not among the last report's
    assert main(["report", "small", "--storage", str(tmp_path)]) == 0
    assert not [p for p in out.iterdir() if p.name.startswith(".")]  # the stage is cleared
    assert {p.relative_to(out) for p in out.rglob("*") if p.is_file()} == set(before)
