"""The example plugin: Reptile's meta-iteration against a hand-written loop on a tiny problem, and the installed
distribution found, configured and run by the harness through its entry point."""
import sqlite3

import torch
from reptile_example import Reptile, reptile_step
from torch import nn

from harness.cli import main
from harness.functional import task_loss
from harness.plugins import registry
from harness.protocols import TaskBatch


def test_one_meta_iteration_is_the_hand_written_reptile_update():
    """Linear regression y = w x + b, 3 tasks, 4 inner steps: SGD on support and query together per task, then the
    shared weights move `outer_lr` of the way to the mean of the adapted ones."""
    torch.manual_seed(0)
    model = nn.Linear(1, 1).double()
    weights = {k: p.detach().clone() for k, p in model.named_parameters()}
    x, y = torch.randn(3, 5, 1, dtype=torch.double), torch.randn(3, 5, 1, dtype=torch.double)
    tasks = TaskBatch(x[:, :2], y[:, :2], x[:, 2:], y[:, 2:])
    new, loss = reptile_step(task_loss(model, nn.functional.mse_loss), weights, tasks, 4, 0.1, 0.5)

    adapted = []
    for t in range(3):
        w, b = weights["weight"].clone(), weights["bias"].clone()
        for _ in range(4):
            residual = x[t] @ w.T + b - y[t]  # mse = mean(residual^2): gradients by hand
            w, b = w - 0.1 * (2 * residual * x[t]).mean(0, keepdim=True), b - 0.1 * (2 * residual).mean(0)
        adapted.append((w, b))
    mean_w = torch.stack([a[0] for a in adapted]).mean(0)
    mean_b = torch.stack([a[1] for a in adapted]).mean(0)
    torch.testing.assert_close(new["weight"], weights["weight"] + 0.5 * (mean_w - weights["weight"]))
    torch.testing.assert_close(new["bias"], weights["bias"] + 0.5 * (mean_b - weights["bias"]))
    expected = torch.stack([((x[t] @ weights["weight"].T + weights["bias"] - y[t]) ** 2).mean() for t in range(3)])
    assert abs(loss - expected.mean().item()) < 1e-12


def test_the_installed_distribution_is_found_and_keeps_the_contract():
    reg = registry()
    assert reg.learners["reptile-example"].obj is Reptile
    assert reg.learners["reptile-example"].dist == "harness-reptile-example"
    assert not [f for f in reg.failures if "reptile" in f]


def test_runs_beside_maml_with_its_own_key_set_for_it_alone(tmp_path):
    out = tmp_path / "out"
    assert main(["run", "--suite", "sinusoid", "--learners", "reptile-example,maml", "--profile", "smoke",
                 "--set", "reptile-example.reptile_outer_lr=0.5", "--set", "meta_iterations=3", "--out", str(out),
                 "--quiet"]) == 0
    db = sqlite3.connect(out / "results.sqlite")
    runs = dict(db.execute("SELECT learner, config FROM runs WHERE status = 'done'").fetchall())
    assert '"reptile_outer_lr": 0.5' in runs["reptile-example"] and "reptile" not in runs["maml"]
    assert all('"meta_iterations": 3' in config for config in runs.values())
    assert db.execute("SELECT COUNT(*) FROM scores s JOIN runs r USING (run_id) "
                      "WHERE r.learner = 'reptile-example'").fetchone()[0] > 0
