"""Score step sizes outside the tuning grid on the validation tasks, for a finished RL baseline run (pretrain, oracle,
random init): does a tuned step size at the edge of `plugins.rl.evaluation.STEP_SIZES` stand for a better one beyond
it? A diagnostic that reads the run's stored model and writes nothing; validation tasks only, as the tuning itself.

    python benchmarks/diagnostics/step_grid.py results/store/ant-velocity-scratch-paper-s0-46782293d6 0.5 1 2

Prints each step size's mean return over the validation tasks after the test's steps (the first candidate repeats
one of the grid, whose value the run's detail `step_size_validation` holds, to show the two agree).
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import torch

from harness.checkpoints import CONFIG, MODEL, load_tensors
from harness.plugins import registry
from plugins.rl.evaluation import validation_returns


def returns_beyond_grid(run_dir: Path, grid: tuple[float, ...]) -> dict[float, float]:
    """Mean validation return after the test's steps for each step size of `grid`, from the model in `run_dir`."""
    config = json.loads((run_dir / CONFIG).read_text())
    reg = registry()
    suite, learner = reg.suite(config["suite"])(config), reg.learner(config["learner"])(config)
    torch.set_num_threads(config["threads"])
    net = learner.network(suite, "cpu")
    state = load_tensors(run_dir / MODEL)
    net.load_state_dict(state)
    return validation_returns(suite, net, config, features=learner.uses_features, grid=grid)


if __name__ == "__main__":
    run_dir, *sizes = sys.argv[1:]
    for lr, value in returns_beyond_grid(Path(run_dir), tuple(float(s) for s in sizes)).items():
        print(f"step size {lr:g}: {value:.2f}", flush=True)
