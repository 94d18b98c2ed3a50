"""The runner's guarantees, with learners defined in the test and a registry built by hand."""
import torch

from harness import runner
from harness.plugins import Provided, Registry
from harness.store import Store
from plugins.sinusoid import Sinusoid

FIRST_BATCH = {}


def recorder(learner_name):
    class Recorder:
        """Trains nothing: returns its initial weights and records its first training batch."""

        name = learner_name
        description = "records what the runner gives it"
        defaults = {}

        def __init__(self, config):
            self.config = config

        @classmethod
        def applies_to(cls, suite):
            return True

        def meta_train(self, suite, ctx):
            FIRST_BATCH[self.name, ctx.seed] = suite.sample("train", 3, ctx.generator(0), 5, 5).support_x
            return suite.make_model().state_dict()

        def adapt(self, suite, state, tasks, steps):
            return iter(())

    return Recorder


def test_learners_with_the_same_seed_share_initial_weights_and_training_tasks(tmp_path):
    reg = Registry(learners={name: Provided(name, recorder(name), "test") for name in ("a", "b")},
                   suites={"sinusoid": Provided("sinusoid", Sinusoid, "test")})
    store = Store(tmp_path)
    initial = {}
    for name, seed in (("a", 0), ("b", 0), ("a", 1)):
        prepared = runner.prepare(runner.RunSpec("sinusoid", name, "smoke", seed), reg)
        assert runner.execute(prepared, store, tmp_path, "test", runner.tqdm_progress(False)) == "done"
        initial[name, seed] = torch.load(tmp_path / prepared.run_id / "model.pt", weights_only=True)
    assert all(torch.equal(initial["a", 0][k], initial["b", 0][k]) for k in initial["a", 0])
    assert torch.equal(FIRST_BATCH["a", 0], FIRST_BATCH["b", 0])
    assert not torch.equal(initial["a", 0]["0.weight"], initial["a", 1]["0.weight"])
    assert not torch.equal(FIRST_BATCH["a", 0], FIRST_BATCH["a", 1])
