"""A study's report: tables and plots written in the formats asked for, into one folder.

Layout of ``out``: ``report.md``, ``report.tex`` (a standalone LaTeX document: its tables and the plots'
PDFs), ``report.html`` (plots embedded, a caption under each), ``csv/<table>.csv`` and ``plots/*.png`` with
``plots/*.pdf`` beside them (always written: Markdown links the PNGs, LaTeX includes the PDFs).
"""

from __future__ import annotations

import dataclasses
import html
import os
import re
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from record import REPORT_DIR, StopReason, failpoint
from results._collect_record import collect_study
from results._decisions import decision_table, rounds_plot
from results._errors import ResultsError
from results._export import latex_escape, table_latex, to_html, to_markdown, write_csv
from results._importance import study_importance
from results._links import RunLinks, report_runs_table
from results._plots import DPI, plot_caption, report_plots
from results._schema import PARAM_PREFIX, Dataset, load_dataset
from results._table import Table
from results._tables import MINUS, OC_DEFAULT, check_oc_rate, report_tables, search_only

FORMATS = ("md", "tex", "csv", "html")
STAGE_PREFIX = ".report-stage-"  # a report is made in a hidden folder of its own, then moved in whole


def parse_formats(text: str) -> tuple[str, ...]:
    """``"md,tex"`` → ``("md", "tex")``; unknown names raise :class:`ResultsError` naming the allowed ones."""
    names = tuple(dict.fromkeys(part.strip().lower() for part in text.split(",") if part.strip()))
    unknown = [n for n in names if n not in FORMATS]
    if unknown or not names:
        raise ResultsError(f"--format {text!r}: unknown format {', '.join(unknown) or '(none given)'}; "
                           f"use a comma-separated list of {', '.join(FORMATS)} (e.g. --format md,html)")
    return names


def _summary(ds: Dataset) -> str:
    trials = ds.trials
    counts = trials["stop_reason"].astype(str).value_counts()
    outcome = ", ".join(f"{n} {StopReason(reason).text if reason in set(StopReason) else reason}"
                        for reason, n in counts.items())  # "2 stopped early", as status says it
    return (f"Study {ds.info.name}: {len(trials)} trials ({outcome}), {len(ds.curves)} epoch reports; "
            f"metric {ds.info.metric} ({ds.info.mode}){_recipe(ds)}; collected from {ds.source}.{_failures(ds)}")


def _recipe(ds: Dataset) -> str:
    """``"; training recipe deeplabv2-kazuto1011-voc12"``: the trials' ``preset`` (pipelines/presets), if any."""
    column = f"{PARAM_PREFIX}preset"
    names = sorted({str(v) for v in ds.trials[column].dropna() if str(v)}) if column in ds.trials else []
    return f"; training recipe {', '.join(names)} (pipelines/presets)" if names else ""


def _failures(ds: Dataset) -> str:
    """Why trials failed: each error with how many trials it failed (``""`` when none did)."""
    errors = ds.trials.get("error")
    if errors is None:
        return ""
    errors = errors.dropna().astype(str)
    counts = errors[errors != ""].value_counts()
    return "".join(f"\nFailed: {n} × {reason}" for reason, n in counts.items())


