"""Paired tests across seeds, from ``scipy.stats``: Student's paired t-test with its confidence interval,
and Wilcoxon's signed-rank test.

Both compare a cell with the baseline over the seeds they share: ``differences`` are, per seed, the cell's
value minus the baseline's.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats

WILCOXON_MIN_N = 5  # below it the exact two-sided p cannot go under 0.0625: too coarse to report


@dataclass(frozen=True)
class PairedTest:
    """A paired t-test of ``cell − baseline`` over ``n`` shared seeds (``p`` and the CI need n ≥ 2), and the
    Wilcoxon signed-rank p-value (``wilcoxon_p``, for n ≥ 5)."""

    n: int
    mean: float
    p: float | None
    ci_low: float | None
    ci_high: float | None
    wilcoxon_p: float | None = None


def t_quantile(q: float, df: float) -> float:
    """The ``q`` quantile of Student's t with ``df`` degrees of freedom."""
    return float(stats.t.ppf(q, df))


def wilcoxon_p(differences: Sequence[float]) -> float | None:
    """Two-sided Wilcoxon signed-rank p-value of ``differences`` against 0 (scipy's default method: exact
    for small n without ties or zeros); ``None`` below :data:`WILCOXON_MIN_N` or when every difference is 0."""
    d = np.asarray(differences, dtype=np.float64)
    if d.size < WILCOXON_MIN_N or not np.any(d != 0.0):
        return None
    return float(stats.wilcoxon(d, alternative="two-sided").pvalue)


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
    if se == 0.0:  # scipy gives NaN here; every seed moved by exactly the same amount
        return PairedTest(n, mean, 1.0 if mean == 0.0 else 0.0, mean, mean, wilcoxon_p(d.tolist()))
    result = stats.ttest_1samp(d, 0.0)
    ci = result.confidence_interval(confidence_level=level)
    return PairedTest(n, mean, float(result.pvalue), float(ci.low), float(ci.high), wilcoxon_p(d.tolist()))
