"""The sequential confirm phase's statistics: alpha spending, repeated intervals, decisions, their error rate
on null data by simulation, and the seeds a plan asks for."""

from __future__ import annotations

import math

import numpy as np
import pytest

from record import Decision, SeedRule
from results._sequential import (
    fixed_seeds,
    look_levels,
    looks,
    repeated_p,
    rule_text,
    seed_plan,
    simulate,
    spent,
)


@pytest.mark.parametrize(("t", "expected"), [(0.2, 0.0000), (0.4, 0.0019), (0.5, 0.0056), (0.6, 0.0114),
                                              (0.8, 0.0284), (1.0, 0.05)])
def test_obrien_fleming_spending_spends_what_lan_and_demets_tabulate(t: float, expected: float) -> None:
    # α*(t) = 2 − 2Φ(z_{α/2}/√t) at α = 0.05: at half the information 0.0056, the figure the literature quotes
    assert spent(t, 0.05, "obrien_fleming") == pytest.approx(expected, abs=6e-5)


@pytest.mark.parametrize(("t", "expected"), [(0.2, 0.0148), (0.6, 0.0354), (1.0, 0.05)])
def test_pocock_spending_is_alpha_times_log_of_one_plus_e_minus_one_t(t: float, expected: float) -> None:
    assert spent(t, 0.05, "pocock") == pytest.approx(expected, abs=6e-5)


@pytest.mark.parametrize("spending", ["obrien_fleming", "pocock"])
def test_the_levels_of_the_looks_are_positive_and_sum_to_alpha(spending: str) -> None:
    rule = SeedRule(min=3, max=9, step=2, spending=spending, alpha=0.1)
    levels = look_levels(rule)
    assert len(levels) == len(rule.looks) == 4
    assert all(level > 0 for level in levels)
    assert sum(levels) == pytest.approx(0.1)


@pytest.mark.parametrize("spending", ["obrien_fleming", "pocock"])
@pytest.mark.parametrize("margin", [None, 1.0])
def test_on_null_data_the_rule_says_better_or_worse_at_most_alpha_of_the_time(spending: str,
                                                                             margin: float | None) -> None:
    rule = SeedRule(min=3, max=10, step=1, spending=spending, alpha=0.05, margin=margin)
    sim = simulate(rule, effect=0.0, sd=1.0, runs=20000, seed=7)
    false = sim.shares[Decision.BETTER] + sim.shares[Decision.WORSE]
    assert false <= 0.05 + 3 * math.sqrt(0.05 * 0.95 / sim.runs)  # the guarantee, within Monte Carlo error
    assert sum(sim.shares.values()) == pytest.approx(1.0)


def test_a_naive_rule_that_tests_every_look_at_full_alpha_would_break_the_guarantee() -> None:
    # the contrast that makes the spending necessary: 8 looks each at 0.05 on the same null data
    rng = np.random.default_rng(7)
    d = rng.normal(0.0, 1.0, size=(20000, 10))
    from scipy import stats
    hit = np.zeros(len(d), dtype=bool)
    for n in range(3, 11):
        hit |= stats.ttest_1samp(d[:, :n], 0.0, axis=1).pvalue < 0.05
    assert hit.mean() > 0.1  # well over α: the false-positive inflation of repeated looks


def test_a_real_effect_is_found_and_stops_early_on_average() -> None:
    rule = SeedRule(min=3, max=12, step=1)
    sim = simulate(rule, effect=2.0, sd=1.0, runs=4000, seed=3)
    assert sim.shares[Decision.BETTER] > 0.95
    assert sim.mean_seeds < rule.max
    worse = simulate(rule, effect=-2.0, sd=1.0, runs=4000, seed=3)
    assert worse.shares[Decision.WORSE] > 0.95
    smaller_is_better = simulate(rule, effect=-2.0, sd=1.0, runs=4000, seed=3, mode="min")
    assert smaller_is_better.shares[Decision.BETTER] > 0.95


def test_with_a_margin_a_null_effect_is_declared_equivalent() -> None:
    rule = SeedRule(min=3, max=10, margin=2.0)
    sim = simulate(rule, effect=0.0, sd=1.0, runs=4000, seed=5)
    assert sim.shares[Decision.EQUIVALENT] > 0.9


def test_looks_stop_at_the_first_decision_with_a_repeated_interval() -> None:
    rule = SeedRule(min=3, max=5)
    rounds = [[5.0, 5.1, 4.9], [5.0, 5.1, 4.9, 5.05], [5.0, 5.1, 4.9, 5.05, 5.0]]
    seen = looks(rounds, rule, "max")
    assert len(seen) == 1 and seen[0].decision == Decision.BETTER
    first = seen[0]
    assert first.low > 0 and first.n == 3
    # the repeated interval is wider than the plain 95% one: it is taken at the look's share of α
    from scipy import stats
    plain = stats.ttest_1samp(rounds[0], 0.0).confidence_interval(0.95)
    assert first.low < plain.low and first.high > plain.high
    assert first.p_adjusted >= first.p


