"""The regression checks of CI beyond the sinusoid (`.ci/run`): a classification suite (Omniglot, accuracy) and an RL
suite (2D navigation, return), where higher is better. Their committed references tell a broken learner from the
real one, the verdicts follow the suite's direction (a lower accuracy or return is worse, a diverged task the worst
score: -inf), and `check` fails a learner whose adaptation is broken, end to end, on each suite (smoke profile with
overrides: seconds)."""
import argparse
import math
import shlex
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from harness import regression
from harness.cli import main, parser
from harness.config import parse_assignments
from harness.plugins import registry
from harness.runner import RunSpec, configure
from plugins.maml import MAML

CI = Path(__file__).parents[1] / ".ci" / "run"
REFERENCES = Path(__file__).parents[1] / "results" / "reference"
REG = registry()


def ci_checks() -> dict[str, argparse.Namespace]:
    """The `python -m harness check` commands of `.ci/run` by suite, parsed as the CLI parses them."""
    lines = CI.read_text().replace("\\\n", " ").splitlines()  # continued lines joined
    commands = [shlex.split(line) for line in lines if "-m harness check" in line]
    parsed = [parser().parse_args(words[words.index("harness") + 1:]) for words in commands]
    return {args.suite: args for args in parsed}


CHECKS = ci_checks()
HIGHER_IS_BETTER = sorted(suite for suite in CHECKS if not REG.suite(suite).lower_is_better)


