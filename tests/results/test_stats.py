"""The paired t-test without scipy: p-values and quantiles against reference values."""

from __future__ import annotations

import math

import numpy as np
import pytest

from results import paired_t_test
from results._stats import betainc, t_quantile, t_two_sided_p

# (t, df, two-sided p, 0.975 quantile) from scipy.stats.t (scipy 1.17)
REFERENCE = [
    (0.5, 1, 0.7048327646991335, 12.706204736174694),
    (2.1, 3, 0.1265652025496846, 3.1824463052837078),
    (-3.2, 4, 0.032900810600938975, 2.7764451051977934),
    (10.0, 2, 0.00985245702332569, 4.302652729749462),
    (0.01, 9, 0.9922394455363253, 2.262157162798205),
    (1.96, 1000, 0.050273184955748736, 1.9623390808264083),
]


@pytest.mark.parametrize(("t", "df", "p", "q"), REFERENCE)
def test_t_distribution_matches_reference_values(t: float, df: int, p: float, q: float) -> None:
    assert t_two_sided_p(t, df) == pytest.approx(p, rel=1e-9)
    assert t_quantile(0.975, df) == pytest.approx(q, rel=1e-8)


def test_betainc_edges_and_symmetry() -> None:
    assert betainc(2.0, 3.0, 0.0) == 0.0 and betainc(2.0, 3.0, 1.0) == 1.0
    assert betainc(1.0, 1.0, 0.3) == pytest.approx(0.3)  # uniform
    assert betainc(2.5, 1.5, 0.4) == pytest.approx(1 - betainc(1.5, 2.5, 0.6))


def test_paired_test_on_hand_values() -> None:
    d = [0.01, 0.03, -0.005, 0.02]
    test = paired_t_test(d)
    mean, se = np.mean(d), np.std(d, ddof=1) / 2
    assert test.n == 4 and test.mean == pytest.approx(mean)
    assert test.p == pytest.approx(0.16273310982429354, rel=1e-9)  # scipy.stats.ttest_1samp
    assert test.ci_low == pytest.approx(mean - 3.1824463052837078 * se, rel=1e-8)
    assert test.ci_high == pytest.approx(mean + 3.1824463052837078 * se, rel=1e-8)


def test_one_pair_gives_no_p_value_and_none_gives_nothing() -> None:
    one = paired_t_test([0.02])
    assert one.n == 1 and one.mean == 0.02 and one.p is None and one.ci_low is None
    none = paired_t_test([])
    assert none.n == 0 and math.isnan(none.mean) and none.p is None


def test_against_scipy_when_it_is_there() -> None:
    stats = pytest.importorskip("scipy.stats")
    rng = np.random.default_rng(0)
    for n in (2, 3, 5, 12):
        d = rng.normal(0.01, 0.02, n)
        ours = paired_t_test(d.tolist())
        theirs = stats.ttest_1samp(d, 0.0)
        assert ours.p == pytest.approx(float(theirs.pvalue), rel=1e-8)
