"""The confirm phase's seed rule: how many seeds a chosen setting gets when seeds are added until the answer
is clear (a *sequential* confirm phase), as ``study.json`` records it.

Every chosen setting starts with ``min`` seeds, the first round. After each round the paired comparison of
every setting with the baseline is looked at; a setting whose interval excludes 0, or lies within
``±margin``, is decided and gets no more seeds; the others get ``step`` more, up to ``max``. The baseline runs
every seed any setting runs (the comparison is paired). Seeds are ``first, first + 1, …``.

The error guarantee comes from ``alpha`` being spent over the looks by a Lan–DeMets spending function
(``spending``): the test at look ``k`` has level ``α(t_k) − α(t_{k−1})`` with ``t_k`` the look's planned
seeds over ``max``; the levels sum to ``alpha``, so by the union bound the chance of any false "better" or
"worse" at any look is at most ``alpha``, whatever the correlation between looks (:mod:`results._sequential`
computes it). ``detect`` and ``power`` size the plan that ``--dry-run`` and the search phase's end print.

The default spending is Pocock-type: with a handful of seeds each look is a t interval on few degrees of
freedom, and O'Brien–Fleming-type spending leaves the first looks so little α (0.0007 at 3 of 9 seeds, a t
quantile near 38 at 2 degrees of freedom) that they can almost never decide; Pocock-type spends evenly, so a
large effect is settled in the first round. O'Brien–Fleming keeps more power for the last look: choose it
where ``max`` is large.

Standard library only, like the rest of :mod:`record`.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

SPENDINGS = ("obrien_fleming", "pocock")
RULE_KEYS = ("min", "max", "step", "first", "alpha", "spending", "margin", "detect", "power")


@dataclass(frozen=True)
class SeedRule:
    """A sequential confirm phase's seed rule (see the module's docstring). ``margin`` and ``detect`` are in
    the metric's reported unit (percentage points for mIoU); ``margin`` ``None`` means no equivalence stop."""

    min: int = 3
    max: int = 10
    step: int = 1
    first: int = 0
    alpha: float = 0.05
    spending: str = "pocock"
    margin: float | None = None
    detect: float = 2.0
    power: float = 0.8

    def __post_init__(self) -> None:
        for name in ("min", "max", "step", "first"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int):
                raise ValueError(f"{name}: must be an integer, got {value!r}")
        if self.min < 2:
            raise ValueError(f"min: must be at least 2 (a paired interval needs two seeds), got {self.min}")
        if self.max < self.min:
            raise ValueError(f"max: must be at least min ({self.min}), got {self.max}")
        if self.step < 1:
            raise ValueError(f"step: must be at least 1 seed per round, got {self.step}")
        if self.first < 0:
            raise ValueError(f"first: must be a seed ≥ 0, got {self.first}")
        for name, low, high in (("alpha", 0.0, 0.5), ("power", 0.0, 1.0)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not low < value < high:
                raise ValueError(f"{name}: must be a number in ({low:g}, {high:g}), got {value!r}")
        if self.spending not in SPENDINGS:
            raise ValueError(f"spending: {self.spending!r} is none of {list(SPENDINGS)}")
        for name in ("margin", "detect"):
            value = getattr(self, name)
            if value is None and name == "margin":
                continue
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not (
                    math.isfinite(value) and value > 0):
                raise ValueError(f"{name}: must be a positive number (in the metric's unit, pp for mIoU), "
                                 f"got {value!r}")

    @property
    def seeds(self) -> tuple[int, ...]:
        """Every seed the rule may run, in the order rounds take them."""
        return tuple(range(self.first, self.first + self.max))

    @property
    def looks(self) -> tuple[int, ...]:
        """The planned number of seeds at each look: ``min``, ``min + step``, …, ``max``."""
        return (*range(self.min, self.max, self.step), self.max)

    def round_seeds(self, round_: int) -> tuple[int, ...]:
        """The seeds round ``round_`` (1-based) adds."""
        looks = self.looks
        if not 1 <= round_ <= len(looks):
            raise ValueError(f"round {round_} is outside 1..{len(looks)}")
        start = 0 if round_ == 1 else looks[round_ - 2]
        return self.seeds[start:looks[round_ - 1]]

    def round_of(self, seed: int) -> int:
        """The round a seed belongs to."""
        for round_ in range(1, len(self.looks) + 1):
            if seed in self.round_seeds(round_):
                return round_
        raise ValueError(f"seed {seed} is not among the rule's seeds {list(self.seeds)}")

    def to_json(self) -> dict[str, Any]:
        """The rule as plain JSON data (the spec's keys)."""
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, doc: Mapping[str, Any]) -> SeedRule:
        """The rule from :meth:`to_json`'s data or a spec's mapping; ``ValueError`` names an unknown key."""
        unknown = sorted(set(doc) - set(RULE_KEYS))
        if unknown:
            raise ValueError(f"{unknown[0]}: unknown key; the rule's keys are {list(RULE_KEYS)}")
        return cls(**dict(doc))
