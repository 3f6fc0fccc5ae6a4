"""``ocr-study report`` and ``ocr-study export``, and the report at the end of ``run``/``resume``.

They read what a study wrote through :mod:`results` (pyarrow, pandas, matplotlib); no Ray, no torch.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path
from typing import Any

from record import (
    CURVES_TABLE,
    REPORT_DIR,
    RESULTS_DIR,
    SPEC_FILE,
    STUDY_FILE,
    TRIALS_DIR,
    TRIALS_TABLE,
    TUNE_DIR,
    StopReason,
    read_study,
)
from storage import is_remote, join_uri, local_path, mirror_dir, pull_record, push_record, stored_studies
from study.handle import Study
from study.spec import DEFAULT_STORAGE, StudySpec, check_study_name

DATASET = f"{RESULTS_DIR}/{TRIALS_TABLE}"


def study_folder(name: str, storage: str | None) -> Path:
    """The folder of study ``name`` under ``storage``; a :class:`results.ResultsError` naming the known ones."""
    from results import ResultsError

    check_study_name(name)  # a name from the command line must not lead out of the storage folder
    parts = (SPEC_FILE, STUDY_FILE, TRIALS_DIR, TUNE_DIR, DATASET)
    if storage and is_remote(storage):  # the record comes from the store into the study's local mirror
        uri = join_uri(storage, name)
        folder = mirror_dir(uri)
        pull_record(uri, folder)
        if not any((folder / part).exists() for part in parts):
            raise ResultsError(f"no study {name!r} in {storage} (known: {stored_studies(storage) or 'none'}); "
                               "check the URI")
        return folder
    root = local_path(storage or DEFAULT_STORAGE)
    folder = root / name
    if not any((folder / part).exists() for part in parts):
        known = sorted({p.parent.name for name in (SPEC_FILE, STUDY_FILE) for p in root.glob(f"*/{name}")}
                       if root.is_dir() else [])
        raise ResultsError(f"no study {name!r} in {root.absolute()} (known: {known or 'none'}); "
                           "pass --storage if it lives elsewhere")
    return folder


def _push_back(args: argparse.Namespace, folder: Path) -> None:
    """A study on an object store gets what was written into its mirror (results/, report/) back."""
    if args.storage and is_remote(args.storage) and not args.out:
        push_record(folder, join_uri(args.storage, args.name))


def _print_report(name: str, written: dict[str, Path]) -> None:
    folder = next(iter(written.values())).parent
    print(f"report of study {name}: {folder}")
    for kind, path in written.items():
        print(f"  {kind}: {path}")


def _dataset_folder(folder: Path, out: Path | None = None) -> Path:
    """Collect the study from its record (into ``out``, default the study's ``results/``); without one, the
    dataset exported before (e.g. from MLflow)."""
    from results import ResultsError, collect_study

    if any((folder / part).exists() for part in (STUDY_FILE, TRIALS_DIR, TUNE_DIR)):
        return collect_study(folder, out)
    if (folder / DATASET).is_file():
        return folder / RESULTS_DIR
    raise ResultsError(f"study {folder.name!r} has neither its record nor a dataset in {folder}: rebuild it "
                       f"from MLflow first (`ocr-study export {folder.name} --mlflow URI`)")


def study_state(folder: Path, trials: Any) -> str:
    """``"6 trials planned; 2 completed, 1 failed, 3 running"``: the trials collected, by why they stopped."""
    doc = read_study(folder) if (folder / STUDY_FILE).is_file() else None
    planned = "trials planned: unknown"
    if doc is not None and doc.planned_trials is not None:
        planned = f"{doc.planned_trials} trials planned"
    if trials.empty:
        return f"{planned}; no trial has started yet"
    counts = trials["stop_reason"].astype(str).value_counts()
    return f"{planned}; " + ", ".join(f"{n} {reason}" for reason, n in counts.items())


def _no_finished_trial(trials: Any) -> bool:
    return trials.empty or not (trials["stop_reason"].astype(str) == StopReason.COMPLETED).any()


def report(args: argparse.Namespace) -> int:
    """``ocr-study report NAME [--format md,tex,csv,html] [--out DIR] [--storage DIR]``.

    Collects the study from its record first; a study whose record is gone is reported from the
    dataset exported before (``ocr-study export NAME --mlflow URI``). A study without any trial yet gets
    no report: the command says what state it is in and exits 0."""
    from results import check_oc_rate, load_dataset, parse_formats, write_report

    formats = parse_formats(args.format)
    check_oc_rate(args.oc_rate)
    folder = study_folder(args.name, args.storage)
    # With --out the study is only read (it may be read-only or shared): its dataset is collected into a
    # scratch folder instead of its results/, and the report goes to --out alone.
    with tempfile.TemporaryDirectory(prefix="ocr-study-report-") as scratch:
        dataset = load_dataset(_dataset_folder(folder, Path(scratch) if args.out else None))
    if dataset.trials.empty:
        print(f"study {args.name}: {study_state(folder, dataset.trials)}; no report written")
        return 0
    written = write_report(dataset, Path(args.out) if args.out else folder / REPORT_DIR, formats,
                           oc=args.oc_rate, links=_run_links(_saved_spec(folder)))
    _push_back(args, folder)
    _print_report(args.name, written)
    if _no_finished_trial(dataset.trials):
        print(f"  no finished trial yet: {study_state(folder, dataset.trials)}")
    return 0


def export(args: argparse.Namespace) -> int:
    """``ocr-study export NAME [--out DIR] [--storage DIR] [--mlflow URI]``: the study as Parquet."""
    from results import collect_mlflow, collect_study, load_dataset

    if args.mlflow:
        check_study_name(args.name)  # it names the output folder under the storage
        root = local_path(args.storage or DEFAULT_STORAGE)
        out = Path(args.out) if args.out else root / args.name / RESULTS_DIR
        folder = collect_mlflow(args.mlflow, args.name, out)
    else:
        study = study_folder(args.name, args.storage)
        folder = collect_study(study, Path(args.out) if args.out else None)
        _push_back(args, study)
        trials = load_dataset(folder).trials
        if _no_finished_trial(trials):
            print(f"study {args.name}: {study_state(study, trials)}")
    print(f"study {args.name} exported: {folder / TRIALS_TABLE}, {folder / CURVES_TABLE}")
    return 0


def _saved_spec(folder: Path) -> StudySpec | None:
    """The spec the study saved in its folder (already pulled from a store), for what the report links to;
    ``None`` when there is none or it cannot be read (the report needs no spec: links are a convenience)."""
    from study.spec import load_spec

    try:
        return load_spec(folder / SPEC_FILE) if (folder / SPEC_FILE).is_file() else None
    except Exception:
        return None


def _run_links(spec: StudySpec | None) -> Any:
    """The study's runs on its MLflow server, for the report to link (None with a SQLite or file store, or
    without a spec)."""
    from results import is_server, run_links

    if spec is None or not is_server(spec.tracking_uri):
        return None
    return run_links(spec.tracking_uri, spec.tracking.experiment or spec.name)


def report_after(study: Study) -> None:
    """The report at the end of ``run``/``resume``: written into the study's folder, pushed with the record
    of a study on a store, and uploaded to the study's parent run in MLflow."""
    from results import ResultsError, report_study

    try:
        written = report_study(study.folder, links=_run_links(study.spec))
    except ResultsError as err:
        print(f"ocr-study: no report: {err}", file=sys.stderr)
        return
    if study.remote:
        push_record(study.folder, study.uri)
    _print_report(study.name, written)
    _report_to_mlflow(study, written)


