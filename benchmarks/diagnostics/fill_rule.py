"""What a filled batch keeps of a policy's episodes: rollouts of one randomly initialised policy on the ant (or any
locomotion suite) without filling (N episodes per task, the reference), with `fill_env_steps` dropping
the episodes still running when a task's batch fills, and with `finish_begun` as well (they run to their end and are
kept): a diagnostic, the store untouched.

    python benchmarks/diagnostics/fill_rule.py ant-velocity 10 20

Arguments: the suite, the number of tasks T and of trajectories N per task. Prints, per rule, the episodes kept,
the share that ended early and their mean length, and the env steps kept per task against N x H. A rule whose mean
length is below the reference's keeps too many short (fallen) episodes.
"""
from __future__ import annotations

import sys

import torch
from torch import Tensor
from torch.func import functional_call

from harness.plugins import registry
from plugins.rl.policy_gradient import Paths


def episode_lengths(paths: Paths) -> Tensor:
    """The length of every kept episode of every task (an episode starts where `time` is 0 on a kept step)."""
    lengths = []
    for mask, time in zip(paths.mask.flatten(1), paths.step_times().flatten(1)):
        starts = (time[mask > 0] == 0).nonzero().flatten().tolist() + [int(mask.sum())]
        lengths += [b - a for a, b in zip(starts, starts[1:])]
    return torch.tensor(lengths, dtype=torch.float64)


def main(suite_name: str, n_tasks: int, n_trajectories: int) -> None:
    suite_class = registry().suite(suite_name)
    rules = {"no filling": {"fill_env_steps": False, "finish_begun": False},
             "fill_env_steps, drop running": {"fill_env_steps": True, "finish_begun": False},
             "fill_env_steps, finish_begun": {"fill_env_steps": True, "finish_begun": True}}
    torch.manual_seed(0)
    model = suite_class(suite_class.profiles["paper"]).make_model()
    for name, rule in rules.items():
        suite = suite_class({**suite_class.profiles["paper"], **rule})
        params = {k: v.detach().expand(n_tasks, *v.shape) for k, v in model.named_parameters()}
        generator = torch.Generator().manual_seed(0)
        tasks = suite.sample_tasks(n_tasks, generator)
        paths = suite.rollout(lambda p, o: functional_call(model, p, (o,)), params, tasks, n_trajectories, generator)
        lengths, horizon = episode_lengths(paths), paths.mask.shape[-1]
        print(f"{name:32s} episodes {len(lengths):5d}  ended early {(lengths < horizon).double().mean():.3f}  "
              f"mean length {lengths.mean():6.1f}  steps per task {paths.mask.sum((-2, -1)).mean():7.0f} "
              f"(N x H = {n_trajectories * horizon})")


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]))