def write_report(ds: Dataset, out: Path, formats: Sequence[str] = FORMATS, oc: str = OC_DEFAULT,
                 links: RunLinks | None = None) -> dict[str, Path]:
    """Write the report of a collected study; returns each format's file (``csv``: its folder).

    Args:
        ds: the collected study (:func:`results.load_dataset`).
        out: the report folder (created).
        formats: any of ``md``, ``tex``, ``csv``, ``html``.
        oc: the OC rate the tables and plots show: ``fg`` (share of foreground predictions, the paper's) or
            ``pixels`` (share of valid pixels); the CSV holds both.
        links: the study's runs on an MLflow server (:func:`results.run_links`): the HTML and Markdown
            reports then link the runs table and list every trial with a link to its run.
    """
    if ds.trials.empty:
        raise ResultsError(f"study {ds.info.name!r} has no trials to report yet")
    check_oc_rate(oc)  # before anything is written
    # Once for its table and its plot (fANOVA takes seconds on large cells), over the search phase's trials: the
    # confirm phase's reruns of one chosen setting would weigh it as many times.
    importance = study_importance(search_only(ds))
    tables = report_tables(ds, oc, importance)
    decisions = decision_table(ds)  # a sequential confirm phase: what its seeds decided, after the ablation
    if decisions is not None:
        tables.insert(1, decisions)
    out.mkdir(parents=True, exist_ok=True)
    for stale in out.glob(f"{STAGE_PREFIX}*"):  # what a report killed while it was made left
        shutil.rmtree(stale, ignore_errors=True)
    stage = Path(tempfile.mkdtemp(prefix=STAGE_PREFIX, dir=out))
    try:
        names = _write_formats(ds, stage, formats, oc, links, tables, importance)
        if (stage / "plots").exists():
            _move_in(stage / "plots", out / "plots")
        return {fmt: _move_in(stage / name, out / name) for fmt, name in names.items()}
    finally:
        shutil.rmtree(stage, ignore_errors=True)


def _write_formats(ds: Dataset, stage: Path, formats: Sequence[str], oc: str, links: RunLinks | None,
                   tables: list[Any], importance: Any) -> dict[str, str]:
    """Every file of the report into ``stage`` (plots in ``plots/``); returns each format's name there.

    The failpoint ``report.write`` (``format``) follows each format written.
    """
    plots = report_plots(ds, stage / "plots", oc, importance)
    narrowing = rounds_plot(ds, stage / "plots" / "sequential_rounds.png")
    plots += [narrowing] if narrowing is not None else []
    pages = tables if links is None else [*tables, report_runs_table(ds, links)]  # links: HTML and Markdown
    title = f"ocr-study report: {ds.info.name}"
    names = {}
    if "md" in formats:
        failed = _failures(ds).replace("\nFailed: ", "\n- ")
        text = markdown_captions(to_markdown(title, pages, plots, stage), plots)
        text += f"\n## Failed trials\n{failed}\n" if failed else ""
        (stage / "report.md").write_text(text, encoding="utf-8")
        names["md"] = "report.md"
        failpoint("report.write", format="md")
    if "tex" in formats:
        (stage / "report.tex").write_text(latex_document(title, tables, plots, stage), encoding="utf-8")
        names["tex"] = "report.tex"
        failpoint("report.write", format="tex")
    if "csv" in formats:
        write_csv(tables, stage / "csv")
        names["csv"] = "csv"
        failpoint("report.write", format="csv")
    if "html" in formats:
        runs_url = None if links is None else links.experiment_url
        page = html_captions(to_html(title, pages, plots, _summary(ds), runs_url), plots)
        (stage / "report.html").write_text(page, encoding="utf-8")
        names["html"] = "report.html"
        failpoint("report.write", format="html")
    return names


PLACEHOLDER = "\ue000"  # a minus sign on its way through latex_escape (which leaves private-use characters be)
LATEX_PREAMBLE = r"""%% ocr-study report: %(name)s
%% A standalone LaTeX document: compile it in this folder with `pdflatex report.tex` (its figures are
%% plots/*.pdf). In a paper, copy a table environment as it is; the tables need these packages:
%%   \usepackage{booktabs}  (\toprule, \midrule, \bottomrule)
%%   \usepackage{graphicx}  (\resizebox shrinks a table wider than the text to the text's width)
%%   \usepackage{longtable}, \usepackage{array} (a table of more than %(long)d rows breaks across pages)
\documentclass{article}
\usepackage[margin=2.5cm]{geometry}
\usepackage{booktabs}
\usepackage{graphicx}
\usepackage{longtable}
\usepackage{array}
\begin{document}
\section*{%(title)s}
"""


