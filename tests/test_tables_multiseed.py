"""Tables over several seeds: pooled (seed, task) values, a stratified bootstrap interval, the spread between seeds,
and paired differences on the identical test task under the same seed."""
import math

import numpy as np
import pandas as pd
import pytest

from harness.protocols import Score
from harness.stats import summarize
from harness.store import RunRecord, Store
from harness.tables import SEVERAL_SEEDS, TableSpec, build, markdown, versus_paper

SPEC = TableSpec("t", "t", "sinusoid", "mse", {"5-shot": 5}, {"0 steps": 0}, {"a": "a", "b": "b"}, paired_with="b")
TASKS = 50


def store_of(tmp_path, values: dict[tuple[str, int], np.ndarray], profile: str = "paper") -> Store:
    """A store with one done run per (learner, seed) of `values`, scoring task i at 5 shots, step 0 with values[i]."""
    store = Store(tmp_path)
    for (learner, seed), scores in values.items():
        run_id = f"sinusoid-{learner}-{profile}-s{seed}"
        store.begin(RunRecord(run_id, "sinusoid", learner, profile, seed, "cpu", {"x": 1}, {}, None, "test"))
        store.finish(run_id, [Score(i, 5, 0, "mse", float(v)) for i, v in enumerate(scores)])
    return store


def normal(seed: int, loc: float = 1.0, scale: float = 0.5) -> np.ndarray:
    return np.random.default_rng(seed).normal(loc, scale, TASKS)


def cells(store: Store) -> pd.DataFrame:
    return build(SPEC, store, True).set_index("row")


def test_several_seeds_pool_the_values_bootstrap_the_interval_and_give_the_seed_spread(tmp_path):
    values = {("a", s): normal(s) for s in range(3)} | {("b", s): normal(10 + s) for s in range(3)}
    a = cells(store_of(tmp_path, values)).loc["a"]
    pooled = np.concatenate([values["a", s] for s in range(3)])
    means = [values["a", s].mean() for s in range(3)]
    assert a["mean"] == pytest.approx(pooled.mean()) and a["n"] == 150 and a["n_seeds"] == 3
    assert a["ci95"] == pytest.approx(1.959964 * pooled.std(ddof=1) / math.sqrt(150), rel=0.15)
    assert a["ci95_low"] < a["mean"] < a["ci95_high"]
    assert a["ci95"] == pytest.approx(max(a["mean"] - a["ci95_low"], a["ci95_high"] - a["mean"]))
    assert a["seed_sd"] == pytest.approx(np.std(means, ddof=1))
    assert (a["seed_min"], a["seed_max"]) == pytest.approx((min(means), max(means)))
    assert a["median"] == pytest.approx(np.median(pooled)) and a["seeds"] == "0,1,2"


def test_one_seed_cells_are_the_summary_over_tasks_as_before(tmp_path):
    a, b = normal(0), normal(1)
    a[3], b[3] = np.nan, np.nan  # task 3 diverged in both: inf - inf, left out of the difference
    table = cells(store_of(tmp_path, {("a", 0): a, ("b", 0): b}))
    for row, values in (("a", a), ("b", b)):
        old = summarize(values, True)
        got = table.loc[row]
        assert (got["mean"], got["ci95"], got["n"], got["median"], got["over_10x_median"], got["diverged"]) == \
            (old.mean, old.ci95, old.n, old.median, old.over_10x_median, old.diverged)
        assert got["n_seeds"] == 1 and pd.isna(got["seed_sd"]) and math.isinf(got["mean"])
    diff = summarize(np.delete(a - b, 3), True)
    assert (table.loc["a", "paired_diff"], table.loc["a", "paired_diff_ci95"]) == (diff.mean, diff.ci95)
    assert table.loc["a", "paired_seeds"] == "0" and pd.isna(table.loc["a", "paired_diff_seed_sd"])
    assert (table.loc["a", "paired_n"], table.loc["a", "paired_diverged"]) == (TASKS - 1, 0)


def test_paired_differences_pair_the_same_task_under_the_same_seed(tmp_path):
    """b is a plus a per-seed offset 1, 2, 3 and a little noise: the paired difference is -2 with a tiny interval and
    seed sd 1; pairing a task of one seed with that task of another seed would give a wide interval and no spread."""
    values = {("a", s): normal(s, scale=5.0) for s in range(3)}
    values |= {("b", s): values["a", s] + s + 1 + normal(10 + s, 0.0, 1e-3) for s in range(3)}
    a = cells(store_of(tmp_path, values)).loc["a"]
    assert a["paired_diff"] == pytest.approx(-2, abs=1e-3)
    assert a["paired_diff_ci95"] < 1e-3 < a["ci95"]
    assert a["paired_diff_seed_sd"] == pytest.approx(1, abs=1e-3) and a["paired_seeds"] == "0,1,2"


def test_a_seed_only_one_learner_has_is_left_out_of_the_paired_difference(tmp_path):
    values = {("b", s): normal(s) for s in range(2)}
    values |= {("a", s): values["b", s] + 1 for s in range(2)} | {("a", 2): normal(2) + 100}
    a = cells(store_of(tmp_path, values)).loc["a"]
    assert a["paired_diff"] == pytest.approx(1) and a["paired_seeds"] == "0,1" and a["paired_n"] == 2 * TASKS
    assert a["n_seeds"] == 3 and a["mean"] > 30  # the row itself keeps its third seed


def test_a_row_is_paired_with_the_base_learners_runs_of_its_own_profile(tmp_path):
    quick_b, quick_a, paper_b = normal(0), normal(1), normal(2) - 5.0
    store_of(tmp_path, {("a", 0): quick_a, ("b", 0): quick_b}, profile="quick")
    table = cells(store_of(tmp_path, {("b", 0): paper_b}))
    assert table.loc["b", "profile"] == "paper" and table.loc["a", "profile"] == "quick"
    assert table.loc["a", "paired_diff"] == pytest.approx((quick_a - quick_b).mean())  # not a - the paper's b
    (tmp_path / "alone").mkdir()
    store_of(tmp_path / "alone", {("a", 0): quick_a}, profile="quick")
    alone = cells(store_of(tmp_path / "alone", {("b", 0): paper_b}))
    assert pd.isna(alone.loc["a", "paired_diff"])  # no quick b to pair with


def test_tables_over_several_seeds_are_deterministic_and_say_how_they_pooled(tmp_path):
    store = store_of(tmp_path, {(learner, s): normal(10 * i + s) for i, learner in enumerate("ab") for s in range(3)})
    first, second = build(SPEC, store, True), build(SPEC, store, True)
    pd.testing.assert_frame_equal(first, second)
    text = markdown(SPEC, first)
    assert text == markdown(SPEC, second)
    assert SEVERAL_SEEDS in text and "seed sd" in text and "3 seeds)" in text
    assert "under the same seed, over the seeds both rows have" in text


def test_one_seed_markdown_says_nothing_of_seeds(tmp_path):
    text = markdown(SPEC, build(SPEC, store_of(tmp_path, {("a", 0): normal(0), ("b", 0): normal(1)}), True))
    assert SEVERAL_SEEDS not in text and "seed sd" not in text and "same seed" not in text


def test_the_paper_is_within_an_asymmetric_interval_by_its_bounds():
    assert versus_paper(0.0, 1.0, 1.5, True, (-0.5, 2.0)) == "within ci"
    assert versus_paper(0.0, 1.0, 1.5, True) == "better"
    assert versus_paper(0.0, 1.0, -0.9, True, (-0.5, 2.0)) == "short"
