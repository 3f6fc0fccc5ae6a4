"""Stage 1 built ahead of a phase, every distinct stage-1 cache entry at once, with the cores split among them.

Without this, the first trial of each seed builds stage 1 on its own thread budget while the other trials of
that seed wait for its lock, their cores idle. Here the driver finds the distinct stage-1 keys a phase needs
(data, ``cam.*``, seed, the CAM network), skips those already cached on this machine, and runs one Ray task
per missing key with ``cores // keys`` threads (one key on a 2-core machine: both cores; two keys: one each).
A task that fails only logs a warning: the trials then build stage 1 themselves and record the error the
usual way. Float sums over more threads differ in the last bits from a one-thread build; every trial of the
key still uses the one cached result.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import time
from collections.abc import Iterable, Mapping
from typing import Any

log = logging.getLogger(__name__)


def missing_stage1(configs: Iterable[Mapping[str, Any]]) -> list[Any]:
    """One trial config per distinct stage-1 cache entry that ``configs`` need and this machine lacks.

    Configs whose stage-1 key depends on sampled OCR values (``ocr.stage`` cam or both, in the search
    phase) are left to their trials: they are passed in with the trial defaults, not the values sampled.
    """
    from pipelines.config import from_flat
    from pipelines.stage1_key import stage1_entry, stage1_ready

    wanted: dict[str, Any] = {}
    for flat in configs:
        cfg = from_flat({k: v for k, v in flat.items() if not k.startswith("meta.")})
        if not stage1_ready(cfg):
            wanted.setdefault(str(stage1_entry(cfg)), cfg)
    return list(wanted.values())


def _build(cfg: Any) -> dict[str, float]:
    """The Ray task: on a node told to keep its own cache (as its trials do), build into that one."""
    from pipelines.trial import prepare_stage1
    from study.trainable import NODE_CACHE_ENV

    if os.environ.get(NODE_CACHE_ENV):
        cfg = dataclasses.replace(cfg, cache_dir=os.environ[NODE_CACHE_ENV])
    return prepare_stage1(cfg)


def _threads(jobs: int) -> int:
    """Threads per task: the cluster's CPUs shared among the tasks, at most one node's worth."""
    import ray

    total = ray.cluster_resources().get("CPU", 1.0)
    per_node = max((n.get("Resources", {}).get("CPU", 1.0) for n in ray.nodes() if n.get("Alive")), default=1.0)
    return max(1, int(min(total // jobs, per_node)))


def prebuild_stage1(configs: Iterable[Mapping[str, Any]], gpus: float = 0.0) -> int:
    """Build the missing stage-1 entries of ``configs`` as Ray tasks, all at once; returns how many.

    Args:
        configs: flat trial configs (``meta.*`` keys allowed), one per trial or per cell and seed.
        gpus: GPUs per task (a study's ``resources.gpus``).
    """
    import ray

    jobs = missing_stage1(configs)
    if not jobs:
        return 0
    threads = _threads(len(jobs))
    seeds = sorted({cfg.seed for cfg in jobs})
    print(f"stage 1: building {len(jobs)} cache entr{'y' if len(jobs) == 1 else 'ies'} (seeds {seeds}), "
          f"{threads} thread{'s' if threads > 1 else ''} each", flush=True)
    start = time.perf_counter()
    task = ray.remote(num_cpus=threads, num_gpus=gpus, max_retries=0)(_build)
    refs = [task.remote(dataclasses.replace(cfg, threads=threads)) for cfg in jobs]
    for cfg, ref in zip(jobs, refs, strict=True):
        try:
            ray.get(ref)
        except Exception as err:  # the trials build it themselves and record the failure
            log.warning("stage 1 for seed %d could not be built ahead (%s); its trials will try", cfg.seed, err)
    print(f"stage 1: ready in {time.perf_counter() - start:.0f} s", flush=True)
    return len(jobs)