def _report_to_mlflow(study: Study, written: dict[str, Path]) -> None:
    """The report as artifacts of the study's parent run in MLflow, and its headline figures as that run's
    metrics and description (a warning when that fails)."""
    from results import load_dataset
    from study.tracking import log_report, log_summary

    try:
        log_report(study.spec.tracking_uri, study.experiment, study.name, written)
        log_summary(study.spec.tracking_uri, study.experiment, study.name,
                    load_dataset(study.folder / RESULTS_DIR), study.spec.to_dict(), study.hash)
    except Exception as err:  # the report on disk stands; MLflow is a view
        print(f"ocr-study: the report was not uploaded to MLflow: {err}", file=sys.stderr)


def add_parsers(sub: argparse._SubParsersAction[Any]) -> None:
    """Add ``report`` and ``export`` to the CLI's subcommands."""
    rep = sub.add_parser("report", help="tables and plots of a study (collects it first)")
    rep.add_argument("name", help="the study's name")
    rep.add_argument("--format", default="md,tex,csv,html",
                     help="comma-separated: md, tex, csv, html (default: all)")
    rep.add_argument("--out", help="the report folder (default <storage>/<name>/report)")
    rep.add_argument("--storage", help=f"the folder holding studies (default {DEFAULT_STORAGE})")
    rep.add_argument("--oc-rate", default="fg",
                     help="the OC rate shown: fg = share of foreground predictions (the paper's, default), "
                          "pixels = share of valid pixels (the CSV holds both)")
    exp = sub.add_parser("export", help="a study's trials and curves as Parquet (trials.parquet, curves.parquet)")
    exp.add_argument("name", help="the study's name (with --mlflow: the MLflow experiment)")
    exp.add_argument("--out", help="the folder to write (default <storage>/<name>/results)")
    exp.add_argument("--storage", help=f"the folder holding studies (default {DEFAULT_STORAGE})")
    exp.add_argument("--mlflow", metavar="URI",
                     help="rebuild from this MLflow tracking URI instead of the study's record")