def _latex_minus(table: Table) -> Table:
    """``table`` with its minus signs (U+2212) held by :data:`PLACEHOLDER`, to become ``$-$`` once escaped."""
    def held(text: object) -> object:
        return text.replace(MINUS, PLACEHOLDER) if isinstance(text, str) else text
    return dataclasses.replace(table, display=table.display.map(held), title=table.title.replace(MINUS, PLACEHOLDER),
                               notes=table.notes.replace(MINUS, PLACEHOLDER))


LONG_ROWS = 30  # a table with more rows breaks across pages (longtable) instead of floating whole
WRAPPED = ">{\\raggedright\\arraybackslash}p{0.22\\linewidth}"  # a long table's trials: text that wraps (array)


def latex_table(table: Table) -> str:
    """One table as a booktabs ``table`` (:func:`results._export.table_latex`) with a real minus sign
    (``$-$``), shrunk to the text's width when wider (``\\resizebox``, graphicx); one of more than
    :data:`LONG_ROWS` rows as a ``longtable`` that breaks across pages, its header repeated on each, its
    trials column wrapped."""
    text = table_latex(_latex_minus(table)).replace(PLACEHOLDER, "$-$").replace("\\begin{table}[t]",
                                                                                 "\\begin{table}[htbp]")
    if len(table.display) > LONG_ROWS:
        return _longtable(table, text)
    fit = r"\resizebox{\ifdim\width>\linewidth\linewidth\else\width\fi}{!}{%" + "\n"
    return re.sub(r"(\\begin\{tabular\}.*?\\end\{tabular\})", lambda m: fit + m.group(1) + "}", text, flags=re.S)


def _longtable(table: Table, text: str) -> str:
    """The ``table`` float :func:`results._export.table_latex` wrote as a ``longtable`` (package longtable)."""
    caption = re.search(r"\\caption\{(.*)\}\n", text)
    label = re.search(r"\\label\{([^}]*)\}", text)
    tabular = re.search(r"\\begin\{tabular\}\{([^}]*)\}\n\\toprule\n(.*?)\\midrule\n(.*?)\\bottomrule", text,
                        flags=re.S)
    if caption is None or label is None or tabular is None:  # not the shape it writes: leave it a float
        return text
    spec = list(tabular.group(1))
    for i, column in enumerate(table.display.columns):
        if str(column).startswith("trials") and i < len(spec):
            spec[i] = WRAPPED
    head = f"\\toprule\n{tabular.group(2)}\\midrule\n"
    return ("{\\footnotesize\n\\begin{longtable}{" + "".join(spec) + "}\n"
            f"\\caption{{{caption.group(1)}}}\\label{{{label.group(1)}}}\\\\\n{head}\\endfirsthead\n{head}\\endhead\n"
            f"\\bottomrule\n\\endfoot\n{tabular.group(3)}\\end{{longtable}}}}\n")


FLOATS_PER_PAGE_BREAK = 6  # \clearpage after this many floats: LaTeX holds at most 18 unplaced ones


def latex_document(title: str, tables: Sequence[Table], plots: Sequence[Path], base: Path) -> str:
    """The report as a standalone LaTeX document: a comment naming the packages its tables need, the
    tables (booktabs, real minus signs, fitted to the text width), then each plot's PDF (vector) with its
    caption (a plot without a PDF beside its PNG is left out)."""
    parts = [LATEX_PREAMBLE % {"name": title.removeprefix("ocr-study report: "), "title": latex_escape(title),
                                "long": LONG_ROWS}]
    floats = 0
    for table in tables:
        parts.append(latex_table(table))
        floats += 1
        if floats % FLOATS_PER_PAGE_BREAK == 0:
            parts.append("\\clearpage\n")
    parts.append("\\clearpage\n")  # the figures after the tables, not overtaking them
    for plot in plots:
        vector = plot.with_suffix(".pdf")
        if not vector.is_file():
            continue
        label = re.sub(r"[^A-Za-z0-9]+", "-", plot.stem)
        parts.append("\\begin{figure}[htbp]\n\\centering\n"
                     f"\\includegraphics[width=\\linewidth,height=0.8\\textheight,keepaspectratio]"
                     f"{{{vector.relative_to(base).as_posix()}}}\n"
                     f"\\caption{{{latex_escape(plot_caption(plot.stem))}}}\n"
                     f"\\label{{fig:{label}}}\n\\end{{figure}}\n")
        floats += 1
        if floats % FLOATS_PER_PAGE_BREAK == 0:
            parts.append("\\clearpage\n")
    return "\n".join(parts) + "\n\\end{document}\n"


