"""2D navigation on the spine: every applicable learner runs unchanged (smoke), the RL trainer's Hessian-vector
product is the KL's Hessian, and the test protocol scores each step on the paths the next step adapts on."""
import sqlite3

import pytest
import torch
from torch.func import functional_call

from harness.cli import main
from harness.functional import step_sizes
from harness.models import FunctionalModel
from harness.plugins import registry
from harness.protocols import Adapted
from harness.runner import RunSpec, prepare
from harness.training import Adaptation
from plugins.maml import MAML
from plugins.navigation2d import PAPER, Navigation2D
from plugins.rl.evaluation import STEP_SIZES, RolloutEvaluator
from plugins.rl.policy_gradient import rollout
from plugins.rl.trpo import fisher_vector_product, flatten_params, unflatten_params

REG = registry()
LEARNERS = sorted(name for name, p in REG.learners.items() if p.obj.applies_to(Navigation2D))


def test_the_applicable_learners_are_the_six_of_the_paper():
    assert LEARNERS == ["context", "fomaml", "maml", "oracle", "pretrain", "scratch"]


@pytest.mark.parametrize("learner", LEARNERS)
def test_smoke_run_of_every_learner(tmp_path, learner):
    out = str(tmp_path / "out")
    assert main(["run", "--suite", "navigation2d", "--learners", learner, "--profile", "smoke", "--out", out,
                 "--quiet"]) == 0
    rows = sqlite3.connect(tmp_path / "out" / "results.sqlite").execute(
        "SELECT step, COUNT(*), AVG(value) FROM scores GROUP BY step ORDER BY step").fetchall()
    smoke = Navigation2D.profiles["smoke"]
    assert [r[0] for r in rows] == list(range(smoke["eval_steps"] + 1))
    assert all(r[1] == smoke["eval_tasks"] for r in rows)
    assert all(-200 < r[2] < 0 for r in rows)  # minus distances over at most 100 steps


def test_a_gpu_device_is_a_usage_error(tmp_path, capsys):
    if torch.cuda.is_available():
        pytest.skip("the error is about asking for a GPU where the suite runs on the CPU; here one exists")
    assert main(["run", "--suite", "navigation2d", "--learners", "maml", "--profile", "smoke", "--device", "cuda",
                 "--out", str(tmp_path)]) == 2


@pytest.mark.parametrize("first_order", [False, True])
def test_the_trainers_hessian_product_is_the_hessian_of_the_mean_kl(first_order):
    torch.manual_seed(0)
    config = {**PAPER, "meta_batch": 3, "trajectories": 2, "cg_subsample": 1.0}
    suite = Navigation2D(config)
    net = FunctionalModel(suite, "cpu")
    params = {k: p.detach() for k, p in net.params.items()}
    adaptation = Adaptation(step_sizes(0.1, 1), None, first_order)
    _, kl, fvp, _ = suite.trainer(config).objective(net, params, adaptation, torch.Generator().manual_seed(1), False)
    reference = fisher_vector_product(params, kl, damping=0.0)  # differentiating the KL twice (third order)
    for seed in range(3):
        v = torch.randn(flatten_params(params).shape, generator=torch.Generator().manual_seed(seed))
        hv, expected = fvp(v), reference(v)
        assert (hv - expected).norm() <= 1e-5 * expected.norm()  # float32 (the environment's precision)
        assert hv.dot(v) > 0  # a KL's Hessian: positive semi-definite


def test_the_trainers_surrogate_gradient_is_second_order_through_the_inner_step():
    """TRPO's loss as the trainer builds it (the adapted policies' likelihood-ratio surrogate, a function of the
    shared parameters through the inner step) has the gradient of its central differences; the first-order one
    does not. A smooth (tanh) policy: a ReLU network's inner gradient jumps where a unit's input crosses zero,
    which no derivative sees, so its differences are noise at any step length."""
    torch.manual_seed(0)
    config = {**PAPER, "meta_batch": 3, "trajectories": 2, "inner_lr": 0.5}
    suite = Navigation2D(config)
    net = FunctionalModel(suite, "cpu")
    for i, layer in enumerate(net.module.mean):
        if isinstance(layer, torch.nn.ReLU):
            net.module.mean[i] = torch.nn.Tanh()
    params = {k: p.detach() for k, p in net.params.items()}
    flat = flatten_params(params)
    gradients = {}
    for first_order in (False, True):
        adaptation = Adaptation(step_sizes(config["inner_lr"], 1), None, first_order)
        loss, _, _, _ = suite.trainer(config).objective(net, params, adaptation, torch.Generator().manual_seed(1),
                                                         False)
        leaf = flat.clone().requires_grad_()
        (gradients[first_order],) = torch.autograd.grad(loss(unflatten_params(leaf, params)), leaf)
    v = gradients[False] / gradients[False].norm()
    eps = 1e-2
    with torch.no_grad():
        numeric = (loss(unflatten_params(flat + eps * v, params)) - loss(unflatten_params(flat - eps * v, params)))
    numeric = numeric.item() / (2 * eps)
    assert numeric == pytest.approx(gradients[False].dot(v).item(), rel=1e-2)
    assert abs(gradients[True].dot(v).item() - numeric) > 0.03 * abs(numeric)  # 6% here


