"""The regression check: the statistical rule on synthetic scores, the reference file, and `check` end to end."""
import math

import numpy as np
import pandas as pd
import pytest

from harness import regression
from harness.cli import main
from harness.errors import UsageError
from harness.protocols import Adapted
from plugins.maml import MAML

RNG = np.random.default_rng(0)
REFERENCE = RNG.lognormal(mean=-1.0, sigma=1.0, size=100)  # per-task errors: skewed, like MSEs


def frame(values, learner="maml", shots=5, step=1):
    """One cell of reference-form scores."""
    return pd.DataFrame({"learner": learner, "metric": "mse", "shots": shots, "step": step,
                         "task": range(len(values)), "value": values})


def verdict(new, reference=REFERENCE, lower_is_better=True, **kwargs):
    (row,) = regression.compare(frame(reference), frame(new), lower_is_better, **kwargs).itertuples()
    return row.verdict


def test_identical_scores_are_the_same_with_p_1():
    result = regression.compare(frame(REFERENCE), frame(REFERENCE.copy()), True)
    assert result.verdict.tolist() == ["same"] and result.p_value.tolist() == [1.0]
    assert result.mean_diff.tolist() == [0.0]


def test_clearly_worse_is_worse_and_clearly_better_is_better():
    assert verdict(REFERENCE * 1.3) == "worse"
    assert verdict(REFERENCE * 0.7) == "better"


def test_float_noise_within_the_tolerance_is_the_same_even_when_significant():
    shifted = REFERENCE * (1 + 0.01)  # every task 1% worse: significant over 100 tasks, but far below 5%
    assert regression.one_sided_p(shifted - REFERENCE)[0] < 1e-10
    assert verdict(shifted) == "same"
    assert verdict(REFERENCE * (1 + RNG.normal(scale=0.002, size=REFERENCE.size))) == "same"


def test_a_large_change_of_the_mean_without_evidence_is_the_same():
    new = REFERENCE.copy()
    new[0] += 50  # one task much worse: the mean jumps, but one task is no evidence of a shift
    assert verdict(new) == "same"


def test_diverged_new_tasks_are_worse_and_nan_counts_as_diverged():
    for bad in (math.inf, math.nan):
        new = REFERENCE.copy()
        new[::2] = bad  # half the tasks diverge: the median moves far up
        assert verdict(new) == "worse"
    both = REFERENCE.copy()
    both[:3] = math.inf
    assert verdict(both, reference=both.copy()) == "same"  # the same tasks diverged before and after


def test_direction_is_a_parameter_for_metrics_where_higher_is_better():
    accuracy = RNG.uniform(0.5, 0.9, size=100)
    assert verdict(accuracy * 0.8, reference=accuracy, lower_is_better=False) == "worse"
    assert verdict(accuracy * 1.1, reference=accuracy, lower_is_better=False) == "better"


def test_where_higher_is_better_a_diverged_task_is_minus_infinity_and_worse():
    accuracy = RNG.uniform(50, 90, size=100)
    scores = frame(np.where(np.arange(100) % 2 == 0, math.nan, accuracy))
    reduced = regression.reduce(scores, lower_is_better=False)
    assert (reduced.value[::2] == -math.inf).all()
    assert verdict(reduced.value.to_numpy(), reference=accuracy, lower_is_better=False) == "worse"
    assert verdict(accuracy, reference=reduced.value.to_numpy(), lower_is_better=False) == "better"
    both = accuracy.copy()
    both[:3] = -math.inf
    assert verdict(both, reference=both.copy(), lower_is_better=False) == "same"


def test_relative_worsening_of_negative_returns():
    assert regression.relative_worsening(-20.0, -25.0, lower_is_better=False) == pytest.approx(0.25)
    assert regression.relative_worsening(-20.0, -15.0, lower_is_better=False) == pytest.approx(-0.25)
    assert regression.relative_worsening(-20.0, -math.inf, lower_is_better=False) == math.inf


