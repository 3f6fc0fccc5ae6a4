"""A Tune searcher that walks grid cells and samples each cell with its own Optuna study.

Tune's ``OptunaSearch`` rejects grid axes, so this searcher does the grid itself: for every cell it asks
its Optuna study (ask/tell; TPE or random, seeded) for that cell's settings, and emits each setting once
per seed. When every seed of a setting has finished, the mean of their final metric is told to the study.
Its whole state is a JSON document, saved with the Tune experiment and restored on resume, so a resumed
study neither repeats nor skips a trial.
"""

from __future__ import annotations

import json
import logging
import math
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import optuna
from optuna.distributions import BaseDistribution, CategoricalDistribution, FloatDistribution, IntDistribution
from ray.tune.search import Searcher

from record import META, Decision, SeedRule
from results._sequential import Look
from study.plan import CellPlan
from study.sequential import REFRESH_S, Values, arm, arm_looks, measure_key, reference_arm
from study.spec import SearchParam

log = logging.getLogger(__name__)


def distribution(param: SearchParam) -> BaseDistribution:
    """Optuna's distribution for a spec's search parameter."""
    if param.type == "choice":
        return CategoricalDistribution(list(param.values))
    if param.type == "int":
        return IntDistribution(int(param.low or 0), int(param.high or 0), step=param.step, log=param.log)
    return FloatDistribution(float(param.low or 0.0), float(param.high or 0.0), log=param.type == "loguniform")


@dataclass
class _Setting:
    cell: int
    index: int
    params: dict[str, Any]
    values: dict[str, float | None] = field(default_factory=dict)  # seed → final metric (None = failed)
    told: bool = False


def _queue(cells: list[CellPlan], seeds: list[int], max_trials: int | None) -> list[tuple[int, int, int]]:
    order = [(c, s, seed) for c, cell in enumerate(cells) for s in range(cell.settings) for seed in seeds]
    return order[:max_trials] if max_trials is not None else order


class _StateSearcher(Searcher):
    """What this module's searchers share: Tune's metric and mode taken as given, and the whole state saved
    with the Tune experiment as the JSON of :meth:`get_state` (restored by :meth:`set_state` on resume)."""

    def set_search_properties(self, metric: str | None, mode: str | None, config: dict[str, Any],
                              **spec: Any) -> bool:
        """Take Tune's metric and mode (the base class ignores them, which would leave Optuna blind)."""
        self._metric = metric or self._metric
        self._mode = mode or self._mode
        return True

    def get_state(self) -> dict[str, Any]:
        """Everything needed to continue, as JSON data."""
        raise NotImplementedError

    def set_state(self, state: dict[str, Any]) -> None:
        """Rebuild from :meth:`get_state`."""
        raise NotImplementedError

    def save(self, checkpoint_path: str) -> None:
        """Write the state as JSON (Tune calls this with the experiment checkpoint)."""
        with open(checkpoint_path, "w") as f:
            json.dump(self.get_state(), f)

    def restore(self, checkpoint_path: str) -> None:
        """Read what :meth:`save` wrote."""
        with open(checkpoint_path) as f:
            self.set_state(json.load(f))


