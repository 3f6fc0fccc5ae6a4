"""The ``ocr-study`` command line. Heavy imports (torch, Ray, MLflow) happen inside the commands."""

from __future__ import annotations

import argparse
import atexit
import contextlib
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path

log = logging.getLogger(__name__)
EXIT_CODES = """exit codes (every command):
  0  done (run/resume: every trial finished, or --allow-failures)
  1  a failure while running: trials failed, Ray or the tracking server failed
  2  bad input, found before anything starts: usage, an invalid spec or config, an unknown study,
     a missing data set or weights file, a study in use by another driver"""


class _IntermixedParser(argparse.ArgumentParser):
    """A subcommand's parser that takes its positionals (``key=value`` overrides) anywhere on the line,
    before, between or after the options: ``run quick --dry-run seeds=[0,1,2]`` as ``run quick seeds=[0,1,2]
    --dry-run`` (argparse's intermixed parsing; the top-level parser cannot use it, having subcommands)."""

    _intermixing = False

    def parse_known_args(self, args: Sequence[str] | None = None,  # type: ignore[override]
                         namespace: argparse.Namespace | None = None) -> tuple[argparse.Namespace, list[str]]:
        """Intermixed parsing (which itself calls this method twice, as plain parsing)."""
        if self._intermixing:
            return super().parse_known_args(args, namespace)
        self._intermixing = True
        try:
            return self.parse_known_intermixed_args(args, namespace)
        finally:
            self._intermixing = False


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ocr-study", description=(
        "Hyperparameter and ablation studies of the Out-of-Candidate Rectification loss."),
        epilog=EXIT_CODES, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-v", "--verbose", action="store_true", help="log at INFO level")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_IntermixedParser)
    train = sub.add_parser("train", help="run one trial here, without Ray")
    train.add_argument("config", nargs="?", help="a trial YAML file (optional)")
    train.add_argument("overrides", nargs="*", help="key=value overrides, e.g. ocr.delta=2 seed=1")
    train.add_argument("--out", type=Path, help="the trial's folder (default .ocr-study/train/<time>)")
    pseudo = sub.add_parser("pseudo-masks", help="write a trial config's CAM pseudo-masks as index PNGs")
    pseudo.add_argument("config", nargs="?", help="a trial YAML file (optional)")
    pseudo.add_argument("overrides", nargs="*", help="key=value overrides, e.g. data.name=voc")
    pseudo.add_argument("--out", type=Path, required=True, help="the folder to write <image id>.png into")
    run = sub.add_parser("run", help="run a study on Ray Tune (a local Ray unless --address)")
    run.add_argument("spec", help="a study spec YAML, or a shipped spec: quick, paper, voc, voc-masks")
    run.add_argument("overrides", nargs="*", help="key=value over the spec, e.g. trial.seg.epochs=8 "
                     "seeds=[0,1,2] confirm.seeds=[0,1,2,3,4] scheduler.type=none (saved in the study's spec.yaml)")
    run.add_argument("--dry-run", action="store_true",
                     help="print cells, trials, budgets and resources, then exit")
    run.add_argument("--address", help="a Ray cluster address, e.g. 10.0.0.5:6379 (default: start one here)")
    run.add_argument("--fresh", action="store_true", help="delete an existing study of the same name first")
    run.add_argument("--allow-failures", action="store_true", help="exit 0 even when trials failed (default: 1)")
    for name, text in (("resume", "continue an interrupted study"), ("status", "trials by state, per cell")):
        cmd = sub.add_parser(name, help=text)
        cmd.add_argument("name", help="the study's name")
        cmd.add_argument("--storage", help="the folder holding studies (default .ocr-study/studies)")
        if name == "resume":
            cmd.add_argument("--address", help="a Ray cluster address (default: start one here)")
            cmd.add_argument("--allow-failures", action="store_true",
                             help="exit 0 even when trials failed (default: 1)")
    ui = sub.add_parser("ui", help="start the MLflow UI for a study's store on 127.0.0.1")
    ui.add_argument("name", nargs="?", help="the study's name (default: the only or latest study)")
    ui.add_argument("--storage", help="the folder holding studies (default .ocr-study/studies)")
    ui.add_argument("--port", type=int, default=5000)
    from study.commands.report import add_parsers

    add_parsers(sub)
    return parser


def _split_config(config: str | None, overrides: list[str]) -> tuple[Path | None, list[str]]:
    if config is not None and "=" in config:  # no file given: the first word is an override
        return None, [config, *overrides]
    return (Path(config) if config else None), overrides


def _dispatch(args: argparse.Namespace) -> int:
    if args.command == "train":
        from study.commands.train import train_command

        config, overrides = _split_config(args.config, args.overrides)
        return train_command(config, overrides, args.out)
    if args.command == "pseudo-masks":
        from study.commands.pseudo import pseudo_masks_command

        config, overrides = _split_config(args.config, args.overrides)
        return pseudo_masks_command(config, overrides, args.out)
    held: contextlib.AbstractContextManager[None] = contextlib.nullcontext()
    if args.command in ("run", "resume") and not args.address:
        from study.local_ray import loopback_held

        held = loopback_held()  # entered before Ray is imported (it reads the setting then)
    with held:
        from study.commands import report, run, status, ui

        handler = {"run": run.run, "resume": run.resume, "status": status.status, "ui": ui.ui,
                   "report": report.report, "export": report.export}[args.command]
        return handler(args)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the console script; returns the process exit code."""
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    from study.commands.train import UsageError
    from study.spec import SpecError

    try:
        return _dispatch(args)
    except (UsageError, SpecError) as err:
        print(f"ocr-study: error: {err}", file=sys.stderr)
        return 2
    except (FileNotFoundError, ValueError) as err:
        print(f"ocr-study: error: {err}", file=sys.stderr)
        return 2
    except RuntimeError as err:
        print(f"ocr-study: {type(err).__name__}: {err}", file=sys.stderr)
        return 1


def console() -> None:
    """The ``ocr-study`` command: :func:`main`, its exit handlers (the study's lock, Ray's shutdown, the
    processes a driver recorded, logging), then the exit itself without Python's finalization of the libraries
    a study loads, which costs about 3 s of CPU after everything is done (measured on a study's driver, in
    the orchestration benchmark's notes in README). An exception out of :func:`main` exits the usual way."""
    code = main()
    for stream in (sys.stdout, sys.stderr):
        stream.flush()
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        stream.flush()
    os._exit(code)


if __name__ == "__main__":
    console()