def test_where_higher_is_better_the_seed_spread_bounds_from_below():
    accuracy = RNG.uniform(50, 90, size=100)
    lower = accuracy - 0.1 * accuracy.mean()  # every task 10% worse: significant and beyond the tolerance
    centre = accuracy.mean()
    def spread(sd):
        centres = centre + sd * np.array([-1.5, -1, -0.5, 0, 0, 0.5, 1, 1.5])
        return pd.DataFrame({"learner": "maml", "metric": "mse", "shots": 5, "step": 1, "seed": range(8),
                             "centre": centres})
    assert verdict(lower, reference=accuracy, lower_is_better=False, seeds=spread(0.5)) == "worse"
    assert verdict(lower, reference=accuracy, lower_is_better=False, seeds=spread(5.0)) == "same"  # within the spread
    assert verdict(accuracy + 0.1 * centre, reference=accuracy, lower_is_better=False, seeds=spread(0.5)) == "better"


def test_bonferroni_correction_over_the_cells_compared():
    reference, new = np.ones(8), np.full(8, 2.0)  # 8 tasks all worse: exact one-sided p = 1/256
    one = regression.compare(frame(reference), frame(new), True)
    assert one.verdict.tolist() == ["worse"] and one.p_value[0] == pytest.approx(1 / 256)
    cells = lambda values: pd.concat([frame(values, step=step) for step in (0, 1, 2)])
    three = regression.compare(cells(reference), cells(new), True)  # 3/256 > 0.01
    assert three.verdict.tolist() == ["same"] * 3 and three.p_value[0] == pytest.approx(3 / 256)


def test_cells_without_reference_are_reported_and_not_counted():
    reference, new = frame(np.ones(8)), pd.concat([frame(np.full(8, 2.0)), frame(np.ones(8), learner="other")])
    result = regression.compare(reference, new, True).set_index("learner")
    assert result.verdict.to_dict() == {"maml": "worse", "other": "no reference"}
    assert math.isnan(result.loc["other", "ref_mean"]) and result.loc["maml", "p_value"] == pytest.approx(1 / 256)


def test_a_reference_that_does_not_match_the_protocol_is_a_usage_error():
    with pytest.raises(UsageError, match="test tasks differ"):
        regression.compare(frame(np.ones(8)), frame(np.ones(10)), True)
    with pytest.raises(UsageError, match="no such cell"):
        regression.compare(pd.concat([frame(np.ones(8)), frame(np.ones(8), step=10)]), frame(np.ones(8)), True)


def test_reduce_keeps_steps_0_1_5_and_the_last_rounded_with_diverged_tasks_as_inf():
    scores = pd.concat([frame([1 / 3, math.nan], step=step) for step in range(11)]).assign(run_id="r")
    reduced = regression.reduce(scores, True)
    assert list(reduced.columns) == regression.COLUMNS
    assert sorted(set(reduced.step)) == [0, 1, 5, 10]
    assert reduced.value.tolist()[:2] == [0.333333, math.inf]


def test_reference_file_round_trip_with_infinities(tmp_path):
    path = tmp_path / "sinusoid-smoke.csv"
    reference = regression.reduce(pd.concat([frame([0.123456789, math.inf, 2e-9], step=s) for s in (0, 1, 2)]), True)
    regression.write_reference(path, reference)
    assert path.read_text().splitlines()[:3] == ["learner,metric,shots,step,task,value", "maml,mse,5,0,0,0.123457",
                                                 "maml,mse,5,0,1,inf"]
    loaded = regression.load_reference(path)
    pd.testing.assert_frame_equal(loaded, reference)
    assert list(tmp_path.iterdir()) == [path]  # no temporary file left behind
    merged = regression.replace_learners(loaded, reference.assign(learner="fomaml"))
    assert sorted(set(merged.learner)) == ["fomaml", "maml"] and len(merged) == 2 * len(reference)