class GridCellSearcher(_StateSearcher):
    """Grid cells × Optuna samples per cell × seeds, as one Tune search algorithm."""

    def __init__(self, cells: list[CellPlan], seeds: list[int], *, sampler: str = "tpe", seed: int = 0,
                 max_trials: int | None = None, meta: dict[str, Any] | None = None,
                 metric: str | None = None, mode: str | None = None) -> None:
        super().__init__(metric=metric, mode=mode)
        self.cells, self.seeds = list(cells), list(seeds)
        self.spaces = [{p.key: distribution(p) for p in cell.search} for cell in self.cells]
        self.sampler_name, self.sampler_seed = sampler, seed
        self.meta = dict(meta or {})
        self.queue = _queue(cells, self.seeds, max_trials)
        self.cursor = 0
        self.settings: dict[str, _Setting] = {}
        self.trials: dict[str, tuple[int, int, int]] = {}  # trial id → (cell, setting, seed)
        self._studies: dict[int, optuna.Study] = {}
        self._asked: dict[str, optuna.trial.Trial] = {}

    @property
    def total(self) -> int:
        """How many trials the searcher will suggest in all."""
        return len(self.queue)

    def _sampler(self, cell: int, index: int) -> optuna.samplers.BaseSampler:
        """A sampler seeded by (study seed, cell, setting): a setting's sample depends only on those and
        on the results told before it, so a restored searcher asks exactly what the original would."""
        seed = (self.sampler_seed * 1_000_003 + cell * 10_007 + index) % 2**32
        if self.sampler_name == "random":
            return optuna.samplers.RandomSampler(seed=seed)
        return optuna.samplers.TPESampler(seed=seed)

    def _study(self, cell: int) -> optuna.Study:
        if cell not in self._studies:
            optuna.logging.set_verbosity(optuna.logging.WARNING)
            direction = (optuna.study.StudyDirection.MINIMIZE if self.mode == "min"
                         else optuna.study.StudyDirection.MAXIMIZE)
            self._studies[cell] = optuna.create_study(direction=direction, sampler=self._sampler(cell, 0))
        return self._studies[cell]

    def _setting(self, cell: int, index: int) -> _Setting:
        key = f"{cell}/{index}"
        if key not in self.settings:
            space = self.spaces[cell]
            params: dict[str, Any] = {}
            if space:
                study = self._study(cell)
                study.sampler = self._sampler(cell, index)
                trial = study.ask(space)
                params = dict(trial.params)
                self._asked[key] = trial
            self.settings[key] = _Setting(cell, index, params)
        return self.settings[key]

    def suggest(self, trial_id: str) -> dict[str, Any] | None:
        """The next trial's flat config, or ``Searcher.FINISHED``."""
        if self.cursor >= len(self.queue):
            return Searcher.FINISHED  # type: ignore[return-value]
        cell, index, seed = self.queue[self.cursor]
        self.cursor += 1
        setting = self._setting(cell, index)
        self.trials[trial_id] = (cell, index, seed)
        base = self.cells[cell]
        return {**base.base, **setting.params, "seed": seed, f"{META}cell": base.id,
                f"{META}setting": index, **{f"{META}{k}": v for k, v in self.meta.items()}}

    def on_trial_complete(self, trial_id: str, result: dict[str, Any] | None = None,
                          error: bool = False) -> None:
        """Record a finished trial; tell Optuna once every seed of its setting is in."""
        if trial_id not in self.trials:
            return
        cell, index, seed = self.trials[trial_id]
        setting = self.settings[f"{cell}/{index}"]
        value = None if error or not result or self.metric not in result else float(result[self.metric])
        setting.values[str(seed)] = value
        if len(setting.values) == len(self.seeds) and not setting.told:
            self._tell(f"{cell}/{index}", setting)

    def _tell(self, key: str, setting: _Setting) -> None:
        setting.told = True
        trial = self._asked.pop(key, None)
        if trial is None:
            return
        done = [v for v in setting.values.values() if v is not None]
        study = self._study(setting.cell)
        if done:
            study.tell(trial, statistics.fmean(done))
        else:
            study.tell(trial, state=optuna.trial.TrialState.FAIL)

    def get_state(self) -> dict[str, Any]:
        """Everything needed to continue: the cursor, every setting asked, every trial suggested."""
        return {"cursor": self.cursor, "queue": self.queue, "trials": self.trials,
                "settings": {k: vars(s) for k, s in self.settings.items()}}

    def set_state(self, state: dict[str, Any]) -> None:
        """Rebuild from :meth:`get_state`: Optuna studies are replayed from the recorded settings."""
        self.cursor = int(state["cursor"])
        self.queue = [(int(q[0]), int(q[1]), int(q[2])) for q in state["queue"]]
        self.trials = {k: (int(v[0]), int(v[1]), int(v[2])) for k, v in state["trials"].items()}
        self.settings = {k: _Setting(**v) for k, v in state["settings"].items()}
        self._studies, self._asked = {}, {}
        for key, setting in self.settings.items():
            space = self.spaces[setting.cell]
            if not space:
                continue
            study = self._study(setting.cell)
            study.enqueue_trial(setting.params)
            trial = study.ask(space)
            self._asked[key] = trial
            if setting.told:
                setting.told = False
                self._tell(key, setting)

class PlannedSearcher(_StateSearcher):
    """The confirm phase's searcher: a fixed list of flat configs, each suggested once, in order.

    Its state (how many were suggested) is saved with the Tune experiment, so a resumed confirm phase
    runs exactly the planned trials.
    """

    def __init__(self, configs: list[dict[str, Any]], metric: str | None = None, mode: str | None = None) -> None:
        super().__init__(metric=metric, mode=mode)
        self.configs = [dict(c) for c in configs]
        self.cursor = 0

    @property
    def total(self) -> int:
        """How many trials the searcher will suggest in all."""
        return len(self.configs)

    def suggest(self, trial_id: str) -> dict[str, Any] | None:
        """The next planned config, or ``Searcher.FINISHED``."""
        if self.cursor >= len(self.configs):
            return Searcher.FINISHED  # type: ignore[return-value]
        self.cursor += 1
        return dict(self.configs[self.cursor - 1])

    def on_trial_complete(self, trial_id: str, result: dict[str, Any] | None = None,
                          error: bool = False) -> None:
        """Nothing to learn: the confirm phase only measures."""

    def get_state(self) -> dict[str, Any]:
        """The cursor and the configs."""
        return {"cursor": self.cursor, "configs": self.configs}

    def set_state(self, state: dict[str, Any]) -> None:
        """Rebuild from :meth:`get_state`."""
        self.cursor, self.configs = int(state["cursor"]), list(state["configs"])


