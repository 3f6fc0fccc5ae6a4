"""The Ray of a local study (no ``--address``): always its own, listening on loopback only.

* Its own: ``ray.init()`` without an address joins the cluster recorded in Ray's temp folder
  (``<temp>/ray/ray_current_cluster``, written by ``ray start --head``), even a dead one, for which it retries
  for minutes; with ``RAY_ADDRESS`` set it joins that. ``ray.init(address="local")`` always starts a new one.
* Loopback only: Ray 2.60's gRPC servers (GCS, raylet, core workers, agents) listen on 127.0.0.1 only when
  the node address is exactly 127.0.0.1, and Ray rewrites 127.0.0.1 to the machine's address unless
  ``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0`` (``ray_constants.ENABLE_RAY_CLUSTER``, read when Ray is imported).
  The variable is inherited by every process Ray starts; a client of such a Ray needs it too. Never for a
  cluster (``--address``): a driver would advertise 127.0.0.1 to the other nodes.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator
from typing import Any

LOOPBACK_ENV = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"
LOOPBACK_VALUE = "0"  # Ray's node address stays 127.0.0.1, so its servers bind loopback only
# Ray starts one idle worker per CPU when the driver connects; Tune's trial actors never use them (Tune gives
# each actor a runtime environment, so Ray starts workers for it), and on 2 cores the idle ones took CPU from
# the study's start (README, the orchestration benchmark's notes). A task that needs a worker gets one then.
LEAN = {"prestart_worker_first_driver": False}
STARTING = "Ray: starting this study's own local Ray (127.0.0.1 only); --address HOST:PORT joins a cluster"


def hold_to_loopback() -> None:
    """Make the Ray this process starts, and every process that Ray starts, listen on loopback only.

    Set before Ray is imported where possible (the CLI does); a Ray already imported in this process gets the
    same value in the constant it read at import time."""
    os.environ[LOOPBACK_ENV] = LOOPBACK_VALUE
    constants = sys.modules.get("ray._private.ray_constants")
    if constants is not None:
        constants.ENABLE_RAY_CLUSTER = False  # type: ignore[attr-defined]


@contextlib.contextmanager
def loopback_held() -> Iterator[None]:
    """:func:`hold_to_loopback` for the block (a ``run`` or ``resume`` command), then the variable and Ray's
    constant as they were: a program (or a test) that calls the CLI in its own process keeps its own setting
    for what it starts afterwards (``ray start`` for a cluster refuses the loopback setting)."""
    before = os.environ.get(LOOPBACK_ENV)
    constants = sys.modules.get("ray._private.ray_constants")
    constant = getattr(constants, "ENABLE_RAY_CLUSTER", None) if constants is not None else None
    hold_to_loopback()
    try:
        yield
    finally:
        if before is None:
            os.environ.pop(LOOPBACK_ENV, None)
        else:
            os.environ[LOOPBACK_ENV] = before
        constants = sys.modules.get("ray._private.ray_constants")
        if constants is not None:  # imported before the block (its value then) or during it (Ray's default)
            constants.ENABLE_RAY_CLUSTER = True if constant is None else constant  # type: ignore[attr-defined]


def start_local_ray(**kwargs: Any) -> None:
    """Start a new local Ray for this study, on loopback, without a dashboard, whatever else the machine
    holds (a running or dead ``ray start`` cluster, ``RAY_ADDRESS``); says so in one line.

    Ray's processes inherit the loopback setting when they start; afterwards the variable is what it was
    before (the CLI's: set), so that nothing else this process starts later (``ray start`` for a cluster,
    which refuses it) inherits it by accident."""
    before = os.environ.get(LOOPBACK_ENV)
    hold_to_loopback()
    import ray

    print(STARTING, flush=True)
    try:
        ray.init(address="local", include_dashboard=False, _system_config=LEAN, **kwargs)
    finally:
        if before is None:
            os.environ.pop(LOOPBACK_ENV, None)
        else:
            os.environ[LOOPBACK_ENV] = before
