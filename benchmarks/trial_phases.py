"""Where one digit trial's seconds go, here and at an earlier commit, side by side; optionally the
orchestration figures of both.

For each side (``--base``, default the previous commit, checked out into a scratch git worktree; and this
working tree) it runs ``ocr-study train`` on the orchestration benchmark's trial (1,000 scenes, 5 segmentation
epochs, one thread, stage 1 warmed first by an untimed run into the side's own cache) in a fresh process:

- once plainly, for the command's wall time and the trial's own (what ``train`` prints);
- once under :mod:`cProfile`, whose cumulative times split the trial into phases by the functions that do
  them (a phase whose function a side lacks prints ``-``): stage 1 (``run_cam_stage``: loading the cache),
  training (``train_epoch``), evaluation (``evaluate``), artifacts (``write_class_iou``, ``write_prior``,
  ``write_examples``, ``draw_pending``), logging (the reporter's ``report``), checkpoint
  (``save_checkpoint``), and the rest of ``run_trial`` (data, model, optimiser set-up). The profiler slows
  Python-level code, so read these as shares of the profiled trial.

With ``--orchestration N`` (default 8; 0 skips it) it then runs this tree's ``benchmarks.orchestration
--trials N --code SIDE`` on each side's code (one benchmark, two codes) and prints their efficiency and wall
ratios side by side. Both sides run in this one invocation, one after the other, so the comparison holds on
a quiet machine.

Run: ``.venv/bin/python -m benchmarks.trial_phases [--base REV] [--orchestration N] [key=value ...]``.
"""

from __future__ import annotations

import argparse
import pstats
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
TRIAL = ["data.digits.train_size=1000", "data.digits.val_size=200", "cam.epochs=4", "seg.epochs=5",
         "device=cpu", "threads=1"]
# phase → (file suffix, function name) pairs whose cumulative time makes it up
PHASES: dict[str, tuple[tuple[str, str], ...]] = {
    "stage 1 (cached)": (("pipelines/stage_cam.py", "run_cam_stage"),),
    "training": (("pipelines/engine.py", "train_epoch"),),
    "evaluation": (("pipelines/evaluation.py", "evaluate"),),
    "artifacts": (("pipelines/artifacts.py", "write_class_iou"), ("pipelines/artifacts.py", "write_prior"),
                  ("pipelines/artifacts.py", "write_examples"), ("pipelines/figures.py", "draw_pending")),
    "logging": (("study/commands/train.py", "report"),),
    "checkpoint": (("pipelines/stage_seg.py", "save_checkpoint"),),
}
TRIAL_FN = ("pipelines/trial.py", "run_trial")
# run in the side's folder, so that its packages (not this one's) are imported
LAUNCH = ("import cProfile, sys; sys.path.insert(0, '.'); from study.cli import main; "
          "p = sys.argv.pop(1); sys.argv[0] = 'ocr-study'; "
          "sys.exit(cProfile.run('main()', p) if p else main())")
ORCH = {"efficiency": r"efficiency: .* = ([\d.]+)", "wall ratio": r"wall ratio .* = ([\d.]+)",
        "study wall (s)": r"report written\): ([\d.]+) s wall", "back to back (s)": r"no Ray or MLflow: ([\d.]+) s"}


@dataclass
class Side:
    """One side of the comparison: its name, folder and what was measured there."""

    name: str
    folder: Path
    wall: float = float("nan")
    trial: float = float("nan")
    phases: dict[str, float | None] = field(default_factory=dict)
    orchestration: dict[str, float] = field(default_factory=dict)


def _train(side: Side, cache: Path, out: Path, extra: list[str], profile: Path | None) -> str:
    cmd = [sys.executable, "-c", LAUNCH, str(profile or ""), "train", *TRIAL, f"cache_dir={cache}", *extra,
           "--out", str(out)]
    done = subprocess.run(cmd, cwd=side.folder, capture_output=True, text=True)
    if done.returncode:
        raise SystemExit(f"{side.name}: ocr-study train failed:\n{done.stdout[-2000:]}{done.stderr[-2000:]}")
    return done.stdout


def _cumulative(stats: pstats.Stats, wanted: tuple[tuple[str, str], ...]) -> float | None:
    found = [v[3] for (path, _, name), v in stats.stats.items()  # type: ignore[attr-defined]
             if any(path.endswith(suffix) and name == fn for suffix, fn in wanted)]
    return sum(found) if found else None