class SequentialSearcher(_StateSearcher):
    """The sequential confirm phase's searcher: rounds of seeds for the chosen settings still open.

    It suggests round 1 (the rule's ``min`` seeds) for every setting; when every trial of a round has ended it
    looks at each setting's paired differences with the baseline (:func:`study.sequential.arm_looks`) and
    suggests the next round's seeds for the settings still open, and for the baseline while any is; it
    finishes when none is open. Its state is JSON saved with the Tune experiment; a resumed driver also reads
    the values it missed from the study's record (``record``), so a kill between a trial's end and Tune's next
    checkpoint loses nothing.
    """

    def __init__(self, configs: list[dict[str, Any]], rule: SeedRule, metric: str, mode: str,
                 record: Callable[[], Values] | None = None, on_round: Callable[[int, dict[str, list[Look]]], None]
                 | None = None, refresh_s: float = REFRESH_S) -> None:
        super().__init__(metric=metric, mode=mode)
        self.refresh_s = refresh_s
        self.configs = [dict(c) for c in configs]
        self.rule, self.measured, self.direction = rule, metric, mode
        self.record, self.on_round = record, on_round
        self.round = 1
        self.queue = self._round_queue(1, set(arm(c) for c in self.configs))
        self.trials: dict[str, int] = {}  # Tune trial id → planned config index
        self.values: Values = {}
        self.measure: str | None = None  # the result key measured (set by the first result that has one)
        self.decided: dict[str, str] = {}  # setting → its decision, once decided
        self._refreshed = -math.inf

    @property
    def total(self) -> int:
        """The most trials the phase may run (every setting to ``max`` seeds)."""
        return len(self.configs)

    def _round_queue(self, round_: int, open_arms: set[str]) -> list[int]:
        return [i for i, c in enumerate(self.configs) if int(c[f"{META}round"]) == round_ and arm(c) in open_arms]

    def _emitted(self, round_: int) -> list[int]:
        return [i for i in self.trials.values() if int(self.configs[i][f"{META}round"]) == round_]

    def _waiting(self) -> list[int]:
        return [i for i in self._emitted(self.round) if i not in self.values]

    def suggest(self, trial_id: str) -> dict[str, Any] | None:
        """The next config of the round, ``None`` while the round's last trials run, or ``Searcher.FINISHED``."""
        if not self.queue and self._waiting():
            self._refresh()
        if not self.queue and not self._waiting():
            self._next_round()
        if self.queue:
            index = self.queue.pop(0)
            self.trials[trial_id] = index
            return dict(self.configs[index])
        if self._waiting():
            return None
        return Searcher.FINISHED  # type: ignore[return-value]

    def _refresh(self) -> None:
        """Values the searcher was not told (a driver resumed after a trial ended) from the record."""
        if self.record is None or time.monotonic() - self._refreshed < self.refresh_s:
            return
        self._refreshed = time.monotonic()
        for index, value in self.record().items():
            if index in self._waiting():
                self.values[index] = value

    def _next_round(self) -> None:
        """Decide every open setting on the rounds so far; queue the next round's seeds for those still open."""
        if self.round > len(self.rule.looks) or self.queue:
            return
        metric = self.measure or self.measured
        found = arm_looks(self.configs, self.values, self.rule, self.direction, self.round, metric)
        for key, seen in found.items():
            if seen and seen[-1].decision != Decision.OPEN and key not in self.decided:
                self.decided[key] = str(seen[-1].decision)
        if self.on_round is not None:
            self.on_round(self.round, found)
        open_arms = {key for key in found if key not in self.decided}
        if not open_arms or self.round >= len(self.rule.looks):
            self.round = len(self.rule.looks) + 1
            return
        self.round += 1
        self.queue = self._round_queue(self.round, open_arms | {reference_arm(self.configs)})

    def on_trial_complete(self, trial_id: str, result: dict[str, Any] | None = None,
                          error: bool = False) -> None:
        """Keep the trial's measured value (``None`` when it failed or reported none)."""
        if trial_id not in self.trials:
            return
        value = None
        if result and not error:
            self.measure = self.measure or measure_key(self.measured, result)
            found = result.get(self.measure)
            value = float(found) if isinstance(found, (int, float)) else None
        self.values[self.trials[trial_id]] = value
        if not self.queue and not self._waiting():  # the round is in: decide now (Tune asks for no trial after
            self._next_round()  # its last one, so the last round's look would otherwise never be taken)

    def get_state(self) -> dict[str, Any]:
        """Everything needed to continue."""
        return {"round": self.round, "queue": self.queue, "trials": self.trials,
                "values": {str(k): v for k, v in self.values.items()}, "measure": self.measure,
                "decided": self.decided, "configs": self.configs}

    def set_state(self, state: dict[str, Any]) -> None:
        """Rebuild from :meth:`get_state`."""
        self.round, self.queue = int(state["round"]), [int(i) for i in state["queue"]]
        self.trials = {str(k): int(v) for k, v in state["trials"].items()}
        self.values = {int(k): (None if v is None else float(v)) for k, v in state["values"].items()}
        self.measure, self.decided = state.get("measure"), dict(state.get("decided") or {})
        self.configs = [dict(c) for c in state["configs"]]
