"""Which trial failures are retried: only those that can pass on a retry.

Ray Tune retries every failed trial up to ``FailureConfig(max_failures=...)`` times and has no
per-error policy (Ray 2.60: ``Trial.should_recover`` compares the failure count with the trial's
``max_failures``, whatever the error). A worker or node that dies (the trial's process is gone: a
``RayActorError``) may well pass on a retry, from the last checkpoint; an exception raised by the trial's
own code (a non-finite loss, bad data, a bug) fails the same way again.

So a trial that raises first sends one last report carrying :data:`FATAL_KEY` (its error) and then
raises. :class:`FailFast`, a driver callback, sees that report before the error and sets the trial's
``max_failures`` to 0: Tune then marks it ERROR at once, and runs it once. Dead workers and nodes send no
such report and are retried as configured.
"""

from __future__ import annotations

import logging
import traceback
from collections.abc import Mapping
from typing import Any

from ray.tune import Callback

from record import TrialStatus

log = logging.getLogger(__name__)
FATAL_KEY = "fatal_error"
FATAL_ENV = {"TUNE_DISABLE_STRICT_METRIC_CHECKING": "1"}  # a fatal report before any epoch has no metric


def fatal_report(last: Mapping[str, Any], err: BaseException) -> dict[str, Any]:
    """The report a failing trial sends before it raises: its last metrics (so the trial's last result
    still says how far it got) and its error, one line."""
    line = traceback.format_exception_only(type(err), err)[-1].strip()
    return {**last, FATAL_KEY: line}


def is_fatal(result: Mapping[str, Any]) -> bool:
    """Whether a Tune result is the last report of a trial failing deterministically."""
    return bool(result.get(FATAL_KEY))


class FailFast(Callback):
    """Never retry a trial whose own code raised (it sent a fatal report); retry dead workers as configured."""

    def on_trial_result(self, iteration: int, trials: list[Any], trial: Any, result: dict[str, Any],
                        **info: Any) -> None:
        """On a fatal report, make the coming error final for this trial."""
        if is_fatal(result):
            trial.max_failures = 0
            log.info("trial %s failed in its own code, not retried: %s", trial.trial_id, result[FATAL_KEY])


def failure_reasons(rows: list[dict[str, Any]]) -> list[tuple[str, int]]:
    """The failed trials' errors (``trial_table`` rows), most frequent first, with their counts."""
    from collections import Counter

    reasons = Counter(str(r.get("error") or "unknown error (see the trial's error.txt)")
                      for r in rows if r.get("status") == TrialStatus.ERROR)
    return reasons.most_common()
