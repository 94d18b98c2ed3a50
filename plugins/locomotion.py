"""MuJoCo locomotion (paper section 5.3, Table 5, Figure 5): a half cheetah or an ant must run at a goal velocity
or in a goal direction, one task per goal; four suites, `cheetah-velocity`, `cheetah-direction`, `ant-velocity`,
`ant-direction`, on gymnasium's v5 models with the released code's time steps and rewards
(`plugins.rl.locomotion.tasks`). Policy: Gaussian MLP 100-100 (ReLU), state-independent log-std; inner step
REINFORCE with the linear feature baseline; meta-optimiser TRPO (`plugins.rl.trainer`); evaluation on 40 frozen
tasks, up to 3 steps of 20 rollouts (40 for ant-direction) of H = 200 (`plugins.rl.evaluation`).

The paper profile: 500 meta-iterations of 40 tasks x 20 rollouts (ant-direction 40), `inner_lr` 0.1 and 0.05 after
the first step at evaluation. TRPO's KL curvature on every task of the meta-batch (`cg_subsample` 1, the released
code's `subsample_factor`): on a quarter of them, as the 2D navigation's profile, a trained second-order MAML's
full step had 6x the KL it was sized for on all 40 tasks (0.063 against 0.011) and 5 backtracks took 62% of its
progress away (`benchmarks/diagnostics/trpo_curvature.py`); it costs MAML 23 s per meta-iteration instead of
10.5-11 (cheetah, two runs side by side on the 2-core CPU). One thread for torch and one for the simulations
(`threads`, `sampler_threads`); on a machine with more cores, raise `--jobs`, or give one run
`--set sampler_threads=N`.

Every profile runs the released code's rllab environments (`variant` rllab: rllab's observations - the cheetah's 20
end with the torso subtree's centre of mass, the ant's 125 hold its x-y position -, the whole robot's centre-of-mass
velocity in the reward, rllab's initial states; `plugins.rl.locomotion.tasks`): with gymnasium v5's 17 cheetah
observations (`--set variant=gymnasium`) second-order MAML reached a third of the released model's return after one
step at the released settings (docs/results.md).
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from harness import hookimpl
from harness.errors import UsageError
from harness.protocols import Forward, Key, Params, RLSuite
from plugins.rl.evaluation import RolloutEvaluator
from plugins.rl.locomotion.sampler import LocomotionBatch
from plugins.rl.locomotion.simulators import Simulator, make_simulator
from plugins.rl.locomotion.tasks import VARIANTS, family_of, observation_size, sample_tasks, variant_of
from plugins.rl.policy_gradient import ROLLOUT_KEYS, GaussianMLPPolicy, Paths, reinforce_loss, rollout
from plugins.rl.trainer import KEYS, TRPOTrainer

PAPER: Mapping[str, Any] = {
    "meta_iterations": 500, "meta_batch": 40, "trajectories": 20, "inner_lr": 0.1, "later_inner_lr": 0.05,
    "inner_steps": 1, "gamma": 0.99, "max_kl": 0.01, "cg_iters": 10, "cg_damping": 1e-5, "cg_subsample": 1.0,
    "backtrack_ratio": 0.8, "max_backtracks": 15, "eval_tasks": 40, "eval_trajectories": 20, "eval_steps": 3,
    "threads": 1, "sampler_threads": 1, "checkpoint_every": 5, "keep_best": True, "variant": "rllab",
}
SMOKE: Mapping[str, Any] = {
    "meta_iterations": 1, "meta_batch": 2, "trajectories": 2, "eval_tasks": 2, "eval_trajectories": 2,
    "eval_steps": 1, "cg_iters": 2, "threads": 1, "sampler_threads": 1,
}
QUICK: Mapping[str, Any] = {"meta_iterations": 30, "meta_batch": 20, "trajectories": 10, "eval_tasks": 20}
ANT: Mapping[str, Any] = {"fill_env_steps": True, "finish_begun": True}
"""The ant's episodes end early (unhealthy torso), so its batches are counted in env steps as the released code's
sampler counted them (`rollout`'s `fill_env_steps`), keeping every episode begun before a task's budget is spent
(`finish_begun`: dropping the running ones favoured the falls); the cheetah's never end early, and would get the
same batches."""


class LocomotionSuite(RLSuite):
    """A locomotion task family as a suite; subclasses name the family."""

    family: ClassVar[str]
    name: ClassVar[str]
    feature_names: ClassVar[tuple[str, ...]]  # the task parameter: the oracle's extra input
    kind = "rl"
    problem = "control"
    metric = "return"
    lower_is_better = False
    profiles: ClassVar[Mapping[str, Mapping[str, Any]]] = {
        "smoke": {**PAPER, **SMOKE}, "quick": {**PAPER, **QUICK}, "paper": PAPER}
    keys: ClassVar[Mapping[str, Key]] = {
        **KEYS,
        "sampler_threads": Key(int, "threads that step the simulations", low=1, high=1024),
        "variant": Key(str, "the environments' conventions (`plugins.rl.locomotion.tasks`)",
                       choices=tuple(name for name in VARIANTS if name)),
    }

    def __init__(self, config: Mapping[str, Any]) -> None:
        self.config = config
        self.robot = family_of(self.family).robot
        try:
            self.variant = variant_of(config.get("variant"))
        except ValueError as error:
            raise UsageError(f"{self.name}: {error}") from None
        self._simulators: dict[int, Simulator] = {}

    @property
    def pooled_classes(self) -> int:
        return 0

    def make_model(self, extra_inputs: int = 0, outputs: int | None = None) -> nn.Module:
        return GaussianMLPPolicy(observation_size(self.robot, self.variant) + extra_inputs, self.robot.action_size)

    def append_inputs(self, x: Tensor, extra: Tensor) -> Tensor:
        return torch.cat([x, extra.expand(*x.shape[:-1], extra.shape[-1])], dim=-1)

    def loss(self, outputs: Tensor, targets: Tensor) -> Tensor:
        return reinforce_loss(outputs, targets)

    def sample_tasks(self, n: int, generator: torch.Generator) -> Tensor:
        return sample_tasks(self.family, n, generator)

    def rollout(self, policy: Forward, params: Params, tasks: Tensor, trajectories: int,
                generator: torch.Generator) -> Paths:
        """Rollouts of every task's policy, all simulated together; the initial states are drawn from `generator`
        (the simulations are kept from one call to the next)."""
        def make(t: Tensor) -> LocomotionBatch:
            return LocomotionBatch(self.family, t, generator, self._simulator(len(t)), variant=self.variant)

        return rollout(make, policy, params, tasks, trajectories, generator,
                       fill_env_steps=self.config.get("fill_env_steps", False),
                       finish_begun=self.config.get("finish_begun", False))

    def _simulator(self, size: int) -> Simulator:
        if size not in self._simulators:
            self._simulators[size] = make_simulator(self.robot, size, self.config["sampler_threads"], self.variant)
        return self._simulators[size]

    def trainer(self, config: Mapping[str, Any]) -> TRPOTrainer:
        return TRPOTrainer(self, config)

    def evaluator(self, device: torch.device) -> RolloutEvaluator:
        return RolloutEvaluator.from_config(self.config, device)


class CheetahVelocity(LocomotionSuite):
    """Half cheetah running at a goal velocity U[0, 2] (reward -|v - g| - 0.05 |a|^2), 200 steps of 0.01 s."""

    family = name = "cheetah-velocity"
    feature_names = ("goal_velocity",)


class CheetahDirection(LocomotionSuite):
    """Half cheetah running forward or backward (reward d v - 0.05 |a|^2), 200 steps of 0.01 s."""

    family = name = "cheetah-direction"
    feature_names = ("direction",)


class AntVelocity(LocomotionSuite):
    """Ant running at a goal velocity U[0, 3] (reward -|v - g| + 1.05 - control, contact costs), 200 steps of 0.02 s.

    An episode ends when the torso leaves z in [0.2, 1]."""

    family = name = "ant-velocity"
    feature_names = ("goal_velocity",)
    profiles: ClassVar[Mapping[str, Mapping[str, Any]]] = {
        "smoke": {**PAPER, **SMOKE, **ANT}, "quick": {**PAPER, **QUICK, **ANT}, "paper": {**PAPER, **ANT}}
    keys: ClassVar[Mapping[str, Key]] = {**LocomotionSuite.keys, **ROLLOUT_KEYS}


class AntDirection(LocomotionSuite):
    """Ant running forward or backward (reward d v + 0.05 - control and contact costs), 40 rollouts per step."""

    family = name = "ant-direction"
    feature_names = ("direction",)
    profiles: ClassVar[Mapping[str, Mapping[str, Any]]] = {
        "smoke": {**PAPER, **SMOKE, **ANT},
        "quick": {**PAPER, **QUICK, **ANT, "trajectories": 20},
        "paper": {**PAPER, **ANT, "trajectories": 40, "eval_trajectories": 40},
    }
    keys: ClassVar[Mapping[str, Key]] = {**LocomotionSuite.keys, **ROLLOUT_KEYS}


@hookimpl
def harness_suites() -> list[type]:
    return [CheetahVelocity, CheetahDirection, AntVelocity, AntDirection]