def test_an_open_comparison_stays_open_until_the_last_look_says_undecided() -> None:
    rule = SeedRule(min=3, max=5)
    noisy = [[1.0, -1.0, 0.5], [1.0, -1.0, 0.5, -0.4], [1.0, -1.0, 0.5, -0.4, 0.2]]
    seen = looks(noisy, rule, "max")
    assert [look.decision for look in seen] == [Decision.OPEN, Decision.OPEN, Decision.UNDECIDED]
    assert [look.n for look in seen] == [3, 4, 5]
    widths = [look.high - look.low for look in seen]
    assert widths[0] > widths[-1]  # the interval narrows as seeds come in


def test_failed_seeds_leave_a_look_without_an_interval() -> None:
    rule = SeedRule(min=2, max=3)
    seen = looks([[1.0], [1.0, float("nan")]], rule, "max")
    assert seen[0].decision == Decision.OPEN and math.isinf(seen[0].high)
    assert seen[1].decision == Decision.UNDECIDED


def test_the_repeated_p_value_is_the_alpha_at_which_the_design_would_have_decided() -> None:
    rule = SeedRule(min=3, max=5)
    p = repeated_p([0.001, 0.0004], rule)
    levels_at_p = look_levels(rule, p)
    assert any(obs <= lvl * (1 + 1e-6) for obs, lvl in zip([0.001, 0.0004], levels_at_p, strict=False))
    below = look_levels(rule, p * 0.99)
    assert not any(obs <= lvl for obs, lvl in zip([0.001, 0.0004], below, strict=False))
    assert repeated_p([], rule) == 1.0


def test_fixed_seeds_matches_the_textbook_paired_t_sample_size() -> None:
    # one-sample t, d = 1, α = 0.05 two-sided, power 0.8: 10 (as G*Power and pwr.t.test give)
    assert fixed_seeds(1.0, 1.0, 0.05, 0.8) == 10
    assert fixed_seeds(1.0, 0.5, 0.05, 0.8) == 34


def test_the_plan_needs_two_pairs_for_a_spread_and_then_gives_the_seeds() -> None:
    rule = SeedRule(min=3, max=10, detect=2.0)
    assert seed_plan("oc", [1.0], rule).sd is None
    plan = seed_plan("oc", [1.0, 3.0, 2.0], rule)
    assert plan.sd == pytest.approx(1.0)
    assert plan.fixed == fixed_seeds(1.0, 2.0, 0.05, 0.8)
    assert plan.power_at_detect is not None and 0 < plan.power_at_detect <= 1
    assert plan.seeds_at_detect is not None and rule.min <= plan.seeds_at_detect <= rule.max


def test_the_rule_reads_as_a_sentence() -> None:
    text = rule_text(SeedRule(min=3, max=8, step=1, margin=1.0, spending="obrien_fleming"))
    assert "3 seeds" in text and "±1" in text and "O'Brien–Fleming" in text and "n = 3, 4, 5, 6, 7, 8" in text


@pytest.mark.parametrize(("fields", "word"), [({"min": 1}, "min"), ({"max": 2}, "max"), ({"step": 0}, "step"),
                                               ({"alpha": 0.7}, "alpha"), ({"spending": "haybittle"}, "spending"),
                                               ({"margin": -1.0}, "margin"), ({"power": 1.0}, "power")])
def test_a_bad_rule_names_its_field(fields: dict[str, object], word: str) -> None:
    with pytest.raises(ValueError, match=f"^{word}:"):
        SeedRule(**fields)  # type: ignore[arg-type]


def test_rounds_take_the_seeds_in_order() -> None:
    rule = SeedRule(min=3, max=8, step=2, first=10)
    assert rule.looks == (3, 5, 7, 8)
    assert [rule.round_seeds(r) for r in range(1, 5)] == [(10, 11, 12), (13, 14), (15, 16), (17,)]
    assert rule.round_of(16) == 3
    assert SeedRule.from_json(rule.to_json()) == rule


@pytest.mark.parametrize("mode", ["max", "min"])
def test_the_vectorised_rule_decides_every_row_as_looks_does(mode: str) -> None:
    from results._sequential import decide_rows
    rule = SeedRule(min=3, max=7, step=2, margin=1.5, spending="pocock")
    rng = np.random.default_rng(11)
    d = rng.normal(rng.choice([-3.0, 0.0, 3.0], size=(300, 1)), 1.0, size=(300, rule.max))
    decided, used = decide_rows(d, rule, mode)
    for row, word, n in zip(d, decided, used, strict=True):
        seen = looks([row[:k].tolist() for k in rule.looks], rule, mode)
        assert str(seen[-1].decision) == word and seen[-1].n == n
    assert len(set(decided)) >= 3  # the rows reach several decisions, so the comparison means something
