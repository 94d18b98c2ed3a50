"""What each built-in learner adapts, keeps and records, on small sinusoid problems."""
import pytest
import torch
from torch import nn

from harness.finetune import best_step_sizes, step_size_for
from harness.functional import batch_gradient, task_loss
from harness.models import FunctionalModel
from harness.seeding import generator
from plugins.maml import MAML, ContextVector
from plugins.multitask import MultiTaskMean, MultiTaskNoReg
from plugins.pretrain import Oracle, Pretrain, Scratch
from plugins.sinusoid import Sinusoid

CONFIG = {**Sinusoid.profiles["smoke"], "vectorize": "auto", "compile": False, "threads": 1, "checkpoint_every": 10,
          "checkpoint_seconds": 600}


def tasks(n=4, shots=5):
    return Sinusoid(CONFIG).sample("test", n, generator("learner-tests"), shots, 20)


def test_context_adapts_only_the_context_vector():
    suite = Sinusoid(CONFIG)
    learner = ContextVector({**CONFIG, **ContextVector.defaults})
    net = learner.network(suite, "cpu")
    assert net.params["context"].shape == (5,) and net.module[0].in_features == 1 + 5
    state = {**net.state_dict(), "context": torch.randn(5)}
    steps = list(learner.adapt(suite, state, tasks(), 2))
    for name in net.weights:
        assert torch.equal(steps[0].params[name], steps[2].params[name])
    assert not torch.equal(steps[0].params["context"], steps[2].params["context"])
    assert torch.equal(steps[0].params["context"][0], state["context"])


def test_maml_adapts_every_weight():
    suite = Sinusoid(CONFIG)
    learner = MAML({**CONFIG, **MAML.defaults})
    state = FunctionalModel(suite, "cpu").state_dict()
    first, last = (a.params for a in list(learner.adapt(suite, state, tasks(), 1)))
    assert all(not torch.equal(first[k], last[k]) for k in first)


def test_functional_model_round_trips_its_state_with_a_context():
    suite = Sinusoid(CONFIG)
    a, b = FunctionalModel(suite, "cpu", context_size=3), FunctionalModel(suite, "cpu", context_size=3)
    with torch.no_grad():
        a.params["context"].fill_(0.5)
    b.load_state_dict(a.state_dict())
    x = torch.linspace(-5, 5, 7).unsqueeze(1)
    assert torch.equal(a.forward(a.params, x), b.forward(b.params, x))


def test_batch_gradient_is_the_gradient_of_the_mean_task_loss():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(1, 8), nn.ReLU(), nn.Linear(8, 1))
    loss_fn = task_loss(model, nn.functional.mse_loss)
    batch = tasks()
    params = {k: v.detach() for k, v in model.named_parameters()}
    loss, grads = batch_gradient(loss_fn)(params, {}, batch.support_x, batch.support_y)
    leaves = {k: v.clone().requires_grad_() for k, v in params.items()}
    mean = torch.stack([loss_fn(leaves, x, y) for x, y in zip(batch.support_x, batch.support_y)]).mean()
    expected = torch.autograd.grad(mean, list(leaves.values()))
    assert torch.allclose(loss, mean)
    assert all(torch.allclose(grads[k], g, atol=1e-6) for k, g in zip(leaves, expected))


def test_tuned_step_sizes_are_looked_up_by_shots():
    table = best_step_sizes({5: {0.01: 2.0, 0.1: 1.0}, 10: {0.01: 0.5, 0.1: float("inf")}}, True)
    assert step_size_for(table, 5) == 0.1 and step_size_for(table, 10) == 0.01
    with pytest.raises(ValueError, match="no step size tuned for 20 shots"):
        step_size_for(table, 20)


def test_oracle_needs_task_features_and_sees_them():
    class Featureless(Sinusoid):
        feature_names = ()

    assert Oracle.applies_to(Sinusoid) and not Oracle.applies_to(Featureless)
    assert Pretrain.applies_to(Featureless) and Scratch.applies_to(Featureless)
    suite = Sinusoid(CONFIG)
    oracle = Oracle({**CONFIG, **Oracle.defaults})
    net = oracle.network(suite, "cpu")
    assert net.module[0].in_features == 1 + 2
    batch = tasks()
    state = {**net.state_dict(), "tuned_step_sizes": best_step_sizes({5: {0.0: 0.0}}, True)}
    (adapted,) = list(oracle.adapt(suite, state, batch, 0))
    assert torch.equal(adapted.params["task_features"], batch.features)


class Recorder:
    """A TrainContext that keeps what a learner records (no checkpoints, no progress)."""

    device = torch.device("cpu")
    seed = 0

    def __init__(self, config):
        self.config = config
        self.recorded = {}

    def generator(self, iteration, stream="batch"):
        return generator("recorder", stream, iteration)

    def iterations(self, start, total, desc=""):
        return iter(range(start, total))

    def log(self, iteration, loss):
        assert loss == loss

    def record(self, key, value):
        self.recorded[key] = value

    def checkpoint_due(self, iteration):
        return False

    def save_checkpoint(self, state):
        pass

    def load_checkpoint(self):
        return None


@pytest.mark.parametrize("learner_cls", [Pretrain, Scratch, MultiTaskNoReg, MultiTaskMean])
def test_fine_tuning_learners_record_their_tuning(learner_cls):
    config = {**CONFIG, **learner_cls.defaults, **getattr(learner_cls, "profile_defaults", {}).get("smoke", {})}
    ctx = Recorder(config)
    state = learner_cls(config).meta_train(Sinusoid(config), ctx)
    assert set(ctx.recorded["tuned_step_sizes"]) == {"5", "10", "20"}
    assert state["tuned_step_sizes"].shape == (3, 2)
    if learner_cls is MultiTaskMean:
        pilot = ctx.recorded["regularisation_pilot"]
        assert pilot["chosen"] == ctx.recorded["regularisation_strength"]
        assert [c["regressors"] for c in ctx.recorded["regressor_median_fit_by_chunk"]] == [1, 2, 1]  # 4 regressors
