import math

import numpy as np
import pytest
from scipy import stats

from harness.stats import summarize, summarize_seeds


def test_normal_interval_from_30_tasks_and_t_below():
    rng = np.random.default_rng(0)
    big, small = rng.normal(size=600), rng.normal(size=10)
    s = summarize(big, True)
    assert s.mean == pytest.approx(big.mean()) and s.n == 600
    assert s.ci95 == pytest.approx(1.959964 * big.std(ddof=1) / math.sqrt(600), rel=1e-6)
    t = summarize(small, True)
    assert t.ci95 == pytest.approx(stats.t.ppf(0.975, 9) * small.std(ddof=1) / math.sqrt(10))


def test_median_and_tasks_far_above_it():
    s = summarize(np.array([1.0] * 9 + [50.0]), True)
    assert s.median == 1.0 and s.over_10x_median == 1 and s.diverged == 0
    assert s.describe() == "5.9 ± 11"


def test_diverged_tasks_make_the_mean_infinite_and_are_counted():
    s = summarize(np.array([0.1, 0.2, np.nan, np.inf, 0.3]), True)
    assert s.diverged == 2 and math.isinf(s.mean) and s.median == pytest.approx(0.3)
    assert s.over_10x_median == 2
    assert s.describe() == "∞ (2 of 5 tasks diverged)"


def test_one_seed_is_exactly_the_summary_over_its_tasks():
    values = np.random.default_rng(1).normal(size=40)
    values[5] = np.nan
    assert summarize_seeds({3: values}, True) == summarize(values, True)


def test_the_bootstrap_resamples_tasks_within_each_seed():
    """Seeds far apart with little noise within each: the stratified interval reflects the noise within seeds (about
    1.96 * 0.1 / sqrt(150)), not the spread between them, which `seed_sd` reports."""
    rng = np.random.default_rng(0)
    by_seed = {s: 10.0 * s + rng.normal(0, 0.1, 50) for s in range(3)}
    pooled = np.concatenate(list(by_seed.values()))
    summary = summarize_seeds(by_seed, True)
    assert summary.mean == pytest.approx(pooled.mean()) and summary.n == 150 and summary.seeds == 3
    assert summary.ci95 == pytest.approx(1.959964 * 0.1 / math.sqrt(150), rel=0.15)
    assert summary.seed_sd == pytest.approx(np.std([v.mean() for v in by_seed.values()], ddof=1))
    low, high = summary.interval
    assert low < summary.mean < high and summary.ci95 == pytest.approx(max(summary.mean - low, high - summary.mean))
    assert summary.describe() == f"10 ± {summary.ci95:.2g} (seed sd 10, 3 seeds)"


def test_several_seeds_with_a_diverged_task_are_infinite_without_a_bootstrap():
    by_seed = {0: np.array([0.1, 0.2, 0.3]), 1: np.array([0.1, np.nan, 0.3])}
    summary = summarize_seeds(by_seed, True)
    assert math.isinf(summary.mean) and math.isinf(summary.ci95) and summary.interval is None
    assert summary.diverged == 1 and summary.seed_min == pytest.approx(0.2) and math.isinf(summary.seed_max)
    assert summary.describe() == "∞ (1 of 6 tasks diverged over 2 seeds)"
    higher = summarize_seeds(by_seed, lower_is_better=False)
    assert higher.mean == -math.inf and higher.over_10x_median is None