def committed(suite: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The committed reference and seed spread of CI's check of `suite`."""
    args = CHECKS[suite]
    overrides = parse_assignments(args.set)
    return (regression.load_reference(regression.reference_path(REFERENCES, suite, args.profile, overrides)),
            regression.load_seeds(regression.seeds_path(REFERENCES, suite, args.profile, overrides)))


def verdicts(suite: str, new: pd.DataFrame, lower_is_better: bool | None = None) -> pd.Series:
    """Verdict by (learner, step) of `new` against the committed reference and spread of `suite`'s CI check, in the
    suite's direction unless `lower_is_better` is given."""
    reference, spread = committed(suite)
    direction = REG.suite(suite).lower_is_better if lower_is_better is None else lower_is_better
    result = regression.compare(reference, new, direction, seeds=spread)
    return result.set_index(["learner", "step"]).verdict


def test_ci_checks_a_classification_suite_and_an_rl_suite_besides_the_sinusoid():
    assert {"sinusoid", "omniglot", "navigation2d"} <= set(CHECKS)
    assert {REG.suite(s).kind for s in CHECKS} == {"supervised", "rl"}
    assert {"omniglot", "navigation2d"} <= set(HIGHER_IS_BETTER)


@pytest.mark.parametrize("suite", HIGHER_IS_BETTER)
def test_committed_reference_fits_the_ci_command(suite):
    """Each learner of the command has its reference and a spread of at least MIN_SEEDS seeds per cell, over the
    test tasks its config evaluates: CI compares like with like instead of failing on a protocol mismatch."""
    args = CHECKS[suite]
    reference, spread = committed(suite)
    learners = (args.learners.split(",") if args.learners else
                [name for name, p in REG.learners.items() if p.obj.applies_to(REG.suite(suite))])
    assert sorted(set(reference.learner)) == sorted(learners)
    assert spread.groupby(regression.CELL).seed.nunique().min() >= regression.MIN_SEEDS
    for learner in learners:
        _, config = configure(RunSpec(suite, learner, args.profile, overrides=parse_assignments(args.set)), REG)
        tasks = reference[reference.learner == learner].groupby(regression.CELL).task.nunique()
        assert set(tasks) == {config["eval_tasks"]}


@pytest.mark.parametrize("suite", HIGHER_IS_BETTER)
def test_the_same_scores_are_the_same(suite):
    reference, _ = committed(suite)
    assert set(verdicts(suite, reference.copy())) == {"same"}


@pytest.mark.parametrize("suite", HIGHER_IS_BETTER)
def test_broken_adaptation_fails_every_learner_that_adaptation_helps(suite):
    """A learner whose adaptation does nothing scores after every step what it scored before the first: MAML and
    first-order MAML are worse after every step, and every learner fails but the oracle, which sees the goal and
    gains little from adapting at this budget (after one step its return is below the step-0 one)."""
    reference, _ = committed(suite)
    before = reference[reference.step == 0].set_index(["learner", "shots", "task"]).value
    broken = reference.assign(value=before.reindex(pd.MultiIndex.from_frame(reference[["learner", "shots", "task"]]))
                              .to_numpy())
    result = verdicts(suite, broken)
    steps = result.index.get_level_values("step")
    assert set(result[steps == 0]) == {"same"}
    assert set(result[(steps > 0) & result.index.get_level_values("learner").isin(["maml", "fomaml"])]) == {"worse"}
    failed = set(result[result == "worse"].index.get_level_values("learner"))
    assert failed == set(reference.learner) - {"oracle"}


def shifted(suite: str, sign: int) -> pd.DataFrame:
    """The committed reference of `suite` with every task moved by `sign` times its cell's seed interval's width
    plus 10% of its |mean|: beyond both the seed spread and the relative tolerance."""
    reference, spread = committed(suite)
    cells = regression.compare(reference, reference, REG.suite(suite).lower_is_better, seeds=spread).set_index(
        regression.CELL)
    margin = (cells.seed_high - cells.seed_low + 0.1 * cells.ref_mean.abs()).rename("margin")
    moved = reference.join(margin, on=regression.CELL)
    return reference.assign(value=moved.value + sign * moved.margin)


@pytest.mark.parametrize("suite", HIGHER_IS_BETTER)
def test_lower_scores_are_worse_and_higher_ones_better_in_the_suites_direction(suite):
    lower, higher = shifted(suite, -1), shifted(suite, 1)
    assert set(verdicts(suite, lower)) == {"worse"}
    assert set(verdicts(suite, higher)) == {"better"}
    assert set(verdicts(suite, lower, lower_is_better=True)) == {"better"}  # the wrong direction passes a regression


@pytest.mark.parametrize("suite", HIGHER_IS_BETTER)
def test_diverged_tasks_count_as_minus_infinity_and_are_worse(suite):
    reference, _ = committed(suite)
    scores = reference.assign(value=np.where(reference.task % 2 == 0, math.nan, reference.value))
    new = regression.reduce(scores, lower_is_better=False)
    assert (new.value[reference.task % 2 == 0] == -math.inf).all()
    assert set(verdicts(suite, new)) == {"worse"}


SMOKE = {  # overrides of the smoke profile at which adapting the smoke-trained model clearly helps (navigation: with
    # the released code's step sizes; at 0.1 and 2 paths per step it barely does)
    "omniglot": ["eval_tasks=50"],
    "navigation2d": ["eval_tasks=30", "eval_trajectories=20", "inner_lr=0.5", "later_inner_lr=0.25"],
}


@pytest.mark.parametrize("suite", sorted(SMOKE))
def test_check_passes_the_real_learner_and_fails_broken_adaptation(tmp_path, capsys, monkeypatch, request, suite):
    """`check --update`, then the same learner passes (exit 0, every cell "same") and MAML with adaptation steps of
    size 0 fails (exit 1, "worse" after each step): the CLI compares in the suite's direction."""
    if suite == "omniglot":
        request.getfixturevalue("omniglot")  # the real data (skipped without it)
    argv = ["check", "--suite", suite, "--learners", "maml", "--profile", "smoke", "--reference", str(tmp_path / "ref"),
            "--quiet", *(f"--set={item}" for item in SMOKE[suite])]
    assert main([*argv, "--out", str(tmp_path / "runs"), "--update"]) == 0
    assert [p.name for p in (tmp_path / "ref").iterdir()] == [f"{suite}-smoke-{'-'.join(sorted(SMOKE[suite]))}.csv"]
    capsys.readouterr()
    assert main([*argv, "--out", str(tmp_path / "runs")]) == 0
    out = capsys.readouterr().out
    assert out.count("| same ") == 3 and "| worse " not in out

    monkeypatch.setattr(MAML, "eval_step_sizes", lambda self, steps: [0.0] * steps)  # adaptation does nothing
    assert main([*argv, "--out", str(tmp_path / "degraded")]) == 1
    out, err = capsys.readouterr()
    assert out.count("| worse ") == 2 and out.count("| same ") == 1  # steps 1 and 2; step 0 is unchanged
    assert err.splitlines()[-1] == "check failed: worse than the reference: maml"
