"""2D navigation of the MAML paper (Finn et al. 2017, section 5.3): a point robot starts at the origin and must move to
a goal drawn uniformly from [-0.5, 0.5]^2. The observation is the position, the action a velocity clipped elementwise to
[-0.1, 0.1], the reward minus the Euclidean distance of the new position to the goal; an episode terminates within 0.01
of the goal in both coordinates and is truncated after H = 100 steps.

Dynamics follow the authors' released code, rllab `maml_examples/point_env_randgoal.py` (github.com/cbfinn/maml_rl).
There the policy acts through rllab's `normalize` wrapper, which maps an action a in [-1, 1] to clip(0.1 a, -0.1, 0.1);
here the environment only clips, so a policy reproducing that scaling multiplies its output by 0.1 itself.

`NavigationBatch` steps many environments at once in torch (one goal each); `Navigation2DEnv` is the same task as a
single gymnasium environment, registered as `harness/Navigation2D-v0`. Both compute in float32 with the same formula
and take the square root in float64 (correctly rounded to float32 on every backend; torch's float32 CPU sqrt is not),
so identical actions give bit-identical rewards.
"""
from __future__ import annotations

from typing import Any

import gymnasium
import numpy as np
import torch
from gymnasium import spaces
from torch import Tensor

HORIZON = 100
MAX_SPEED = 0.1
GOAL_RANGE = 0.5
GOAL_TOLERANCE = 0.01
ENV_ID = "harness/Navigation2D-v0"


def sample_goals(n: int, generator: torch.Generator) -> Tensor:
    """n goals uniform in [-0.5, 0.5]^2 -> float32 [n, 2] on the generator's device."""
    return (torch.rand(n, 2, generator=generator, device=generator.device) * 2 - 1) * GOAL_RANGE


class NavigationBatch:
    """E navigation environments stepped together, one goal each; float32 tensors on the goals' device.

    All environments reset together (`restart` starts a new episode in some); each counts its own steps. Once an
    environment is done (terminated or at the horizon) its position stays frozen and it returns reward 0 and done True
    until it is reset or restarted."""

    observation_size: int = 2
    action_size: int = 2
    horizon: int = HORIZON

    def __init__(self, goals: Tensor) -> None:
        """goals [E, 2]: one goal per environment."""
        if goals.ndim != 2 or goals.shape[1] != 2:
            raise ValueError(f"goals must have shape [E, 2], got {tuple(goals.shape)}")
        self.goals = goals.to(torch.float32)
        self.reset()

    def reset(self) -> Tensor:
        """Put every environment at the origin and reset its step counter -> observations [E, 2]."""
        self.position = torch.zeros_like(self.goals)
        self.done = torch.zeros(len(self.goals), dtype=torch.bool, device=self.goals.device)
        self.steps = torch.zeros(len(self.goals), dtype=torch.long, device=self.goals.device)
        return self.position.clone()

    def restart(self, which: Tensor) -> Tensor:
        """Start a new episode in the environments where `which` [E] (bool) holds -> observations [E, 2] of all."""
        self.position = torch.where(which[:, None], 0, self.position)
        self.done = self.done & ~which
        self.steps = torch.where(which, 0, self.steps)
        return self.position.clone()

    def stop(self, which: Tensor) -> None:
        """End the episodes of the environments where `which` [E] (bool) holds: done until restarted."""
        self.done = self.done | which

    def step(self, actions: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """actions [E, 2] (unclipped) -> (observations [E, 2], rewards [E], done [E] bool).

        done = terminated (within 0.01 of the goal in both coordinates) or the horizon is reached. Environments that are
        already done keep their state frozen and get reward 0 and done True; the caller masks them."""
        active = ~self.done
        velocity = actions.to(self.goals).clamp(-MAX_SPEED, MAX_SPEED)
        moved = self.position + velocity
        offset = moved - self.goals
        distance = torch.sqrt((offset[:, 0] * offset[:, 0] + offset[:, 1] * offset[:, 1]).double()).float()
        terminated = (offset.abs() < GOAL_TOLERANCE).all(dim=1)
        self.position = torch.where(active[:, None], moved, self.position)
        rewards = torch.where(active, -distance, torch.zeros_like(distance))
        self.steps += 1
        self.done = self.done | terminated | (self.steps >= self.horizon)
        return self.position.clone(), rewards, self.done.clone()


class Navigation2DEnv(gymnasium.Env[np.ndarray, np.ndarray]):
    """One navigation environment (gymnasium 1.x API), float32 like `NavigationBatch`.

    `reset(options={"goal": (gx, gy)})` sets the goal; without it a goal is drawn from `self.np_random` at every reset.
    `step` clips the action to [-0.1, 0.1]; `truncated` is True at step 100 unless the episode terminated there."""

    metadata: dict[str, Any] = {"render_modes": []}

    def __init__(self) -> None:
        self.observation_space = spaces.Box(-np.inf, np.inf, (2,), np.float32)
        self.action_space = spaces.Box(-MAX_SPEED, MAX_SPEED, (2,), np.float32)
        self._position = np.zeros(2, np.float32)
        self._goal = np.zeros(2, np.float32)
        self._steps = 0

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[np.ndarray, dict[str, Any]]:
        """-> (observation: the origin, info {"goal": float32 [2]})."""
        super().reset(seed=seed)
        if options is not None and "goal" in options:
            self._goal = np.asarray(options["goal"], dtype=np.float32).reshape(2)
        else:
            self._goal = self.np_random.uniform(-GOAL_RANGE, GOAL_RANGE, size=2).astype(np.float32)
        self._position = np.zeros(2, np.float32)
        self._steps = 0
        return self._position.copy(), {"goal": self._goal.copy()}

    def step(self, action: np.ndarray) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        """-> (observation, reward = -distance of the new position to the goal, terminated, truncated, info)."""
        velocity = np.clip(np.asarray(action, dtype=np.float32).reshape(2), -MAX_SPEED, MAX_SPEED)
        self._position = self._position + velocity
        offset = self._position - self._goal
        distance = np.float32(np.sqrt(np.float64(offset[0] * offset[0] + offset[1] * offset[1])))
        terminated = bool(np.all(np.abs(offset) < GOAL_TOLERANCE))
        self._steps += 1
        truncated = not terminated and self._steps >= HORIZON
        return self._position.copy(), -float(distance), terminated, truncated, {"goal": self._goal.copy()}


def register_envs() -> None:
    """Register `harness/Navigation2D-v0` (TimeLimit of 100 steps) with gymnasium, once."""
    if ENV_ID not in gymnasium.envs.registry:
        gymnasium.register(id=ENV_ID, entry_point="plugins.rl.navigation:Navigation2DEnv", max_episode_steps=HORIZON)


register_envs()