def test_evaluation_scores_each_step_on_the_paths_the_next_step_adapts_on():
    config = {**Navigation2D.profiles["smoke"], "eval_steps": 2}
    suite = Navigation2D(config)
    learner = MAML({**config, "first_order": False, "vectorize": "vmap"})
    torch.manual_seed(0)
    state = FunctionalModel(suite, "cpu").state_dict()
    evaluator = RolloutEvaluator.from_config(config, torch.device("cpu"))
    tasks = evaluator.tasks(suite)
    support = tasks.renew
    seen = []
    sample = support.sample
    support.sample = lambda forward, params: seen.append(params) or sample(forward, params)
    adapted: list[Adapted] = list(learner.adapt(suite, state, tasks, 2))
    # adaptation alone asks once per step for the support of the current policies: steps 0 and 1
    assert [id(p) for p in seen] == [id(a.params) for a in adapted[:2]]
    # the paths the evaluator scores at a step are the cached ones the next step adapted on
    first = support.sample(adapted[1].forward, adapted[1].params)
    assert first is support.sample(adapted[1].forward, adapted[1].params)
    # the second step used half the first step size (later_inner_lr 0.05 after inner_lr 0.1)
    assert learner.eval_step_sizes(3) == [0.1, 0.05, 0.05]


def test_frozen_test_goals_do_not_depend_on_the_learner_or_their_number():
    suite = Navigation2D(Navigation2D.profiles["paper"])
    forty = RolloutEvaluator.from_config(suite.config, torch.device("cpu")).tasks(suite).features
    two = RolloutEvaluator(2, 40, 3, 0.99).tasks(suite).features
    assert forty.shape == (40, 2) and torch.equal(forty[:2], two)
    assert (forty.abs() <= 0.5).all()


def test_oracle_policy_sees_the_goal():
    suite = Navigation2D(Navigation2D.profiles["smoke"])
    net = FunctionalModel(suite, "cpu", features=2)
    obs, goal = torch.zeros(3, 5, 2), torch.tensor([0.3, -0.2])
    outputs = net.forward({**net.params, "task_features": goal}, obs)
    expected = functional_call(net.module, dict(net.module.named_parameters()),
                               (torch.cat([obs, goal.expand(3, 5, 2)], -1),))
    torch.testing.assert_close(outputs, expected)


def test_table_4_the_extended_table_and_figure_4(tmp_path):
    import pandas as pd
    out, results, figures = str(tmp_path / "out"), tmp_path / "tables", tmp_path / "figures"
    assert main(["run", "--suite", "navigation2d", "--learners", "maml,context,scratch", "--profile", "smoke",
                 "--set", "trajectories=20", "--set", "eval_trajectories=40", "--out", out, "--quiet"]) == 0
    assert main(["report", "--out", out, "--results", str(results), "--figures", str(figures), "--tables",
                 "table4,table4-extended"]) == 0
    table4 = pd.read_csv(results / "table4.csv").set_index(["setting", "row", "column"])
    maml = table4.loc[("20 trajectories", "MAML", "1 step")]
    assert maml.paper == -11.68 and maml.n == 2
    db = sqlite3.connect(tmp_path / "out" / "results.sqlite")
    (expected,) = db.execute("SELECT AVG(value) FROM scores JOIN runs USING (run_id) WHERE learner = 'maml' "
                             "AND step = 1").fetchone()
    assert maml["mean"] == pytest.approx(expected)
    extended = pd.read_csv(results / "table4-extended.csv").set_index(["setting", "row", "column"])
    assert extended.loc[("20 trajectories", "random init", "3 steps")].paper == -46.81
    assert extended.loc[("20 trajectories", "random init", "2 steps")].n == 2  # scratch (smoke: up to 2 steps)
    oracle = extended.loc[("20 trajectories", "oracle", "0 steps")]
    assert oracle.paper == -2.29 and pd.isna(oracle["mean"])  # not run here
    assert (figures / "figure4.png").stat().st_size > 0


