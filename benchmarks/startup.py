"""A study's start-up, here and at an earlier commit: seconds from ``ocr-study run`` to its first trials.

Runs the orchestration benchmark's study (:mod:`benchmarks.orchestration`: 8 trials of 1,000 scenes, stage 1
cached beforehand, untimed) with each side's code, the sides alternated ``--runs`` times, and stops each
run once both of its first trials have reported an epoch (the study's processes are then killed, its
folder removed), after one untimed run per side. Per run it prints, in seconds since the command started:

- ``actor``: Tune's first trial actor is up (the study's MLflow callback gets ``on_trial_start``);
- ``clock``: the first trial's own clock starts (its first report's time less its ``trial_wall_s``: the
  actor has imported the training code and the trial begins).

The driver is wrapped only to stamp those two moments (the benchmark's, not the product's code). Side by
side in one invocation, alternated, because this VM's speed drifts by more than the differences measured.

Run: ``.venv/bin/python -m benchmarks.startup [--base REV] [--runs 3]``.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

import psutil
import yaml

from benchmarks.orchestration import _spec, _warm_stage1
from benchmarks.trial_phases import REPO, check_out_base, remove_base

MARK = "startup-benchmark"
# run in the side's folder (its packages first on the path): stamps Tune's first trial start and the first
# trial's first report, then lets the CLI run as usual
WRAPPER = f"""
import os, sys, time
sys.path.insert(0, '.')
T0 = float(os.environ["OCR_STARTUP_T0"])
from study import tracking
start, result = tracking.MLflowTracking.on_trial_start, tracking.MLflowTracking.on_trial_result
seen = set()
def on_trial_start(self, *args, **kwargs):
    if not seen:
        print("{MARK} actor", round(time.time() - T0, 3), file=sys.stderr, flush=True)
        seen.add("actor")
    return start(self, *args, **kwargs)
def on_trial_result(self, *args, **kwargs):
    res = kwargs.get("result", args[-1] if args else {{}})
    trial = kwargs.get("trial", args[-2] if len(args) > 1 else None)
    if getattr(trial, "trial_id", None) not in seen:
        seen.add(getattr(trial, "trial_id", None))
        print("{MARK} clock", round(time.time() - T0 - float(res.get("trial_wall_s", 0.0)), 3), file=sys.stderr,
              flush=True)
    return result(self, *args, **kwargs)
tracking.MLflowTracking.on_trial_start, tracking.MLflowTracking.on_trial_result = on_trial_start, on_trial_result
from study import cli
sys.argv[0] = "ocr-study"
sys.exit(cli.main())
"""


def _kill_tree(proc: subprocess.Popen[str]) -> None:
    """The driver and every process it started (its local Ray among them)."""
    try:
        family = [psutil.Process(proc.pid), *psutil.Process(proc.pid).children(recursive=True)]
    except psutil.NoSuchProcess:
        family = []
    for p in family:
        with contextlib.suppress(psutil.NoSuchProcess):
            p.kill()
    psutil.wait_procs(family, timeout=10)
    proc.wait()


def one_run(code: Path, workdir: Path, trials_seen: int = 2) -> tuple[float, float]:
    """(actor, clock) seconds of one study's start with ``code``'s packages."""
    shutil.rmtree(workdir / "studies", ignore_errors=True)
    env = {**os.environ, "RAY_AUTH_MODE": "disabled", "PYTHONPATH": str(code), "OCR_STARTUP_T0": str(time.time())}
    proc = subprocess.Popen([sys.executable, "-c", WRAPPER, "run", str(workdir / "spec.yaml")], cwd=code, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    actor, clocks = float("nan"), []
    try:
        assert proc.stderr is not None
        for line in proc.stderr:
            if line.startswith(f"{MARK} actor"):
                actor = float(line.split()[-1])
            elif line.startswith(f"{MARK} clock"):
                clocks.append(float(line.split()[-1]))
                if len(clocks) >= trials_seen:
                    break
    finally:
        _kill_tree(proc)
        shutil.rmtree(workdir / "studies", ignore_errors=True)
    if not clocks:
        raise SystemExit(f"the study with the code in {code} reported no trial: run it by hand to see why")
    return actor, min(clocks)


def main() -> None:
    """Measure both sides, alternated, and print each run and the means."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--base", default="HEAD~1", help="the commit to compare with (default: HEAD~1)")
    parser.add_argument("--runs", type=int, default=3, help="runs per side, alternated (default 3)")
    args = parser.parse_args()
    scratch, base, rev = check_out_base(args.base, "ocr-startup-")
    sides = {f"base {rev}": base, "this tree": REPO}
    spec = _spec(scratch, 8, {})
    (scratch / "spec.yaml").write_text(yaml.safe_dump(spec))
    _warm_stage1({**spec["trial"], "seed": 0})
    measured: dict[str, list[tuple[float, float]]] = {name: [] for name in sides}
    try:
        for code in sides.values():  # untimed: compiled files, the page cache, this tree's empty MLflow store
            one_run(code, scratch)
        for i in range(args.runs):
            for name, code in sides.items():
                measured[name].append(one_run(code, scratch))
                print(f"run {i + 1} {name}: actor {measured[name][-1][0]:.2f} s, clock {measured[name][-1][1]:.2f} s",
                      flush=True)
    finally:
        remove_base(scratch, base)
    print("\n| seconds from `ocr-study run` to | " + " | ".join(sides) + " |")
    print("|---|" + "---|" * len(sides))
    for j, what in enumerate(("Tune's first trial actor up", "the first trial's clock")):
        cells = [f"{statistics.mean(r[j] for r in runs):.2f} ({', '.join(f'{r[j]:.2f}' for r in runs)})"
                 for runs in measured.values()]
        print(f"| {what} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
