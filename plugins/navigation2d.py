"""2D navigation (paper section 5.3): a point robot moves from the origin to a goal drawn uniformly from
[-0.5, 0.5]^2, rewarded minus its distance to the goal; a task is a goal. Policy: Gaussian MLP 100-100 (ReLU),
state-independent log-std; inner step REINFORCE with the linear feature baseline; meta-optimiser TRPO
(`plugins.rl.trainer`); evaluation on 40 frozen goals, up to 3 steps of 40 x 100 env steps (`plugins.rl.evaluation`).

Batches are counted in env steps as the released code's sampler counted them (`fill_env_steps`): a task's
`trajectories` x 100 steps of whole paths, so more paths where episodes end at the goal. The episodes still running
when a task's batch fills are dropped; `--set finish_begun=true` keeps every episode begun before then (as the ant
suites do: dropping favours the episodes that end early, here those that reach the goal). Default None: dropped, as
in the runs stored before the option, which keep their identity.

`inner_lr` 0.1 as the paper (the released point-robot code used 0.5: `--set inner_lr=0.5 --set later_inner_lr=0.25`
reproduces it), `later_inner_lr` 0.05 for the later evaluation steps. The oracle sees the goal as extra inputs; the
baselines' fine-tuning step size is tuned on validation goals (`plugins.rl.evaluation.validation_returns`).
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor, nn

from harness import hookimpl
from harness.errors import UsageError
from harness.protocols import Forward, Key, Params, RLSuite
from plugins.rl.evaluation import RolloutEvaluator
from plugins.rl.navigation import NavigationBatch, sample_goals
from plugins.rl.policy_gradient import ROLLOUT_KEYS, GaussianMLPPolicy, Paths, reinforce_loss, rollout
from plugins.rl.trainer import KEYS, TRPOTrainer

ACTION_SCALE = 0.1
"""rllab's `normalize` wrapper of the released code: a policy action in [-1, 1] spans the velocity range [-0.1, 0.1]."""

PAPER: Mapping[str, Any] = {
    "meta_iterations": 500, "meta_batch": 20, "trajectories": 20, "inner_lr": 0.1, "later_inner_lr": 0.05,
    "inner_steps": 1, "gamma": 0.99, "max_kl": 0.01, "cg_iters": 10, "cg_damping": 1e-5, "cg_subsample": 0.25,
    "backtrack_ratio": 0.8,
    "max_backtracks": 15, "eval_tasks": 40, "eval_trajectories": 40, "eval_steps": 3, "threads": 2,
    "checkpoint_every": 25, "keep_best": True, "fill_env_steps": True, "finish_begun": None,
}


class Navigation2D(RLSuite):
    """2D point-robot navigation to a goal (paper section 5.3), return = sum of minus distances over 100 steps."""

    name = "navigation2d"
    kind = "rl"
    problem = "control"
    metric = "return"
    lower_is_better = False
    feature_names = ("goal_x", "goal_y")
    profiles: Mapping[str, Mapping[str, Any]] = {
        "smoke": {**PAPER, "meta_iterations": 2, "meta_batch": 2, "trajectories": 2, "eval_tasks": 2,
                  "eval_trajectories": 2, "eval_steps": 2, "cg_iters": 2, "threads": 1},
        "quick": {**PAPER, "meta_iterations": 100},
        "paper": PAPER,
    }
    keys: Mapping[str, Key] = {**KEYS, **ROLLOUT_KEYS}

    def __init__(self, config: Mapping[str, Any]) -> None:
        if config.get("finish_begun") not in (None, True, False):
            raise UsageError(f"--set finish_begun={config['finish_begun']!r}: finish_begun takes bool (true or false)")
        self.config = config

    @property
    def pooled_classes(self) -> int:
        return 0

    def make_model(self, extra_inputs: int = 0, outputs: int | None = None) -> nn.Module:
        return GaussianMLPPolicy(NavigationBatch.observation_size + extra_inputs, NavigationBatch.action_size)

    def append_inputs(self, x: Tensor, extra: Tensor) -> Tensor:
        return torch.cat([x, extra.expand(*x.shape[:-1], extra.shape[-1])], dim=-1)

    def loss(self, outputs: Tensor, targets: Tensor) -> Tensor:
        return reinforce_loss(outputs, targets)

    def sample_tasks(self, n: int, generator: torch.Generator) -> Tensor:
        return sample_goals(n, generator)

    def rollout(self, policy: Forward, params: Params, tasks: Tensor, trajectories: int,
                generator: torch.Generator) -> Paths:
        return rollout(NavigationBatch, policy, params, tasks, trajectories, generator, action_scale=ACTION_SCALE,
                       fill_env_steps=self.config.get("fill_env_steps", False),  # runs from before it: paths
                       finish_begun=bool(self.config.get("finish_begun")))

    def trainer(self, config: Mapping[str, Any]) -> TRPOTrainer:
        return TRPOTrainer(self, config)

    def evaluator(self, device: torch.device) -> RolloutEvaluator:
        return RolloutEvaluator.from_config(self.config, device)


@hookimpl
def harness_suites() -> list[type]:
    return [Navigation2D]