def test_baselines_fine_tune_with_the_step_size_best_on_validation_goals():
    config = Navigation2D.profiles["smoke"]
    suite = Navigation2D(config)
    torch.manual_seed(0)
    net = FunctionalModel(suite, "cpu")
    recorded, bars, rollouts = {}, [], []
    rollout = suite.rollout
    suite.rollout = lambda *args, **kwargs: rollouts.append(1) or rollout(*args, **kwargs)

    def iterations(self, start, total, desc):  # the bar's positions, and the rollouts made when it moved on
        bars.append((desc, total))
        for i in range(start, total):
            bars.append(len(rollouts))
            yield i

    ctx = type("Ctx", (), {"record": lambda self, key, value: recorded.update({key: value}),
                           "iterations": iterations})()
    table = suite.trainer(config).step_sizes(net, ctx)
    returns = recorded["step_size_validation"][str(config["eval_trajectories"])]
    assert list(returns) == [str(lr) for lr in STEP_SIZES]
    # one candidate validated (eval_steps + 1 batches of rollouts) between moves of the "tune step size" bar
    per_candidate = config["eval_steps"] + 1
    assert bars == [("tune step size", len(STEP_SIZES)), *range(0, len(rollouts), per_candidate)]
    best = max(returns, key=returns.get)
    assert table.tolist() == [[config["eval_trajectories"], float(best)]]
    # validation goals are not the test goals
    val = RolloutEvaluator(2, 2, 1, 0.99, split="val").tasks(suite).features
    assert not torch.equal(val, RolloutEvaluator(2, 2, 1, 0.99).tasks(suite).features)


class ScriptedContext:
    """A `TrainContext` in memory: checkpoints every iteration, records kept."""

    def __init__(self, config):
        self.config, self.device, self.saved, self.records = config, torch.device("cpu"), None, {}

    def generator(self, iteration, stream="batch"):
        return torch.Generator().manual_seed(iteration)

    def iterations(self, start, total, desc="meta-train"):
        return iter(range(start, total))

    def log(self, iteration, loss):
        pass

    def checkpoint_due(self, iteration):
        return True

    def save_checkpoint(self, state):
        self.saved = state

    def load_checkpoint(self):
        return self.saved

    def record(self, key, value):
        self.records[key] = value


@pytest.mark.parametrize("keep_best", [True, False])
def test_the_trained_model_is_the_iterate_with_the_best_training_return(monkeypatch, keep_best):
    """Iterate i (the policy before step i) is the initial one + i and its paths return RETURNS[i]. With keep_best
    the model is iterate 1 (return 5), though training stopped after iteration 2 and resumed; without, the last."""
    returns = [1.0, 5.0, 2.0, 3.0]
    config = {**PAPER, "meta_iterations": len(returns), "keep_best": keep_best}
    suite = Navigation2D(config)
    trainer = suite.trainer(config)
    monkeypatch.setattr(trainer, "objective", lambda net, params, adaptation, generator, features: (
        None, None, None, returns[generator.initial_seed()]))
    monkeypatch.setattr("plugins.rl.trainer.trpo_step", lambda params, *a: (
        {k: v + 1 for k, v in params.items()},
        {"backtracks": int(params["log_std"][0]), "kl_after": 0.005}))  # log_std: 0 + the iteration
    net = FunctionalModel(suite, "cpu")
    initial = {k: v.detach().clone() for k, v in net.params.items()}
    stopped = ScriptedContext({**config, "meta_iterations": 3})
    trainer._train(net, Adaptation(step_sizes=[]), stopped, False)
    resumed = ScriptedContext(config)
    resumed.saved = stopped.saved
    trainer._train(net, Adaptation(step_sizes=[]), resumed, False)
    expected = 1 if keep_best else len(returns)
    assert all(torch.allclose(net.params[k], initial[k] + expected) for k in initial)
    assert resumed.records["best_training_return"] == {"iteration": 1, "return": 5.0, "kept": keep_best}
    assert resumed.records["training_curve"] == {"iteration": [0, 1, 2, 3], "return": returns,
                                                 "backtracks": [0, 1, 2, 3], "kl": [0.005] * 4}  # across the resume


@pytest.mark.parametrize("raw, kept", [(None, False), ("true", True)])
def test_finish_begun_reaches_the_rollout_and_its_default_keeps_the_stored_runs(monkeypatch, raw, kept):
    seen = {}

    def recording_rollout(*args, **kwargs):
        seen.update(kwargs)
        return rollout(*args, **kwargs)

    monkeypatch.setattr("plugins.navigation2d.rollout", recording_rollout)
    overrides = {} if raw is None else {"finish_begun": raw}
    prepared = prepare(RunSpec("navigation2d", "maml", "paper", overrides=overrides), REG)
    suite = Navigation2D(prepared.config)
    model = FunctionalModel(suite, "cpu")
    params = {k: v.detach()[None] for k, v in model.params.items()}
    suite.rollout(model.forward, params, suite.sample_tasks(1, torch.Generator()), 2, torch.Generator())
    assert seen["fill_env_steps"] is True and seen["finish_begun"] is kept
    assert (prepared.run_id == "navigation2d-maml-paper-s0-8c5b5c9f19") is not kept  # the committed MAML run's id
