"""The four locomotion suites on the spine: every applicable learner runs unchanged (smoke), the oracle sees the
task, and Table 5, the extended tables and Figure 5 come out of the store."""
import sqlite3

import pytest

from harness import runner
from harness.cli import main
from harness.plugins import registry
from plugins.locomotion import AntDirection, CheetahDirection, LocomotionSuite

REG = registry()
SUITES = ["ant-direction", "ant-velocity", "cheetah-direction", "cheetah-velocity"]
LEARNERS = ["context", "fomaml", "maml", "oracle", "pretrain", "scratch"]


def test_the_four_suites_and_the_six_learners_of_the_paper():
    assert sorted(name for name, p in REG.suites.items() if issubclass(p.obj, LocomotionSuite)) == SUITES
    for suite in SUITES:
        assert sorted(n for n, p in REG.learners.items() if p.obj.applies_to(REG.suites[suite].obj)) == LEARNERS


@pytest.mark.parametrize("profile", ["quick", "paper"])
@pytest.mark.parametrize("suite", SUITES)
def test_every_profile_is_a_valid_config(suite, profile):
    for learner in LEARNERS:
        runner.prepare(runner.RunSpec(suite, learner, profile), REG)  # raises UsageError on a bad value


def test_paper_profiles_follow_the_released_settings():
    cheetah, ant = CheetahDirection.profiles["paper"], AntDirection.profiles["paper"]
    assert (cheetah["meta_batch"], cheetah["trajectories"], cheetah["eval_trajectories"]) == (40, 20, 20)
    assert (ant["trajectories"], ant["eval_trajectories"]) == (40, 40)
    assert cheetah["inner_lr"] == 0.1 and cheetah["later_inner_lr"] == 0.05 and cheetah["eval_tasks"] == 40
    assert cheetah["meta_iterations"] == 500 and cheetah["eval_steps"] == 3
    assert cheetah["variant"] == ant["variant"] == "rllab"


@pytest.mark.parametrize("suite", SUITES)
def test_smoke_run_of_every_learner(tmp_path, suite):
    out = tmp_path / "out"
    assert main(["run", "--suite", suite, "--learners", ",".join(LEARNERS), "--profile", "smoke", "--out", str(out),
                 "--quiet"]) == 0
    db = sqlite3.connect(out / "results.sqlite")
    smoke = REG.suites[suite].obj.profiles["smoke"]
    rows = db.execute("SELECT learner, step, COUNT(*), MIN(value), MAX(value) FROM scores JOIN runs USING (run_id) "
                      "GROUP BY learner, step").fetchall()
    assert {(r[0], r[1]) for r in rows} == {(n, s) for n in LEARNERS for s in range(smoke["eval_steps"] + 1)}
    assert all(r[2] == smoke["eval_tasks"] for r in rows)
    assert all(-2000 < r[3] <= r[4] < 2000 for r in rows)  # 200 steps of bounded rewards: finite and plausible
    assert db.execute("SELECT DISTINCT shots FROM scores").fetchall() == [(smoke["eval_trajectories"],)]


def test_table_5_the_extended_tables_and_figure_5(tmp_path):
    import pandas as pd
    out, results, figures = str(tmp_path / "out"), tmp_path / "tables", tmp_path / "figures"
    assert main(["run", "--suite", "cheetah-direction", "--learners", "maml,context", "--profile", "smoke",
                 "--set", "eval_trajectories=20", "--out", out, "--quiet"]) == 0
    assert main(["report", "--out", out, "--results", str(results), "--figures", str(figures), "--tables",
                 "table5,table5-extended-cheetah-direction,table5-extended-ant-velocity"]) == 0
    table5 = pd.read_csv(results / "table5.csv").set_index(["setting", "row", "column"])
    maml = table5.loc[("forward/backward", "MAML", "1 step")]
    assert maml.paper == 293.19 and maml.n == 2 and maml.profile == "smoke"
    assert table5.loc[("forward/backward", "context vector", "1 step")].paper == -44.08
    extended = pd.read_csv(results / "table5-extended-cheetah-direction.csv").set_index(["setting", "row", "column"])
    assert extended.loc[("forward/backward", "oracle", "0 steps")].paper == 442.7
    assert pd.isna(extended.loc[("forward/backward", "oracle", "0 steps")]["mean"])  # not run here
    ant = pd.read_csv(results / "table5-extended-ant-velocity.csv")
    assert ant["mean"].isna().all() and ant.paper.notna().any()
    assert (figures / "figure5-cheetah-direction.png").stat().st_size > 0
    assert not (figures / "figure5-ant-velocity.png").exists()  # no runs: not drawn


def test_every_profile_runs_rllabs_environments_and_a_bad_variant_exits_2(tmp_path, capsys):
    """Every profile runs rllab's robots: the cheetah's policies see 20 observations (the oracle 21), the ant's 125;
    `--set variant=gymnasium` gives gymnasium v5's 17 and 105 (other runs); an unknown variant is a one-line error,
    exit 2, nothing written."""
    out = str(tmp_path / "out")
    assert main(["run", "--suite", "cheetah-direction", "--learners", "maml,oracle", "--profile", "smoke",
                 "--out", out, "--quiet"]) == 0
    db = sqlite3.connect(tmp_path / "out" / "results.sqlite")
    assert db.execute("SELECT COUNT(DISTINCT run_id) FROM scores").fetchone() == (2,)
    maml = runner.prepare(runner.RunSpec("cheetah-direction", "maml", "smoke"), REG)
    oracle = runner.prepare(runner.RunSpec("cheetah-direction", "oracle", "paper"), REG)
    assert maml.config["variant"] == "rllab" and maml.suite.make_model().mean[0].in_features == 20
    assert oracle.suite.make_model(extra_inputs=1).mean[0].in_features == 21
    gym = runner.prepare(runner.RunSpec("cheetah-direction", "maml", "smoke", overrides={"variant": "gymnasium"}), REG)
    assert gym.suite.make_model().mean[0].in_features == 17 and gym.run_id != maml.run_id
    for variant, inputs in (("rllab", 125), ("gymnasium", 105)):
        ant = runner.prepare(runner.RunSpec("ant-velocity", "maml", "paper", overrides={"variant": variant}), REG)
        assert ant.suite.make_model().mean[0].in_features == inputs
    capsys.readouterr()
    assert main(["run", "--suite", "cheetah-velocity", "--learners", "maml", "--profile", "smoke", "--set",
                 "variant=mujoco-py", "--out", str(tmp_path / "bad"), "--quiet"]) == 2
    error = capsys.readouterr().err.strip()
    assert error.count("\n") == 0 and "variant" in error, error
    assert not (tmp_path / "bad").exists()
