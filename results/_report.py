"""A study's report: tables and plots written in the formats asked for, into one folder.

Layout of ``out``: ``report.md``, ``report.tex``, ``report.html`` (plots embedded), ``csv/<table>.csv``
and ``plots/*.png`` (always written: Markdown links them).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from record import REPORT_DIR, failpoint
from results._collect_record import collect_study
from results._decisions import decision_table, rounds_plot
from results._errors import ResultsError
from results._export import to_html, to_latex, to_markdown, write_csv
from results._importance import study_importance
from results._links import RunLinks, report_runs_table
from results._plots import report_plots
from results._schema import PARAM_PREFIX, Dataset, load_dataset
from results._tables import OC_DEFAULT, check_oc_rate, report_tables

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
    outcome = ", ".join(f"{n} {reason}" for reason, n in counts.items())
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
    importance = study_importance(ds)  # once for its table and its plot: fANOVA takes seconds on large cells
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
        text = to_markdown(title, pages, plots, stage) + (f"\n## Failed trials\n{failed}\n" if failed else "")
        (stage / "report.md").write_text(text, encoding="utf-8")
        names["md"] = "report.md"
        failpoint("report.write", format="md")
    if "tex" in formats:
        (stage / "report.tex").write_text(to_latex(tables), encoding="utf-8")
        names["tex"] = "report.tex"
        failpoint("report.write", format="tex")
    if "csv" in formats:
        write_csv(tables, stage / "csv")
        names["csv"] = "csv"
        failpoint("report.write", format="csv")
    if "html" in formats:
        runs_url = None if links is None else links.experiment_url
        (stage / "report.html").write_text(to_html(title, pages, plots, _summary(ds), runs_url), encoding="utf-8")
        names["html"] = "report.html"
        failpoint("report.write", format="html")
    return names


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
