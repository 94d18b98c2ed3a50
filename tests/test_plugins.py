"""Plugins are found through real entry points: a separate tiny distribution, made visible on PYTHONPATH."""
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

TINY_PLUGIN = '''
"""A third-party learner: no meta-training at all, plain SGD on the support set at test time."""
from torch.func import functional_call

import harness
from harness.functional import adapt_batch, step_sizes, task_loss
from harness.protocols import Adapted, Learner


class PlainSGD(Learner):
    name = "plain-sgd"
    description = "random initialisation, SGD at test time (a third-party example)"
    defaults = {"plain_lr": 0.02}

    def __init__(self, config):
        self.config = config

    @classmethod
    def applies_to(cls, suite):
        return suite.kind == "supervised"

    def meta_train(self, suite, ctx):
        return suite.make_model().state_dict()

    def adapt(self, suite, state, tasks, steps):
        model = suite.make_model()
        model.load_state_dict(state)
        lrs = step_sizes(self.config["plain_lr"], steps)
        for params in adapt_batch(task_loss(model, suite.loss), dict(model.named_parameters()),
                                  tasks.support_x, tasks.support_y, lrs):
            yield Adapted(lambda p, x: functional_call(model, p, (x,)), params)


@harness.hookimpl
def harness_learners():
    return [PlainSGD]
'''


def make_distribution(site: Path, dist: str, module: str, source: str) -> None:
    """An installed distribution as pip would leave it: a module plus its dist-info with a `harness` entry point."""
    (site / f"{module}.py").write_text(source)
    info = site / f"{dist.replace('-', '_')}-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(f"[harness]\n{module} = {module}\n")


def harness(site: Path, *args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(site)}
    return subprocess.run([sys.executable, "-m", "harness", *args], capture_output=True, text=True, env=env, cwd=cwd,
                          timeout=300)


@pytest.fixture
def site(tmp_path):
    site = tmp_path / "site"
    site.mkdir()
    make_distribution(site, "tiny-plugin", "tiny_plugin", TINY_PLUGIN)
    return site


def test_third_party_learner_is_listed_and_runs(site, tmp_path):
    listed = harness(site, "list", cwd=tmp_path)
    assert listed.returncode == 0, listed.stderr
    line = next(row for row in listed.stdout.splitlines() if "plain-sgd" in row)
    assert "tiny-plugin" in line and "sinusoid" in line
    ran = harness(site, "run", "--suite", "sinusoid", "--learners", "plain-sgd", "--profile", "smoke",
                  "--out", str(tmp_path / "out"), "--set", "plain_lr=0.05", cwd=tmp_path)
    assert ran.returncode == 0, ran.stderr
    db = sqlite3.connect(tmp_path / "out" / "results.sqlite")
    (status, config), = db.execute("SELECT status, config FROM runs WHERE learner = 'plain-sgd'")
    assert status == "done" and '"plain_lr": 0.05' in config
    assert db.execute("SELECT COUNT(*) FROM scores").fetchone()[0] == 20 * 3 * 3


def test_broken_plugin_is_reported_by_distribution_and_others_still_work(site, tmp_path):
    make_distribution(site, "broken-plugin", "broken_plugin", "raise ImportError('missing dependency xyz')\n")
    listed = harness(site, "list", cwd=tmp_path)
    assert listed.returncode == 0
    assert "broken-plugin" in listed.stderr and "missing dependency xyz" in listed.stderr
    assert "plain-sgd" in listed.stdout and "maml" in listed.stdout


OFF_CONTRACT = '''
"""A suite without `sample` and a learner that does not subclass harness.protocols.Learner."""
import harness
from harness.protocols import SupervisedSuite
from plugins.sinusoid import Sinusoid


class Unsampled(SupervisedSuite):
    name, kind, problem, metric, lower_is_better = "unsampled", "supervised", "regression", "mse", True
    feature_names = ()
    profiles = Sinusoid.profiles
    make_model, append_inputs, loss, score, evaluator = (Sinusoid.make_model, Sinusoid.append_inputs, Sinusoid.loss,
                                                         Sinusoid.score, Sinusoid.evaluator)
    pooled_classes = 0

    def __init__(self, config):
        self.config = config


class Freestanding:
    name, description, defaults = "freestanding", "not a subclass", {}


@harness.hookimpl
def harness_suites():
    return [Unsampled]


@harness.hookimpl
def harness_learners():
    return [Freestanding]
'''


def test_a_plugin_off_the_contract_is_named_with_its_distribution_and_refused_in_one_line(site, tmp_path):
    """Conformance is checked at registration: `list` names what breaks the contract and from which distribution, a
    run that asks for it is a one-line error (exit 2), and the other plugins still work."""
    make_distribution(site, "off-contract", "off_contract", OFF_CONTRACT)
    listed = harness(site, "list", cwd=tmp_path)
    assert listed.returncode == 0 and "plain-sgd" in listed.stdout and "unsampled" not in listed.stdout
    assert ("suite 'unsampled' from off-contract breaks the plugin contract (harness.protocols): missing sample"
            in listed.stderr)
    assert "learner 'freestanding' from off-contract" in listed.stderr and "not a subclass of" in listed.stderr
    ran = harness(site, "run", "--suite", "unsampled", "--learners", "maml", "--profile", "smoke",
                  "--out", str(tmp_path / "out"), cwd=tmp_path)
    assert ran.returncode == 2 and ran.stderr.count("\n") == 1 and "missing sample" in ran.stderr
    assert not (tmp_path / "out").exists()


def test_every_built_in_suite_and_learner_keeps_the_contract():
    from harness.plugins import registry
    from harness.protocols import Learner, Suite, violations

    reg = registry()
    assert reg.failures == [] and len(reg.suites) >= 8 and len(reg.learners) >= 10
    assert all(violations(p.obj, Suite) == [] for p in reg.suites.values())
    assert all(violations(p.obj, Learner) == [] for p in reg.learners.values())
