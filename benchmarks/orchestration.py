"""Orchestration efficiency: the same N short trials through ``ocr-study run`` and back to back in one process.

Both runs use one thread per trial and the same stage-1 cache (warmed first, untimed), so the difference is
what Ray Tune, MLflow logging, checkpointing and the final report cost. Prints, measured in this one run:

- the study's efficiency: CPU seconds spent in trials (their processes' CPU time, from the Tune results)
  over wall × cores, where wall is the whole ``ocr-study run`` command (Ray start to report written);
- the ratio of the study's wall time to the back-to-back run's (ideal: 1 / concurrency).

Run: ``.venv/bin/python -m benchmarks.orchestration [--trials 8] [--workdir DIR] [--code DIR] [key=value ...]``;
``--code`` measures the project's code in another folder (a git worktree of another commit) with this
benchmark (:mod:`benchmarks.trial_phases` compares two commits so).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

# the ``ocr-study`` command of the code measured (its ``console`` where it has one: what the script runs)
CLI = ("import sys; from study import cli; sys.argv[0] = 'ocr-study'; "
       "sys.exit(cli.console() if hasattr(cli, 'console') else cli.main())")
TRIAL = {"data.digits.train_size": 1000, "data.digits.val_size": 200, "cam.epochs": 4, "seg.epochs": 5,
         "device": "cpu", "threads": 1}


def _spec(workdir: Path, trials: int, overrides: dict[str, Any]) -> dict[str, Any]:
    return {
        "name": "orchestration",
        "trial": {**TRIAL, **overrides, "cache_dir": str(workdir / "cache")},
        "grid": {"ocr.selection": ["oc"]},
        "search": {"samples": trials, "sampler": "random", "seed": 0,
                   "params": {"ocr.delta": {"type": "uniform", "low": 0.0, "high": 8.0}}},
        "seeds": [0],
        "scheduler": {"type": "none"},
        "max_concurrent": os.cpu_count() or 2,
        "resources": {"cpus": 1, "gpus": 0},
        "storage": str(workdir / "studies"),
    }


def _warm_stage1(flat: dict[str, Any]) -> None:
    from pipelines.config import from_flat
    from pipelines.data import open_data
    from pipelines.reporter import ListReporter
    from pipelines.stage_cam import run_cam_stage

    cfg = from_flat(flat)
    run_cam_stage(cfg, open_data(cfg), ListReporter())


def _trial_results(tune_dir: Path) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    out = []
    for folder in sorted(p for p in tune_dir.iterdir() if (p / "params.json").is_file()):
        config = json.loads((folder / "params.json").read_text())
        lines = (folder / "result.json").read_text().splitlines()
        out.append((config, json.loads(lines[-1])))
    return out


def _busy_cpu_s() -> float:
    """CPU seconds this machine has spent not idle since boot (Linux ``/proc/stat``; 0 elsewhere)."""
    try:
        fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    except OSError:
        return 0.0
    idle = fields[3] + fields[4]  # idle + iowait
    return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def _back_to_back(configs: list[dict[str, Any]], workdir: Path) -> float:
    from pipelines.config import from_flat
    from pipelines.reporter import ListReporter
    from pipelines.trial import run_trial

    shutil.rmtree(workdir / "sequential", ignore_errors=True)  # no checkpoint of an earlier run to resume
    start = time.perf_counter()
    for i, config in enumerate(configs):
        flat = {k: v for k, v in config.items() if not k.startswith("meta.")}
        run_trial(from_flat(flat), ListReporter(), workdir / "sequential" / str(i))
    return time.perf_counter() - start


def main() -> None:
    """Run both ways and print the figures."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--trials", type=int, default=8)
    parser.add_argument("--workdir", type=Path, help="scratch folder (default: a new temporary one)")
    parser.add_argument("--code", type=Path, default=Path(__file__).resolve().parents[1],
                        help="the folder whose pipelines/ and study/ are measured (default: this one)")
    parser.add_argument("overrides", nargs="*", help="trial config key=value overrides")
    args = parser.parse_args()
    sys.path.insert(0, str(args.code))  # before the project's modules are imported (they are, lazily, below)
    overrides = {k: yaml.safe_load(v) for k, v in (item.split("=", 1) for item in args.overrides)}
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="ocr-orchestration-"))
    shutil.rmtree(workdir / "studies", ignore_errors=True)
    workdir.mkdir(parents=True, exist_ok=True)
    spec = _spec(workdir, args.trials, overrides)
    (workdir / "spec.yaml").write_text(yaml.safe_dump(spec))
    _warm_stage1({**spec["trial"], "seed": 0})

    env = {**os.environ, "RAY_AUTH_MODE": "disabled", "PYTHONPATH": str(args.code)}
    start, busy = time.perf_counter(), _busy_cpu_s()
    subprocess.run([sys.executable, "-c", CLI, "run", str(workdir / "spec.yaml")], cwd=workdir, env=env,
                   check=True, stdout=subprocess.DEVNULL)
    study_wall, busy = time.perf_counter() - start, _busy_cpu_s() - busy
    results = _trial_results(workdir / "studies" / "orchestration" / "tune")
    train_cpu = sum(float(last.get("trial_cpu_s", 0.0)) for _, last in results)

    sequential_wall = _back_to_back([config for config, _ in results], workdir)
    cores = os.cpu_count() or 1
    concurrency = min(spec["max_concurrent"], len(results))
    print(f"{len(results)} trials, {cores} cores, {concurrency} at once, 1 thread each")
    print(f"ocr-study run (Ray start → report written): {study_wall:.1f} s wall; trials used {train_cpu:.1f} CPU s")
    print(f"efficiency: trial CPU s / (wall × cores) = {train_cpu / (study_wall * cores):.3f}  (aim ≥ 0.85)")
    print(f"the machine was busy {busy:.1f} CPU s = {busy / (study_wall * cores):.3f} of wall × cores "
          f"(the rest of busy - trials: Ray, the driver, MLflow, the report, anything else running)")
    print(f"back to back in one process, no Ray or MLflow: {sequential_wall:.1f} s wall")
    print(f"wall ratio study / back-to-back = {study_wall / sequential_wall:.3f}  (ideal {1 / concurrency:.3f})")


if __name__ == "__main__":
    main()