def measure_trial(side: Side, scratch: Path, extra: list[str]) -> None:
    """Warm stage 1, then one plain and one profiled run of the trial at ``side``."""
    cache = scratch / f"cache-{side.name}"
    _train(side, cache, scratch / f"{side.name}-warm", [*extra, "seg.epochs=1"], None)
    start = time.perf_counter()
    log = _train(side, cache, scratch / f"{side.name}-plain", extra, None)
    side.wall = time.perf_counter() - start
    took = re.findall(r"trial took (\d+) s", log)
    side.trial = float(took[-1]) if took else float("nan")
    profile = scratch / f"{side.name}.prof"
    _train(side, cache, scratch / f"{side.name}-profiled", extra, profile)
    stats = pstats.Stats(str(profile))
    side.phases = {name: _cumulative(stats, fns) for name, fns in PHASES.items()}
    total = _cumulative(stats, (TRIAL_FN,))
    if total is not None:
        side.phases["set-up and the rest"] = total - sum(v for v in side.phases.values() if v is not None)
        side.phases["trial (profiled)"] = total


def measure_orchestration(side: Side, scratch: Path, trials: int) -> None:
    """This tree's orchestration benchmark on the side's code, its figures parsed from what it prints."""
    cmd = [sys.executable, "-m", "benchmarks.orchestration", "--trials", str(trials),
           "--workdir", str(scratch / f"orch-{side.name.replace(' ', '-')}"), "--code", str(side.folder)]
    done = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True)  # this benchmark, the side's code
    if done.returncode:
        raise SystemExit(f"{side.name}: benchmarks.orchestration failed:\n{done.stderr[-2000:]}")
    for key, pattern in ORCH.items():
        found = re.search(pattern, done.stdout)
        side.orchestration[key] = float(found.group(1)) if found else float("nan")


def _cell(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def print_tables(sides: list[Side]) -> None:
    """The phases table (seconds), then the orchestration one if it was measured."""
    head = " | ".join(s.name for s in sides)
    print(f"\n| phase of one trial (s) | {head} |\n|---|{'---|' * len(sides)}")
    print(f"| `ocr-study train` wall (plain) | {' | '.join(f'{s.wall:.1f}' for s in sides)} |")
    print(f"| trial as train prints it (plain) | {' | '.join(f'{s.trial:.0f}' for s in sides)} |")
    for name in dict.fromkeys(k for s in sides for k in s.phases):
        print(f"| {name} | {' | '.join(_cell(s.phases.get(name)) for s in sides)} |")
    if all(s.orchestration for s in sides):
        print(f"\n| orchestration | {head} |\n|---|{'---|' * len(sides)}")
        for key in ORCH:
            print(f"| {key} | {' | '.join(f'{s.orchestration[key]:.3f}' for s in sides)} |")


def check_out_base(rev: str, prefix: str) -> tuple[Path, Path, str]:
    """A scratch folder with commit ``rev`` of this repository checked out in it (a detached git worktree):
    (the scratch folder, the worktree, the commit's short hash). Undo with :func:`remove_base`."""
    short = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", rev], capture_output=True, text=True)
    if short.returncode:
        raise SystemExit(f"--base {rev!r} is not a commit of {REPO}: {short.stderr.strip()}")
    scratch = Path(tempfile.mkdtemp(prefix=prefix))
    base = scratch / "base"
    subprocess.run(["git", "-C", str(REPO), "worktree", "add", "-q", "--detach", str(base), short.stdout.strip()],
                   check=True)
    return scratch, base, short.stdout.strip()


def remove_base(scratch: Path, base: Path) -> None:
    """The worktree and the scratch folder of :func:`check_out_base`, gone."""
    subprocess.run(["git", "-C", str(REPO), "worktree", "remove", "--force", str(base)], check=False)
    shutil.rmtree(scratch, ignore_errors=True)


def main() -> None:
    """Measure both sides and print the tables."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--base", default="HEAD~1", help="the commit to compare with (default: HEAD~1)")
    parser.add_argument("--orchestration", type=int, default=8, metavar="N",
                        help="trials of the orchestration benchmark on each side (0: skip it)")
    parser.add_argument("overrides", nargs="*", help="trial config key=value overrides")
    args = parser.parse_args()
    scratch, base, rev = check_out_base(args.base, "ocr-trial-phases-")
    sides = [Side(f"base {rev}", base), Side("this tree", REPO)]
    try:
        for side in sides:
            print(f"{side.name}: the trial ...", flush=True)
            measure_trial(side, scratch, args.overrides)
        if args.orchestration:
            for side in sides:
                print(f"{side.name}: benchmarks.orchestration --trials {args.orchestration} ...", flush=True)
                measure_orchestration(side, scratch, args.orchestration)
    finally:
        remove_base(scratch, base)
    print_tables(sides)


if __name__ == "__main__":
    main()