@pytest.mark.parametrize("text,message", [
    ("learner,shots,step,task,value\nmaml,5,1,0,0.5\n", "missing columns metric"),
    ("learner,metric,shots,step,task,value\nmaml,mse,5,1,0,0.5\nmaml,mse,5,1", "truncated"),
    ("learner,metric,shots,step,task,value\nmaml,mse,5,1,0,0.5\nmaml,mse,5,1,1,\n", "data row 2"),
    ("learner,metric,shots,step,task,value\nmaml,mse,5,1,0,0.5\nmaml,mse,5,1,0,0.5\n", "appears twice"),
    ("learner,metric,shots,step,task,value\nmaml,mse,5,1,0,high\n", "non-numbers"),
    ("learner,metric,shots,step,task,value\nmaml,mse,5,1.5,0,0.5\n", "column step"),
    ("", "truncated"),
])
def test_malformed_reference_files_are_usage_errors(tmp_path, text, message):
    path = tmp_path / "ref.csv"
    path.write_text(text)
    with pytest.raises(UsageError, match=message) as caught:
        regression.load_reference(path)
    assert "--update" in str(caught.value) and "\n" not in str(caught.value)


def test_reference_file_names_carry_the_config_overrides_sorted_by_key(tmp_path):
    overrides = {"meta_iterations": "50", "eval_tasks": "200"}
    assert regression.reference_path(tmp_path, "omniglot", "quick", overrides) == \
        tmp_path / "omniglot-quick-eval_tasks=200-meta_iterations=50.csv"
    assert regression.seeds_path(tmp_path, "omniglot", "quick", overrides) == \
        tmp_path / "omniglot-quick-eval_tasks=200-meta_iterations=50-seeds.csv"
    assert regression.reference_path(tmp_path, "sinusoid", "quick") == tmp_path / "sinusoid-quick.csv"
    for bad in ({"data": "a/b"}, {"meta_lr": ""}, {"k y": "1"}):
        with pytest.raises(UsageError, match="letters, digits"):
            regression.reference_path(tmp_path, "sinusoid", "quick", bad)


def test_missing_reference_file_says_to_update_first(tmp_path):
    with pytest.raises(UsageError, match="--update first"):
        regression.load_reference(tmp_path / "none.csv")
    assert regression.load_reference(tmp_path / "none.csv", missing_ok=True).empty


def check(tmp_path, out, *extra, learners="maml"):
    return main(["check", "--suite", "sinusoid", "--learners", learners, "--profile", "smoke",
                 "--out", str(tmp_path / out), "--reference", str(tmp_path / "ref"), *extra])


def test_check_end_to_end_update_pass_fail_and_no_reference(tmp_path, capsys, monkeypatch):
    assert check(tmp_path, "runs", "--update") == 0
    written = pd.read_csv(tmp_path / "ref" / "sinusoid-smoke.csv")
    assert set(written.learner) == {"maml"} and sorted(set(written.step)) == [0, 1, 2]
    capsys.readouterr()

    assert check(tmp_path, "runs") == 0  # the finished run is reused: identical scores
    out, err = capsys.readouterr()
    assert "skipped" in err and out.count("| same ") == 9

    adapt = MAML.adapt
    def degraded(self, suite, state, tasks, steps):  # predictions shifted by 3: every task's MSE grows by about 9
        for a in adapt(self, suite, state, tasks, steps):
            yield Adapted(lambda p, x, forward=a.forward: forward(p, x) + 3.0, a.params)
    monkeypatch.setattr(MAML, "adapt", degraded)
    assert check(tmp_path, "degraded") == 1
    out, err = capsys.readouterr()
    assert out.count("| worse ") == 9
    assert err.splitlines()[-1] == "check failed: worse than the reference: maml"
    monkeypatch.setattr(MAML, "adapt", adapt)

    assert check(tmp_path, "runs", learners="fomaml") == 0
    out, err = capsys.readouterr()
    assert out.count("| no reference ") == 9 and "no reference for fomaml" in err and "--update" in err
    assert check(tmp_path, "runs", "--update", learners="fomaml") == 0
    assert set(pd.read_csv(tmp_path / "ref" / "sinusoid-smoke.csv").learner) == {"maml", "fomaml"}


