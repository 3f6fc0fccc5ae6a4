"""The ``ocr-study`` command line. Heavy imports (torch, Ray, MLflow) happen inside the commands."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

log = logging.getLogger(__name__)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ocr-study", description=(
        "Hyperparameter and ablation studies of the Out-of-Candidate Rectification loss."))
    parser.add_argument("-v", "--verbose", action="store_true", help="log at INFO level")
    sub = parser.add_subparsers(dest="command", required=True)
    train = sub.add_parser("train", help="run one trial here, without Ray")
    train.add_argument("config", nargs="?", help="a trial YAML file (optional)")
    train.add_argument("overrides", nargs="*", help="key=value overrides, e.g. ocr.delta=2 seed=1")
    train.add_argument("--out", type=Path, help="the trial's folder (default .ocr-study/train/<time>)")
    return parser


def _split_config(config: str | None, overrides: list[str]) -> tuple[Path | None, list[str]]:
    if config is not None and "=" in config:  # no file given: the first word is an override
        return None, [config, *overrides]
    return (Path(config) if config else None), overrides


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the console script; returns the process exit code."""
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    from study.train_cmd import UsageError

    try:
        if args.command == "train":
            from study.train_cmd import train_command

            config, overrides = _split_config(args.config, args.overrides)
            return train_command(config, overrides, args.out)
    except UsageError as err:
        print(f"ocr-study: error: {err}", file=sys.stderr)
        return 2
    except (FileNotFoundError, ValueError) as err:
        print(f"ocr-study: error: {err}", file=sys.stderr)
        return 2
    except RuntimeError as err:
        print(f"ocr-study: {type(err).__name__}: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
