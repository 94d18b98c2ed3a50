"""The test protocol of the RL suites: frozen test tasks, each adaptation step on fresh paths of the current policy.

At step k every test task's policy (after k inner steps) is rolled out `trajectories` times (or for
`trajectories` x H env steps of whole paths, where the suite counts its batches so); the mean undiscounted
return of those paths is the task's score at step k, and the same paths are the support set of step k + 1, as in
the authors' released evaluation. The learner adapts through `TaskBatch.renew` (a `RolloutSupport`), so the
learners' own `adapt` serves supervised and RL suites alike.
"""
from __future__ import annotations

import math
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass

import torch
from torch import Tensor

from harness.functional import adapt_batch
from harness.models import FunctionalModel
from harness.protocols import Forward, Learner, Params, Progress, Score, Suite, TaskBatch
from harness.seeding import generator
from harness.training import adaptation_step_sizes
from plugins.rl.policy_gradient import Paths, RLSuite, support_of

STEP_SIZES = (0.001, 0.003, 0.01, 0.03, 0.1, 0.3, 0.5)
"""Candidate fine-tuning step sizes of the baselines. The released test scripts (cbfinn/maml_rl,
`maml_examples/test_maml_*.py`) gave random initialisation 0.5 on 2D navigation and cheetah-direction, 0.1 on
cheetah-velocity and 1.0 on both ants; pretrain 0.02 on cheetah-velocity and 0.2 on the other three."""


class RolloutSupport:
    """`TaskBatch.renew` of RL tasks: the support of per-task policies `params` is `trajectories` fresh paths of
    each (`sample`), cached for the last `params` so the evaluator's score and the next step share one sample."""

    def __init__(self, suite: RLSuite, tasks: Tensor, trajectories: int, gamma: float,
                 rng: torch.Generator) -> None:
        self.suite, self.tasks, self.trajectories, self.gamma, self.rng = suite, tasks, trajectories, gamma, rng
        self._last: tuple[Params | None, Paths | None] = (None, None)

    def sample(self, forward: Forward, params: Params) -> Paths:
        """The paths of the policies `params` (leading task dimension); the same object twice gives the same paths."""
        if self._last[0] is not params:
            self._last = (params, self.suite.rollout(forward, params, self.tasks, self.trajectories, self.rng))
        return self._last[1]

    def __call__(self, forward: Forward, params: Params) -> tuple[Tensor, Tensor]:
        return support_of(self.sample(forward, params), self.gamma)


@dataclass(frozen=True)
class RolloutEvaluator:
    """`n_tasks` frozen test tasks (task i drawn from a generator seeded by (suite, "test", i) alone), scored after
    0..`steps` policy-gradient steps of `trajectories` paths each; one rollout noise stream, the same for every
    learner. `Score.shots` is the number of paths per step."""

    n_tasks: int
    trajectories: int
    steps: int
    gamma: float
    device: torch.device = torch.device("cpu")
    split: str = "test"  # "val": other tasks, for tuning

    @classmethod
    def from_config(cls, config: Mapping, device: torch.device) -> RolloutEvaluator:
        return cls(config["eval_tasks"], config["eval_trajectories"], config["eval_steps"], config["gamma"], device)

    def tasks(self, suite: Suite) -> TaskBatch:
        rl: RLSuite = suite  # type: ignore[assignment]
        goals = torch.cat([rl.sample_tasks(1, generator(suite.name, self.split, i)) for i in range(self.n_tasks)])
        shots = goals.new_zeros(self.n_tasks, self.trajectories, 0)  # fixes the numbers of tasks and of paths
        renew = RolloutSupport(rl, goals, self.trajectories, self.gamma, generator(suite.name, self.split, "rollouts"))
        return TaskBatch(shots, shots, shots, shots, features=goals, renew=renew)

    def evaluate(
        self, suite: Suite, learner: Learner, state: Mapping[str, Tensor], progress: Progress
    ) -> Iterator[Score]:
        tasks = self.tasks(suite)
        support: RolloutSupport = tasks.renew  # type: ignore[assignment]
        bar = progress(self.steps + 1, "evaluate")
        for step, adapted in enumerate(learner.adapt(suite, state, tasks, self.steps)):
            returns = support.sample(adapted.forward, adapted.params).undiscounted_return()
            yield from (Score(i, self.trajectories, step, suite.metric, v) for i, v in enumerate(returns.tolist()))
            bar.update(1)
        bar.close()


def validation_returns(suite: RLSuite, net: FunctionalModel, config: Mapping, features: bool = False,
                       grid: Iterable[float] = STEP_SIZES) -> dict[float, float]:
    """For each step size of `grid`: the mean return over `eval_tasks` validation tasks (not the test tasks) after
    `eval_steps` policy-gradient steps of the weights of `net` on `eval_trajectories` fresh paths each, later steps
    scaled as `later_inner_lr` scales `inner_lr`; a diverged return counts as -inf. With `features`, each task's
    parameters are the per-task input "task_features" (an oracle). `grid` is taken one value at a time, each
    validated before the next is drawn, so a lazy grid can drive a progress bar."""
    evaluator = RolloutEvaluator(config["eval_tasks"], config["eval_trajectories"], config["eval_steps"],
                                 config["gamma"], split="val")
    returns = {}
    for lr in grid:
        tasks = evaluator.tasks(suite)  # the same goals and rollout noise for every candidate
        *_, adapted = adapt_batch(net.loss, net.params, tasks.support_x, tasks.support_y,
                                  adaptation_step_sizes(lr, config["eval_steps"], config), adapt=net.weights,
                                  per_task={"task_features": tasks.features} if features else None,
                                  renew=tasks.renewer(net.forward))
        value = tasks.renew.sample(net.forward, adapted).undiscounted_return().mean().item()
        returns[lr] = value if math.isfinite(value) else -math.inf
    return returns