def test_check_with_overrides_has_its_own_reference(tmp_path, capsys):
    assert check(tmp_path, "runs", "--set", "meta_iterations=3", "--update") == 0
    assert [p.name for p in (tmp_path / "ref").iterdir()] == ["sinusoid-smoke-meta_iterations=3.csv"]
    capsys.readouterr()
    assert check(tmp_path, "runs", "--set", "meta_iterations=3") == 0
    assert capsys.readouterr().out.count("| same ") == 9
    assert check(tmp_path, "runs") == 2  # the profile without the override: another config, no reference
    assert "--update first" in capsys.readouterr().err


def test_check_update_records_the_seed_spread_and_the_check_uses_it(tmp_path, capsys):
    assert check(tmp_path, "runs", "--update", "--spread-seeds", "3") == 0
    spread = pd.read_csv(tmp_path / "ref" / "sinusoid-smoke-seeds.csv")
    assert list(spread.columns) == regression.SEED_COLUMNS and sorted(set(spread.seed)) == [0, 1, 2]
    assert len(spread) == 3 * 9  # 3 shots x 3 steps, each seed
    reference = pd.read_csv(tmp_path / "ref" / "sinusoid-smoke.csv")
    seed0 = spread[spread.seed == 0].set_index(["shots", "step"]).centre
    means = reference.groupby(["shots", "step"]).value.mean()
    assert np.allclose(seed0.sort_index(), means.sort_index(), rtol=1e-5)  # the per-task rows are seed 0's
    capsys.readouterr()
    assert check(tmp_path, "runs") == 0
    out = capsys.readouterr().out
    assert out.count("| same ") == 9 and "prediction interval" in out
    assert check(tmp_path, "runs", "--update") == 0  # new seed-0 runs' reference: the old spread is dropped
    assert pd.read_csv(tmp_path / "ref" / "sinusoid-smoke-seeds.csv").empty


BAD = [
    (["--learners", "mam"], "unknown learner 'mam'"),
    (["--suite", "sinus"], "unknown suite 'sinus'"),
    (["--profile", "huge"], "unknown profile 'huge'"),
    ([], "--update first"),
    (["--spread-seeds", "3"], "use it with --update"),
    (["--set", "meta_iterations"], "not KEY=VALUE"),
    (["--set", "bogus=1"], "unknown key"),
]


@pytest.mark.parametrize("extra,message", BAD, ids=[m for _, m in BAD])
def test_bad_input_is_one_line_exit_2_and_runs_nothing(tmp_path, capsys, extra, message):
    argv = ["check", "--suite", "sinusoid", "--learners", "maml", "--profile", "smoke", "--out", str(tmp_path / "runs"),
            "--reference", str(tmp_path / "ref")]
    for flag, value in zip(extra[::2], extra[1::2]):
        if flag in argv:
            argv[argv.index(flag) + 1] = value
        else:
            argv += [flag, value]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and message in err
    assert list(tmp_path.iterdir()) == []


def test_malformed_reference_file_is_exit_2_before_any_run(tmp_path, capsys):
    (tmp_path / "ref").mkdir()
    (tmp_path / "ref" / "sinusoid-smoke.csv").write_text("learner,metric,shots,step,task,value\nmaml,mse,5,1,0,0.")
    assert check(tmp_path, "runs") == 2
    err = capsys.readouterr().err
    assert err.startswith("error: reference file") and "malformed" in err and err.count("\n") == 1
    assert not (tmp_path / "runs").exists()
