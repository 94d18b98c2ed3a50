"""The runner's guarantees, with learners defined in the test and a registry built by hand."""
import math

import pytest
import torch

from harness import runner
from harness.errors import UsageError
from harness.plugins import Provided, Registry
from harness.protocols import Learner, Score
from harness.store import Store
from plugins.sinusoid import Sinusoid

FIRST_BATCH = {}


class Untrained(Learner):
    """A learner that trains nothing: its state is the suite's freshly initialised model."""

    name = "untrained"
    description = "returns its initial weights"
    defaults = {}

    def __init__(self, config):
        self.config = config

    @classmethod
    def applies_to(cls, suite):
        return True

    def meta_train(self, suite, ctx):
        return suite.make_model().state_dict()

    def adapt(self, suite, state, tasks, steps):
        return iter(())


def recorder(learner_name):
    class Recorder(Untrained):
        """Also records its first training batch."""

        name = learner_name

        def meta_train(self, suite, ctx):
            FIRST_BATCH[self.name, ctx.seed] = suite.sample("train", 3, ctx.generator(0), 5, 5).support_x
            return super().meta_train(suite, ctx)

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


class Exploding(Untrained):
    """A learner whose adaptation blows up after the first step: its scores must be kept, not dropped."""

    name = "exploding"

    def adapt(self, suite, state, tasks, steps):
        from torch.func import functional_call

        from harness.protocols import Adapted
        model = suite.make_model()
        for step in range(steps + 1):
            scale = 1.0 if step == 0 else (float("inf") if step == 1 else float("nan"))
            params = {k: (v * scale).expand(len(tasks), *v.shape) for k, v in state.items()}
            yield Adapted(lambda p, x: functional_call(model, p, (x,)), params)


def test_diverged_test_tasks_are_stored_and_reported(tmp_path):
    from harness.tables import TableSpec, build

    reg = Registry(learners={"exploding": Provided("exploding", Exploding, "test")},
                   suites={"sinusoid": Provided("sinusoid", Sinusoid, "test")})
    store = Store(tmp_path)
    prepared = runner.prepare(runner.RunSpec("sinusoid", "exploding", "smoke"), reg)
    assert runner.execute(prepared, store, tmp_path, "test", runner.tqdm_progress(False)) == "done"
    values = store.scores([prepared.run_id]).set_index(["shots", "step"]).value
    assert values.loc[5, 0].notna().all() and values.loc[5, 2].isna().all()
    spec = TableSpec("t", "t", "sinusoid", "mse", {"5-shot": 5}, {"0 steps": 0, "2 steps": 2}, {"ours": "exploding"})
    table = build(spec, store, True).set_index("column")
    assert table.loc["0 steps", "diverged"] == 0 and table.loc["2 steps", "diverged"] == 20
    assert math.isinf(table.loc["2 steps", "mean"])


def test_the_recorded_commit_is_dirty_for_changed_code_but_not_for_written_results(tmp_path):
    import subprocess

    def git(*args):
        subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", *args], cwd=tmp_path, check=True,
                       capture_output=True)

    (tmp_path / "code.py").write_text("x = 1\n")
    (tmp_path / "results").mkdir()
    (tmp_path / "results" / "table.md").write_text("old\n")
    git("init", "-q")
    git("add", ".")
    git("commit", "-qm", "first")
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=tmp_path, capture_output=True, text=True).stdout.strip()
    assert runner.source_commit(tmp_path) == head
    (tmp_path / "results" / "table.md").write_text("new\n")
    (tmp_path / "results" / "run").mkdir()
    (tmp_path / "results" / "run" / "model.pt").write_text("weights")
    assert runner.source_commit(tmp_path / "results") == head
    (tmp_path / "code.py").write_text("x = 2\n")
    assert runner.source_commit(tmp_path) == head + "-dirty"
    assert runner.source_commit(tmp_path.parent / "not-a-checkout-at-all") is None


def test_a_run_identity_leaves_out_keys_set_to_none_and_unhashed_ones():
    """An option added with the default None (its behaviour before the option) keeps stored runs' identities; a
    set value or any other change of config makes another run."""
    spec = runner.RunSpec("sinusoid", "maml", "quick")
    config = {"inner_lr": 0.01, "meta_iterations": 100}
    same = runner.run_id(spec, config)
    assert runner.run_id(spec, {**config, "new_option": None}) == same
    assert runner.run_id(spec, {**config, "checkpoint_every": 7}) == same
    assert runner.run_id(spec, {**config, "new_option": "on"}) != same
    assert runner.run_id(spec, {**config, "inner_lr": 0.02}) != same