FIGURE_CSS = ("figure{display:inline-table;vertical-align:top;margin:0.5em 1.5em 1em 0}"
              "figcaption{display:table-caption;caption-side:bottom;font-size:12px;color:#555;padding-top:4px}")


def _png_width(path: Path) -> int | None:
    """A PNG's width in pixels, from its header (None when it is not a PNG)."""
    head = path.read_bytes()[:24]
    return int.from_bytes(head[16:20], "big") if head[:8] == b"\x89PNG\r\n\x1a\n" else None


def html_captions(page: str, plots: Sequence[Path]) -> str:
    """``page`` (:func:`results._export.to_html`) with each plot at its size on a 96-dpi screen (the PNG has
    :data:`results._plots.DPI`), its caption under it (``<figcaption>``, no wider than the plot) and a link
    to its vector version (PDF)."""
    page = page.replace("</style>", FIGURE_CSS + "</style>", 1)
    for plot in plots:
        caption = html.escape(plot_caption(plot.stem))
        pdf = plot.with_suffix(".pdf")
        vector = f' <a href="plots/{html.escape(pdf.name)}">(PDF)</a>' if pdf.is_file() else ""
        pixels = _png_width(plot)
        width = "" if pixels is None else f' width="{round(pixels * 96 / DPI)}"'
        figcaption = f"<figcaption>{caption}{vector}</figcaption></figure>"
        page = re.sub(rf'<figure><img (alt="{re.escape(html.escape(plot.stem))}" [^>]*>)</figure>',
                      lambda m: f"<figure><img{width} " + m.group(1) + figcaption,  # noqa: B023 (used at once)
                      page)
    return page


def markdown_captions(text: str, plots: Sequence[Path]) -> str:
    """``text`` (:func:`results._export.to_markdown`) with each plot's caption in italics under it."""
    for plot in plots:
        caption = f"\n\n*{plot_caption(plot.stem)}*\n"
        text = re.sub(rf"(!\[{re.escape(plot.stem)}\]\([^)]*\))\n",
                      lambda m: m.group(1) + caption, text)  # noqa: B023 (used at once, in this loop)
    return text


def _move_in(source: Path, target: Path) -> Path:
    """Put the finished ``source`` (a file or a folder) at ``target``, replacing what was there."""
    if source.is_dir() and target.exists():
        old = target.with_name(f"{STAGE_PREFIX}{target.name}.old")
        shutil.rmtree(old, ignore_errors=True)
        target.rename(old)
        source.rename(target)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(source, target)
    return target


def report_study(study_dir: Path, out: Path | None = None, formats: Sequence[str] = FORMATS,
                 links: RunLinks | None = None) -> dict[str, Path]:
    """Collect a study from its record (idempotent) and write its report.

    Args:
        study_dir: the study folder, ``<storage>/<name>``.
        out: the report folder (default ``study_dir / "report"``).
        formats: any of ``md``, ``tex``, ``csv``, ``html``.
        links: the study's runs on an MLflow server, linked from the report (:func:`results.run_links`).
    """
    dataset = load_dataset(collect_study(Path(study_dir)))
    return write_report(dataset, Path(out) if out is not None else Path(study_dir) / REPORT_DIR, formats,
                        links=links)
