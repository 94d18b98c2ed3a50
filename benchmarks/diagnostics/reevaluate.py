"""Evaluate a finished run's trained model again under other test-time settings, without touching the store: a
diagnostic (choosing a test-time setting on the test tasks would be tuning on them; a reported result never is).

    python benchmarks/diagnostics/reevaluate.py results/store/navigation2d-maml-paper-s0-40a2796edb \
        later_inner_lr=0.1 later_inner_lr=0.025 eval_trajectories=160

Prints the mean score per step for the run's own config and then for each `key=value` (one override at a time); a
key the run's config lacks (newer than the run) takes its type from the suite's current profile.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import torch

from harness.checkpoints import CONFIG, MODEL, load_tensors
from harness.config import declarations, parse_assignments
from harness.plugins import registry
from harness.runner import tqdm_progress


def mean_by_step(run_dir: Path, overrides: dict[str, str]) -> dict[int, float]:
    """The mean score per step over the test tasks of the model in `run_dir`, its config changed by `overrides`."""
    config = json.loads((run_dir / CONFIG).read_text())
    reg = registry()
    keys = declarations(reg.suite(config["suite"]), reg.learner(config["learner"]))  # keys newer than the run too
    for key, raw in overrides.items():
        if key not in keys:
            raise SystemExit(f"error: unknown config key {key!r} for {run_dir.name}")
        config[key] = keys[key].parse(key, raw)
        keys[key].check(key, config[key])
    suite, learner = reg.suite(config["suite"])(config), reg.learner(config["learner"])(config)
    torch.set_num_threads(config["threads"])
    state = load_tensors(run_dir / MODEL)
    totals: dict[int, list[float]] = {}
    for score in suite.evaluator(torch.device("cpu")).evaluate(suite, learner, state, tqdm_progress(False)):
        totals.setdefault(score.step, []).append(score.value)
    return {step: sum(v) / len(v) for step, v in sorted(totals.items())}


if __name__ == "__main__":
    run_dir, *assignments = sys.argv[1:]
    for item in [None, *assignments]:
        means = mean_by_step(Path(run_dir), parse_assignments([item]) if item else {})
        print(item or "as run", " ".join(f"{step}: {value:.2f}" for step, value in means.items()), flush=True)
