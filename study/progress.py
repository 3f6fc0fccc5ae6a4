"""A live one-line view of a running study: trials by state, best so far, elapsed and remaining time."""

from __future__ import annotations

import sys
import time
from typing import Any

from ray.tune import Callback

from record import META, TrialStatus, metric_text


def _clock(seconds: float) -> str:
    seconds = int(max(seconds, 0))
    return f"{seconds // 3600:d}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"


class ProgressLine(Callback):
    """Prints a status line every ``every`` seconds and when a trial ends; ``at_most``: ``total`` is a bound (a
    sequential confirm phase runs up to that many), and so is the time left."""

    def __init__(self, total: int, metric: str, mode: str, every: float = 10.0, at_most: bool = False) -> None:
        self.total, self.metric, self.mode, self.every = total, metric, mode, every
        self.at_most = at_most
        self.start = time.monotonic()
        self.last = 0.0

    def __getstate__(self) -> dict[str, Any]:
        return dict(self.__dict__)

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self.start, self.last = time.monotonic(), 0.0  # a resumed driver starts its own clock

    def line(self, trials: list[Any]) -> str:
        """The status line for the trials Tune knows."""
        states: dict[str, int] = {}
        for t in trials:
            states[t.status] = states.get(t.status, 0) + 1
        done = states.get(TrialStatus.TERMINATED, 0) + states.get(TrialStatus.ERROR, 0)
        elapsed = time.monotonic() - self.start
        best = self._best(trials)
        eta = elapsed / done * (self.total - done) if done else float("nan")
        bound = "up to " if getattr(self, "at_most", False) else ""
        parts = [f"[{_clock(elapsed)}] {done}/{bound}{self.total} done",
                 ", ".join(f"{n} {s.lower()}" for s, n in sorted(states.items())) or "starting"]
        if best:
            parts.append(best)
        parts.append(f"{'at most ' if bound else ''}~{_clock(eta)} left" if eta == eta else "remaining: estimating")
        return " · ".join(parts)

    def _best(self, trials: list[Any]) -> str:
        scored = [(t.last_result[self.metric], t) for t in trials
                  if t.last_result and isinstance(t.last_result.get(self.metric), (int, float))]
        if not scored:
            return ""
        value, trial = (max if self.mode == "max" else min)(scored, key=lambda x: x[0])
        cfg = trial.config
        shown = metric_text(self.metric, value)
        return f"best {self.metric} {shown} ({cfg.get(f'{META}cell', '')}, seed {cfg.get('seed')})"

    def _print(self, trials: list[Any]) -> None:
        self.last = time.monotonic()
        print(self.line(trials), file=sys.stderr, flush=True)

    def on_step_end(self, iteration: int, trials: list[Any], **info: Any) -> None:
        """Print if the last line is older than ``every`` seconds."""
        if time.monotonic() - self.last >= self.every:
            self._print(trials)

    def on_trial_complete(self, iteration: int, trials: list[Any], trial: Any, **info: Any) -> None:
        """Print when a trial ends."""
        self._print(trials)

    def on_trial_error(self, iteration: int, trials: list[Any], trial: Any, **info: Any) -> None:
        """Print when a trial fails."""
        self._print(trials)

    def on_experiment_end(self, trials: list[Any], **info: Any) -> None:
        """Print the final line."""
        self._print(trials)
