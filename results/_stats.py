"""A paired t-test across seeds, with numpy and math only (no scipy).

Student's t distribution through the regularized incomplete beta function: for ``t`` with ``df`` degrees
of freedom, ``P(|T| > |t|) = I_x(df/2, 1/2)`` with ``x = df / (df + t²)``. ``I`` is evaluated by its
continued fraction (Lentz's method, as in Numerical Recipes §6.4); the quantile for the confidence
interval by bisection on the CDF.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

EPS = 1e-15
TINY = 1e-300


def _beta_fraction(a: float, b: float, x: float) -> float:
    c, d = 1.0, 1.0 - (a + b) * x / (a + 1.0)
    d = 1.0 / (d if abs(d) > TINY else TINY)
    h = d
    for m in range(1, 500):
        for num in (m * (b - m) * x / ((a + 2 * m - 1) * (a + 2 * m)),
                    -(a + m) * (a + b + m) * x / ((a + 2 * m) * (a + 2 * m + 1))):
            d = 1.0 + num * d
            d = 1.0 / (d if abs(d) > TINY else TINY)
            c = 1.0 + num / c
            c = c if abs(c) > TINY else TINY
            h *= d * c
        if abs(d * c - 1.0) < EPS:
            break
    return h


def betainc(a: float, b: float, x: float) -> float:
    """The regularized incomplete beta function ``I_x(a, b)`` for ``a, b > 0`` and ``0 ≤ x ≤ 1``."""
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    log_front = math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x)
    if x < (a + 1.0) / (a + b + 2.0):
        return math.exp(log_front) * _beta_fraction(a, b, x) / a
    return 1.0 - math.exp(log_front) * _beta_fraction(b, a, 1.0 - x) / b


def t_two_sided_p(t: float, df: float) -> float:
    """``P(|T| ≥ |t|)`` for Student's t with ``df`` degrees of freedom."""
    if math.isinf(t):
        return 0.0
    return betainc(df / 2.0, 0.5, df / (df + t * t))


def t_cdf(t: float, df: float) -> float:
    """``P(T ≤ t)`` for Student's t with ``df`` degrees of freedom."""
    tail = 0.5 * t_two_sided_p(t, df)
    return 1.0 - tail if t > 0 else tail


def t_quantile(q: float, df: float) -> float:
    """The ``q`` quantile of Student's t (bisection on :func:`t_cdf`, to 1e-10)."""
    low, high = -1e3, 1e3
    for _ in range(200):
        mid = 0.5 * (low + high)
        if t_cdf(mid, df) < q:
            low = mid
        else:
            high = mid
        if high - low < 1e-10:
            break
    return 0.5 * (low + high)


@dataclass(frozen=True)
class PairedTest:
    """A paired t-test of ``cell − baseline`` over ``n`` shared seeds (``p`` and the CI need n ≥ 2)."""

    n: int
    mean: float
    p: float | None
    ci_low: float | None
    ci_high: float | None


def paired_t_test(differences: Sequence[float], level: float = 0.95) -> PairedTest:
    """Two-sided paired t-test of the mean difference against 0, with its ``level`` confidence interval.

    Args:
        differences: per seed, the cell's value minus the baseline's value for the same seed.
        level: the confidence level of the interval.
    """
    d = np.asarray(differences, dtype=np.float64)
    n = int(d.size)
    if n == 0:
        return PairedTest(0, math.nan, None, None, None)
    mean = float(d.mean())
    if n < 2:
        return PairedTest(n, mean, None, None, None)
    se = float(d.std(ddof=1)) / math.sqrt(n)
    if se == 0.0:
        p = 1.0 if mean == 0.0 else 0.0
        return PairedTest(n, mean, p, mean, mean)
    half = t_quantile(0.5 + level / 2.0, n - 1) * se
    return PairedTest(n, mean, t_two_sided_p(mean / se, n - 1), mean - half, mean + half)