class Counting(Untrained):
    """Ten iterations that checkpoint their count; the first process stops (Ctrl-C) after iteration 4."""

    name = "counting"
    interrupt = True

    def meta_train(self, suite, ctx):
        start = (ctx.load_checkpoint() or {"done": 0})["done"]
        for i in ctx.iterations(start, 10):
            ctx.save_checkpoint({"done": i + 1})
            if i == 4 and Counting.interrupt:
                Counting.interrupt = False
                raise KeyboardInterrupt
        return super().meta_train(suite, ctx)


def test_a_resumed_run_s_progress_bar_starts_at_its_checkpoint_and_times_only_this_process(tmp_path):
    import io

    import pytest
    from tqdm import tqdm

    bars = []

    def progress(total, desc, initial=0):
        bar = tqdm(total=total, desc=desc, initial=initial, file=io.StringIO())
        bars.append((desc, initial, bar))
        return bar

    reg = Registry(learners={"counting": Provided("counting", Counting, "test")},
                   suites={"sinusoid": Provided("sinusoid", Sinusoid, "test")})
    store = Store(tmp_path)
    prepared = runner.prepare(runner.RunSpec("sinusoid", "counting", "smoke"), reg)
    with pytest.raises(KeyboardInterrupt):
        runner.execute(prepared, store, tmp_path, "test", progress)
    assert runner.execute(prepared, store, tmp_path, "test", progress) == "done"
    train = [(initial, bar) for desc, initial, bar in bars if desc == "meta-train"]
    assert [initial for initial, _ in train] == [0, 5]
    resumed = train[1][1]
    assert resumed.n == 10 and resumed.format_dict["initial"] == 5  # tqdm's rate counts n - initial: 5 iterations


def test_an_option_with_a_none_default_keeps_the_identity_of_runs_and_reads_set_values_by_its_declaration():
    from harness.protocols import Key

    class Optioned(Sinusoid):
        profiles = {name: {**p, "new_option": None} for name, p in Sinusoid.profiles.items()}
        keys = {"new_option": Key(bool, "an option added after runs were stored", optional=True)}

    reg = Registry(suites={"sinusoid": Provided("sinusoid", Optioned, "test")},
                   learners={"untrained": Provided("untrained", Untrained, "test")})
    plain = runner.prepare(runner.RunSpec("sinusoid", "untrained", "smoke"), reg)
    without = {k: v for k, v in plain.config.items() if k != "new_option"}
    assert plain.config["new_option"] is None and plain.run_id == runner.run_id(plain.spec, without)
    for raw, value in [("true", True), ("off", False), ("none", None)]:
        setting = runner.prepare(runner.RunSpec("sinusoid", "untrained", "smoke", overrides={"new_option": raw}), reg)
        assert setting.config["new_option"] is value
        assert (setting.run_id == plain.run_id) == (value is None)


def test_a_run_whose_scores_cannot_be_stored_is_failed_not_left_running(tmp_path, monkeypatch):
    """Scores the store refuses (e.g. a test task scored twice: the store's primary key) fail the run; before, the
    error came after the run's try block and left it marked "running" forever."""
    reg = Registry(learners={"untrained": Provided("untrained", Untrained, "test")},
                   suites={"sinusoid": Provided("sinusoid", Sinusoid, "test")})
    store = Store(tmp_path)
    prepared = runner.prepare(runner.RunSpec("sinusoid", "untrained", "smoke"), reg)
    finish = store.finish
    twice = [Score(0, 5, 0, "mse", 1.0)] * 2  # (Untrained adapts to nothing: it scores no task of its own)
    monkeypatch.setattr(store, "finish", lambda run_id, scores: finish(run_id, [*scores, *twice]))
    with pytest.raises(UsageError, match="cannot|could not|constraint|UNIQUE"):
        runner.execute(prepared, store, tmp_path, "test", runner.tqdm_progress(False))
    assert store.status(prepared.run_id) == "failed"
