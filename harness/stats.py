"""Summaries over test tasks: mean with its 95% interval, and the robust view (median, tasks far above it)."""
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
    over_10x_median: int  # tasks whose value exceeds 10 x the median: the few that can dominate a mean


def summarize(values: np.ndarray) -> Summary:
    """Mean, 95% interval half-width, median and outlier count of per-task values."""
    values = np.asarray(values, dtype=float)
    n = len(values)
    if n == 0:
        raise ValueError("no values to summarize")
    sd = values.std(ddof=1) if n > 1 else math.nan
    z = 1.959963984540054 if n >= NORMAL_FROM else (stats.t.ppf(0.975, n - 1) if n > 1 else math.nan)
    median = float(np.median(values))
    return Summary(float(values.mean()), float(z * sd / math.sqrt(n)), n, median, int((values > 10 * median).sum()))
