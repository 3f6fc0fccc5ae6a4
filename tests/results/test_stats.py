"""The paired tests (scipy.stats) against values published in textbooks or computed by hand."""

from __future__ import annotations

import math

import pytest

from results import paired_t_test
from results._stats import t_quantile, wilcoxon_p

# Student (1908), "The probable error of a mean": the extra hours of sleep of 10 patients under two drugs
# (Cushny & Peebles' data, R's `sleep`); the differences drug 2 − drug 1.
SLEEP = [1.2, 2.4, 1.3, 1.3, 0.0, 1.0, 1.8, 0.8, 4.6, 1.4]


def test_sleep_data_paired_t_test_as_published() -> None:
    # R: t.test(extra ~ group, data = sleep, paired = TRUE): t = 4.0621, df = 9, p-value = 0.002833,
    # 95 percent confidence interval 0.7001142 2.4598858, mean difference 1.58.
    test = paired_t_test(SLEEP)
    assert test.n == 10 and test.mean == pytest.approx(1.58)
    assert test.p == pytest.approx(0.002833, abs=5e-7)
    assert test.ci_low == pytest.approx(0.7001142, abs=1e-7)
    assert test.ci_high == pytest.approx(2.4598858, abs=1e-7)


@pytest.mark.parametrize(("df", "q"), [(1, 12.706), (4, 2.776), (9, 2.262), (30, 2.042)])
def test_t_quantiles_match_the_printed_table(df: int, q: float) -> None:
    assert t_quantile(0.975, df) == pytest.approx(q, abs=5e-4)  # two-sided 5 % column of a t table


def test_wilcoxon_exact_p_values_by_hand() -> None:
    # n = 5, all five differences positive: W- = 0 has probability 1/2^5 under H0; two-sided 2/32.
    assert wilcoxon_p([0.1, 0.2, 0.3, 0.4, 0.5]) == pytest.approx(2 / 32)
    # n = 6, the smallest |d| negative: W- = 1; P(W- <= 1) = 2/64 (the empty set and {1}); two-sided 4/64.
    assert wilcoxon_p([0.5, -0.1, 0.3, 0.8, 0.2, 0.6]) == pytest.approx(4 / 64)
    assert wilcoxon_p([0.1, 0.2, 0.3, 0.4]) is None  # n < 5: not reported
    assert paired_t_test(SLEEP[:4]).wilcoxon_p is None


def test_one_pair_gives_no_p_value_and_none_gives_nothing() -> None:
    one = paired_t_test([0.02])
    assert one.n == 1 and one.mean == 0.02 and one.p is None and one.ci_low is None
    none = paired_t_test([])
    assert none.n == 0 and math.isnan(none.mean) and none.p is None


def test_identical_differences_give_a_zero_width_interval() -> None:
    same = paired_t_test([0.01, 0.01, 0.01])
    assert same.p == 0.0 and same.ci_low == same.ci_high == pytest.approx(0.01)
