import math

import numpy as np
import pytest
from scipy import stats

from harness.stats import summarize


def test_normal_interval_from_30_tasks_and_t_below():
    rng = np.random.default_rng(0)
    big, small = rng.normal(size=600), rng.normal(size=10)
    s = summarize(big)
    assert s.mean == pytest.approx(big.mean()) and s.n == 600
    assert s.ci95 == pytest.approx(1.959964 * big.std(ddof=1) / math.sqrt(600), rel=1e-6)
    t = summarize(small)
    assert t.ci95 == pytest.approx(stats.t.ppf(0.975, 9) * small.std(ddof=1) / math.sqrt(10))


def test_median_and_tasks_far_above_it():
    s = summarize(np.array([1.0] * 9 + [50.0]))
    assert s.median == 1.0 and s.over_10x_median == 1 and s.diverged == 0
    assert s.describe() == "5.9 ± 11"


def test_diverged_tasks_make_the_mean_infinite_and_are_counted():
    s = summarize(np.array([0.1, 0.2, np.nan, np.inf, 0.3]))
    assert s.diverged == 2 and math.isinf(s.mean) and s.median == pytest.approx(0.3)
    assert s.over_10x_median == 2
    assert s.describe() == "∞ (2 of 5 tasks diverged)"
