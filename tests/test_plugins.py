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
from harness.protocols import Adapted


class PlainSGD:
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
