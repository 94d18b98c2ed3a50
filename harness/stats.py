"""Summaries over test tasks: mean with its 95% interval, and the robust view (median, tasks far above it); with
several seeds, the values of all (seed, task) pairs pooled, a stratified bootstrap interval and the spread between
seeds.

A task whose adapted model diverged scores NaN or an infinity; NaN counts as the worst value (+inf for an error,
-inf for a score where higher is better), so the mean becomes infinite: it is reported, never dropped."""
from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, replace

import numpy as np
from scipy import stats

NORMAL_FROM = 30
"""From this many tasks on, the interval is the paper's normal approximation 1.96 * sd / sqrt(n); below, Student t."""
BOOTSTRAP_RESAMPLES = 5000
BOOTSTRAP_SEED = 0  # a fixed stream: the same store gives the same tables


@dataclass(frozen=True)
class Summary:
    mean: float
    ci95: float  # half-width
    n: int
    median: float
    over_10x_median: int | None  # errors above 10 x the median: the few that can dominate a mean (None: not an error)
    diverged: int  # tasks whose value is not finite
    seeds: int = 1  # with several, `n`, `median`, `over_10x_median` and `diverged` count (seed, task) pairs
    interval: tuple[float, float] | None = None  # the bootstrap's bounds (several seeds); None: mean ± ci95
    seed_sd: float = math.nan  # standard deviation (ddof 1) of the per-seed means; NaN with one seed
    seed_min: float = math.nan  # the lowest per-seed mean; NaN with one seed
    seed_max: float = math.nan  # the highest per-seed mean; NaN with one seed

    @property
    def low(self) -> float:
        return self.interval[0] if self.interval else self.mean - self.ci95

    @property
    def high(self) -> float:
        return self.interval[1] if self.interval else self.mean + self.ci95

    def describe(self) -> str:
        return describe(self.mean, self.ci95, self.n, self.diverged, self.seeds, self.seed_sd)


def describe(mean: float, ci95: float, n: int, diverged: int, seeds: int = 1, seed_sd: float = math.nan) -> str:
    """"mean ± ci", or the infinite mean's sign and how many tasks diverged ("-∞" where higher is better); with
    several seeds, also their number and the standard deviation of the per-seed means."""
    several = seeds > 1
    if diverged:
        sign = "-∞" if mean < 0 else "∞"
        return f"{sign} ({diverged} of {n} tasks diverged" + (f" over {seeds} seeds)" if several else ")")
    text = f"{fmt(mean)} ± {fmt(ci95, 2)}"
    return (text + f" (seed sd {fmt(seed_sd, 2)}, {seeds} seeds)") if several else text


def fmt(x: float, digits: int = 3) -> str:
    """A number for a table: `digits` significant digits, one decimal from 100 on."""
    return f"{x:.{digits}g}" if abs(x) < 100 else f"{x:.1f}"


def worst_for_nan(values: np.ndarray, lower_is_better: bool) -> np.ndarray:
    """`values` as floats with NaN replaced by the worst value: +inf for an error, -inf where higher is better."""
    values = np.asarray(values, dtype=float)
    return np.where(np.isnan(values), np.inf if lower_is_better else -np.inf, values)


def summarize(values: np.ndarray, lower_is_better: bool) -> Summary:
    """Mean, 95% interval half-width, median and (for errors) outlier count of per-task values; NaN counts as the
    worst value."""
    values = worst_for_nan(values, lower_is_better)
    n = len(values)
    if n == 0:
        raise ValueError("no values to summarize")
    diverged = int((~np.isfinite(values)).sum())
    sd = (values.std(ddof=1) if not diverged else math.inf) if n > 1 else math.nan
    z = 1.959963984540054 if n >= NORMAL_FROM else (stats.t.ppf(0.975, n - 1) if n > 1 else math.nan)
    median = float(np.median(values))
    outliers = int((values > 10 * median).sum()) if lower_is_better else None
    return Summary(float(values.mean()), float(z * sd / math.sqrt(n)), n, median, outliers, diverged)


def summarize_seeds(values_by_seed: Mapping[int, np.ndarray], lower_is_better: bool,
                    n_resamples: int = BOOTSTRAP_RESAMPLES) -> Summary:
    """`summarize` over the values of several seeds (per seed, one per test task), pooled: the mean of all (seed, task)
    values and a 95% percentile interval from a stratified bootstrap (`scipy.stats.bootstrap`, each seed a stratum
    whose tasks are resampled within it; fixed random stream), given as `interval` and as `ci95`, the larger distance
    from the mean to a bound; plus the spread of the per-seed means. NaN counts as the worst value; a value that is not
    finite makes the mean infinite, `ci95` infinite and `interval` None (no bootstrap). One seed: exactly `summarize`.
    Each seed needs two or more values when there are several seeds."""
    samples = [worst_for_nan(values, lower_is_better) for _, values in sorted(values_by_seed.items())]
    if not samples:
        raise ValueError("no seeds to summarize")
    pooled = summarize(np.concatenate(samples), lower_is_better)
    if len(samples) == 1:
        return pooled
    means = np.array([s.mean() for s in samples])
    spread = {"seeds": len(samples), "seed_min": float(means.min()), "seed_max": float(means.max()),
              "seed_sd": float(means.std(ddof=1)) if np.isfinite(means).all() else math.inf}
    if pooled.diverged:
        return replace(pooled, **spread)  # its ci95 is already infinite
    low, high = _stratified_bootstrap(samples, n_resamples)
    return replace(pooled, ci95=max(pooled.mean - low, high - pooled.mean), interval=(low, high), **spread)


def _pooled_mean(*samples: np.ndarray, axis: int = -1) -> np.ndarray:
    return np.concatenate(samples, axis=axis).mean(axis=axis)


def _stratified_bootstrap(samples: list[np.ndarray], n_resamples: int) -> tuple[float, float]:
    """95% percentile interval of the pooled mean, resampling each sample (stratum) within itself."""
    if min(len(s) for s in samples) < 2:
        raise ValueError("each seed needs two or more values for the bootstrap")
    result = stats.bootstrap(samples, _pooled_mean, n_resamples=n_resamples, batch=1000, vectorized=True,
                             method="percentile", rng=np.random.default_rng(BOOTSTRAP_SEED))
    return float(result.confidence_interval.low), float(result.confidence_interval.high)
