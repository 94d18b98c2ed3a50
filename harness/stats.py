"""Summaries over test tasks: mean with its 95% interval, and the robust view (median, tasks far above it).

A task whose adapted model diverged scores NaN or an infinity; NaN counts as the worst value (+inf for an error,
-inf for a score where higher is better), so the mean becomes infinite: it is reported, never dropped."""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import stats

NORMAL_FROM = 30
"""From this many tasks on, the interval is the paper's normal approximation 1.96 * sd / sqrt(n); below, Student t."""


@dataclass(frozen=True)
class Summary:
    mean: float
    ci95: float  # half-width
    n: int
    median: float
    over_10x_median: int | None  # errors above 10 x the median: the few that can dominate a mean (None: not an error)
    diverged: int  # tasks whose value is not finite

    def describe(self) -> str:
        return describe(self.mean, self.ci95, self.n, self.diverged)


def describe(mean: float, ci95: float, n: int, diverged: int) -> str:
    """"mean ± ci", or how many tasks diverged when the mean is infinite."""
    if diverged:
        return f"∞ ({diverged} of {n} tasks diverged)"
    return f"{fmt(mean)} ± {fmt(ci95, 2)}"


def fmt(x: float, digits: int = 3) -> str:
    """A number for a table: `digits` significant digits, one decimal from 100 on."""
    return f"{x:.{digits}g}" if abs(x) < 100 else f"{x:.1f}"


def summarize(values: np.ndarray, lower_is_better: bool = True) -> Summary:
    """Mean, 95% interval half-width, median and (for errors) outlier count of per-task values; NaN counts as the
    worst value."""
    values = np.asarray(values, dtype=float)
    values = np.where(np.isnan(values), np.inf if lower_is_better else -np.inf, values)
    n = len(values)
    if n == 0:
        raise ValueError("no values to summarize")
    diverged = int((~np.isfinite(values)).sum())
    sd = (values.std(ddof=1) if not diverged else math.inf) if n > 1 else math.nan
    z = 1.959963984540054 if n >= NORMAL_FROM else (stats.t.ppf(0.975, n - 1) if n > 1 else math.nan)
    median = float(np.median(values))
    outliers = int((values > 10 * median).sum()) if lower_is_better else None
    return Summary(float(values.mean()), float(z * sd / math.sqrt(n)), n, median, outliers, diverged)
