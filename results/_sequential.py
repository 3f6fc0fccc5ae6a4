"""The sequential confirm phase's statistics: alpha spending over looks, the repeated confidence interval and
p-value at each look, the decision, its error rate by simulation, and the plan of how many seeds a cell needs.

The design (:class:`record.SeedRule`) looks at the paired differences ``cell − baseline`` after every round.
Look ``k`` (planned seeds ``n_k``, information fraction ``t_k = n_k / max``) spends
``α(t_k) − α(t_{k−1})`` of the total ``alpha``, by one of Lan and DeMets' spending functions
(Lan & DeMets 1983, Biometrika 70:659):

- ``obrien_fleming``: ``α(t) = 2 − 2 Φ(z_{1−α/2} / √t)`` (little early, most at the end);
- ``pocock``: ``α(t) = α · ln(1 + (e − 1) t)`` (evenly).

At each look the two-sided paired t interval at that look's level is the *repeated confidence interval*
(Jennison & Turnbull 2000, *Group Sequential Methods*, ch. 9). The levels sum to ``alpha``, so the chance that
any look's interval excludes a true Δ = 0 is at most ``alpha`` by the union bound: exact t intervals at each
look, no normal approximation of the joint law of the looks, hence conservative (the simulation in the tests
measures how much). Group-sequential boundaries computed from that joint law (as R's gsDesign does) assume a
known variance, which seeds of a training run do not give; no maintained Python library offers the t-based
version, so this module uses scipy's t and normal laws directly.

Decisions (:class:`record.Decision`): *better* / *worse* when the interval excludes 0 (by the metric's mode),
*equivalent* when it lies within ``±margin``, *undecided* at the last look, else *open*. Differences are in
the metric's reported unit (percentage points for mIoU).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats

from record import Decision, SeedRule


def spent(t: float, alpha: float, spending: str) -> float:
    """The alpha spent by information fraction ``t`` (0 ≤ t ≤ 1) under the named spending function."""
    if t <= 0.0:
        return 0.0
    t = min(t, 1.0)
    if spending == "obrien_fleming":
        return float(2.0 - 2.0 * stats.norm.cdf(stats.norm.ppf(1.0 - alpha / 2.0) / math.sqrt(t)))
    if spending == "pocock":
        return float(alpha * math.log(1.0 + (math.e - 1.0) * t))
    raise ValueError(f"spending {spending!r} is none of obrien_fleming, pocock")


def look_levels(rule: SeedRule, alpha: float | None = None) -> tuple[float, ...]:
    """The two-sided level each look tests at (they sum to ``alpha``, the rule's by default)."""
    alpha = rule.alpha if alpha is None else alpha
    fractions = [n / rule.max for n in rule.looks]
    cumulative = [spent(t, alpha, rule.spending) for t in fractions]
    return tuple(b - a for a, b in zip([0.0, *cumulative[:-1]], cumulative, strict=True))


@dataclass(frozen=True)
class Look:
    """One look at a setting's paired differences: ``n`` pairs, the look's ``level`` (alpha spent at it), the
    mean Δ, the repeated confidence interval ``[low, high]`` at ``1 − level``, the unadjusted paired t ``p``,
    the repeated p-value ``p_adjusted`` (the smallest ``alpha`` at which the design would have decided by this
    look) and the decision."""

    round: int
    n: int
    level: float
    mean: float
    low: float
    high: float
    p: float
    p_adjusted: float
    decision: Decision


def _interval(d: np.ndarray, level: float) -> tuple[float, float, float, float]:
    """Mean, the two-sided ``1 − level`` t interval and the t-test's p-value of ``d`` (n ≥ 2)."""
    n, mean = d.size, float(d.mean())
    se = float(d.std(ddof=1)) / math.sqrt(n)
    if se == 0.0:
        return mean, mean, mean, 1.0 if mean == 0.0 else 0.0
    half = float(stats.t.ppf(1.0 - level / 2.0, n - 1)) * se
    p = float(2.0 * stats.t.sf(abs(mean) / se, n - 1))
    return mean, mean - half, mean + half, p


def _decide(low: float, high: float, margin: float | None, mode: str) -> Decision | None:
    if low > 0.0 or high < 0.0:
        above = low > 0.0
        return Decision.BETTER if above == (mode == "max") else Decision.WORSE
    if margin is not None and -margin < low and high < margin:
        return Decision.EQUIVALENT
    return None


def repeated_p(p_values: Sequence[float], rule: SeedRule) -> float:
    """The repeated p-value after looks with unadjusted p-values ``p_values`` (look 1 first): the smallest
    ``alpha`` for which some look's p-value is under that look's level (bisection; 1 when none would be)."""
    def rejects(alpha: float) -> bool:
        levels = look_levels(rule, alpha)
        return any(p <= level for p, level in zip(p_values, levels, strict=False))

    if not p_values or not rejects(1.0 - 1e-12):
        return 1.0
    low, high = 0.0, 1.0 - 1e-12
    for _ in range(60):
        mid = (low + high) / 2.0
        low, high = (low, mid) if rejects(mid) else (mid, high)
    return high


def looks(differences: Sequence[Sequence[float]], rule: SeedRule, mode: str) -> list[Look]:
    """The looks of one setting, round by round, until the first decision.

    Args:
        differences: per round (1 first), every paired difference available after it (cumulative: the
            pairs of earlier rounds and the new ones; a seed whose run failed on either side has no pair).
        rule: the design.
        mode: ``max`` when larger is better, else ``min``.
    """
    levels = look_levels(rule)
    out: list[Look] = []
    p_values: list[float] = []
    for index, pairs in enumerate(differences):
        if index >= len(levels):
            break
        d = np.asarray(pairs, dtype=np.float64)
        d = d[np.isfinite(d)]
        last = index == len(levels) - 1
        if d.size < 2:
            mean = float(d.mean()) if d.size else math.nan
            out.append(Look(index + 1, int(d.size), levels[index], mean, -math.inf, math.inf, math.nan,
                            repeated_p(p_values, rule), Decision.UNDECIDED if last else Decision.OPEN))
            continue
        mean, low, high, p = _interval(d, levels[index])
        p_values.append(p)
        decision = _decide(low, high, rule.margin, mode) or (Decision.UNDECIDED if last else Decision.OPEN)
        out.append(Look(index + 1, int(d.size), levels[index], mean, low, high, p, repeated_p(p_values, rule),
                        decision))
        if decision != Decision.OPEN:
            break
    return out


# ---------------------------------------------------------------------------------------------------
# The rule's behaviour, by simulation, and the plan before the spend
# ---------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Simulated:
    """How a rule behaves when the true mean Δ is ``effect`` and the seed-to-seed spread of Δ is ``sd``:
    the share of runs ending in each decision and the mean number of seeds a setting used."""

    effect: float
    sd: float
    runs: int
    shares: dict[Decision, float]
    mean_seeds: float


def decide_rows(d: np.ndarray, rule: SeedRule, mode: str = "max") -> tuple[np.ndarray, np.ndarray]:
    """The rule run on each row of ``d`` (rows: settings; columns: the per-seed Δ in seed order, ``max`` of
    them), vectorised: each row's decision word and the seeds it used. :func:`looks` on one row decides alike
    (a test holds the two together)."""
    runs = d.shape[0]
    decided = np.full(runs, "", dtype=object)
    used = np.full(runs, rule.max, dtype=np.int64)
    for index, (n, level) in enumerate(zip(rule.looks, look_levels(rule), strict=True)):
        head = d[:, :n]
        mean = head.mean(axis=1)
        se = head.std(axis=1, ddof=1) / math.sqrt(n)
        half = float(stats.t.ppf(1.0 - level / 2.0, n - 1)) * se
        low, high = mean - half, mean + half
        open_ = decided == ""
        excludes = (low > 0) | (high < 0)
        better = excludes & ((low > 0) if mode == "max" else (high < 0))
        worse = excludes & ~better
        equivalent = ((low > -rule.margin) & (high < rule.margin) & ~excludes if rule.margin is not None
                      else np.zeros(runs, dtype=bool))
        for mask, word in ((better, Decision.BETTER), (worse, Decision.WORSE), (equivalent, Decision.EQUIVALENT)):
            hit = open_ & mask
            decided[hit], used[hit] = str(word), n
            open_ &= ~hit
        if index == len(rule.looks) - 1:
            decided[open_] = str(Decision.UNDECIDED)
    return decided, used


def simulate(rule: SeedRule, effect: float, sd: float, runs: int = 4000, seed: int = 0,
             mode: str = "max") -> Simulated:
    """Run the rule on ``runs`` simulated settings whose per-seed Δ is normal(``effect``, ``sd``)."""
    rng = np.random.default_rng(seed)
    decided, used = decide_rows(rng.normal(effect, sd, size=(runs, rule.max)), rule, mode)
    shares = {word: float(np.mean(decided == str(word))) for word in
              (Decision.BETTER, Decision.WORSE, Decision.EQUIVALENT, Decision.UNDECIDED)}
    return Simulated(effect, sd, runs, shares, float(used.mean()))


def fixed_seeds(sd: float, detect: float, alpha: float, power: float, limit: int = 1000) -> int | None:
    """The seeds a fixed-size paired t-test at level ``alpha`` (two-sided) needs to detect a mean Δ of
    ``detect`` with probability ``power`` when Δ varies by ``sd`` between seeds (noncentral t; ``None``
    beyond ``limit``)."""
    if sd <= 0.0:
        return 2
    for n in range(2, limit + 1):
        crit = float(stats.t.ppf(1.0 - alpha / 2.0, n - 1))
        shift = detect / sd * math.sqrt(n)
        got = float(stats.nct.sf(crit, n - 1, shift) + stats.nct.cdf(-crit, n - 1, shift))
        if got >= power:
            return n
    return None


@dataclass(frozen=True)
class SeedPlan:
    """For one setting: the seed-to-seed spread of Δ seen so far (``sd``, from ``pairs`` pairs), the seeds a
    fixed design needs to detect ``detect`` with ``power``, and under the study's rule: the chance of a
    "better" decision when the true Δ is ``detect``, and the mean seeds used at Δ = ``detect`` and at 0."""

    cell: str
    pairs: int
    sd: float | None
    fixed: int | None
    power_at_detect: float | None
    seeds_at_detect: float | None
    seeds_at_zero: float | None


def seed_plan(cell: str, differences: Sequence[float], rule: SeedRule, mode: str = "max",
              runs: int = 2000) -> SeedPlan:
    """What one setting needs, from the paired differences seen so far (at least two, else the spread is
    unknown and only the bounds of the rule apply)."""
    d = np.asarray(differences, dtype=np.float64)
    d = d[np.isfinite(d)]
    if d.size < 2:
        return SeedPlan(cell, int(d.size), None, None, None, None, None)
    sd = float(d.std(ddof=1))
    effect = rule.detect if mode == "max" else -rule.detect
    at = simulate(rule, effect, max(sd, 1e-9), runs, mode=mode)
    zero = simulate(rule, 0.0, max(sd, 1e-9), runs, seed=1, mode=mode)
    return SeedPlan(cell, int(d.size), sd, fixed_seeds(sd, rule.detect, rule.alpha, rule.power),
                    at.shares[Decision.BETTER], at.mean_seeds, zero.mean_seeds)


def rule_text(rule: SeedRule) -> str:
    """The design in one sentence, for a footnote and the dry run."""
    margin = (f"or its interval lies within ±{rule.margin:g} (equivalent)" if rule.margin is not None
              else "(no equivalence margin)")
    name = {"obrien_fleming": "O'Brien–Fleming-type", "pocock": "Pocock-type"}[rule.spending]
    return (f"sequential confirm: {rule.min} seeds, then {rule.step} more per round to at most {rule.max} while "
            f"undecided; a setting is decided when its paired interval excludes 0 {margin}; α = {rule.alpha:g} "
            f"spent over the looks at n = {', '.join(str(n) for n in rule.looks)} by a Lan–DeMets {name} "
            "spending function, each look a t interval at its share of α (repeated confidence intervals; the "
            "union bound keeps the chance of any false 'better' or 'worse' at or under α)")


SPREADS = (0.5, 1.0, 2.0)  # assumed seed-to-seed spreads of Δ, as multiples of ``detect``, before any is seen


def plan_lines(rule: SeedRule, settings: int, concurrency: int, trial_s: float | None = None,
               observed: dict[str, list[float]] | None = None, mode: str = "max") -> list[str]:
    """The plan before the spend: per setting compared with the baseline, the seeds it needs to detect a Δ
    of ``rule.detect`` with ``rule.power`` (a fixed design, and under the rule: the chance of "better" and
    the mean seeds used), what the phase costs in trials (and hours at ``trial_s`` seconds a trial with
    ``concurrency`` at once), from the spread seen so far (``observed``: paired differences per setting) or,
    where none is seen yet, for assumed spreads.

    Args:
        settings: how many chosen settings the phase compares with the baseline (the baseline not counted).
    """
    def cost(seeds: float) -> str:
        trials = seeds * (settings + 1)
        hours = "" if trial_s is None else f", ≈ {trials * trial_s / max(concurrency, 1) / 3600:.2g} h"
        return f"{trials:.0f} trials{hours}"

    lines = [f"seeds to detect Δ = {rule.detect:g} with power {rule.power:g} (α = {rule.alpha:g}), by the "
             "seed-to-seed spread σ of Δ (rule: mean seeds used, by simulation):",
             f"  {'setting':<28} {'σ':>6} {'fixed design':>12} {'rule: P(better)':>15} "
             f"{f'seeds if Δ = {rule.detect:g}':>14} {'seeds if Δ = 0':>14}"]
    rows: list[tuple[str, SeedPlan]] = []
    seen = {k: v for k, v in (observed or {}).items() if len([x for x in v if math.isfinite(x)]) >= 2}
    for key, diffs in seen.items():
        rows.append((key, seed_plan(key, diffs, rule, mode)))
    if not seen:
        for factor in SPREADS:
            sd = factor * rule.detect
            rows.append((f"(if σ = {sd:g})", seed_plan("", [-sd / math.sqrt(2), sd / math.sqrt(2)], rule, mode)))
    for key, plan in rows:
        fixed = "> 1000" if plan.fixed is None else str(plan.fixed)
        lines.append(f"  {key:<28} {plan.sd or 0:>6.2f} {fixed:>12} {plan.power_at_detect or 0:>15.2f} "
                     f"{plan.seeds_at_detect or 0:>14.1f} {plan.seeds_at_zero or 0:>14.1f}")
    short = [key for key, plan in rows if plan.fixed is None or plan.fixed > rule.max]
    if short:
        lines.append(f"  max = {rule.max} seeds is short of what a fixed design needs for: {', '.join(short)};")
        lines.append("  raise confirm.seeds.max, or accept that a smaller Δ may end undecided")
    lines.append(f"  cost: {cost(rule.min)} if every setting is decided in the first round;")
    lines.append(f"        up to {cost(rule.max)} at the maximum")
    if not seen:
        lines.append("  (σ is measured once two seeds of a setting and the baseline have run: the search phase's end")
        lines.append("   prints it when the search ran several seeds, and each round of the confirm phase after)")
    return lines
