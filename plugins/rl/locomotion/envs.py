"""The locomotion tasks as single gymnasium environments: gymnasium's HalfCheetah-v5 and Ant-v5 (their models,
observations and reset noise) with the released code's time steps and rewards (`tasks`), registered as
`harness/HalfCheetahVel-v0`, `harness/HalfCheetahDir-v0`, `harness/AntVel-v0` and `harness/AntDir-v0` (TimeLimit
of 200 steps). `reset(options={"task": value})` sets the task (a goal velocity, or a direction +-1); without it a task
is drawn from `self.np_random` at every reset. Actions are clipped to [-1, 1] before the physics and the costs.
`gymnasium.make("harness/HalfCheetahDir-v0", variant="rllab")`: the released code's rllab conventions (`tasks`).
"""
from __future__ import annotations

from typing import Any

import gymnasium
import mujoco
import numpy as np
from gymnasium.envs.mujoco.ant_v5 import AntEnv
from gymnasium.envs.mujoco.half_cheetah_v5 import HalfCheetahEnv
from gymnasium.utils import EzPickle

from plugins.rl.locomotion.tasks import (
    ANT,
    CHEETAH,
    FAMILIES,
    HORIZON,
    RESET_NOISE,
    RLLAB_QPOS_NOISE,
    Family,
    check_task,
    family_of,
    observation_size,
    task_rewards,
    variant_of,
)


class _TaskEnv:
    """The task handling both environments share: `reset(options={"task": ...})`, clipping, the reward."""

    family: Family
    task: float
    np_random: np.random.Generator
    action_space: gymnasium.spaces.Box

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[np.ndarray, dict[str, Any]]:
        """-> (observation, info with "task"): gymnasium's reset (noisy initial state), then the task."""
        observation, info = super().reset(seed=seed)  # type: ignore[misc]
        if options is not None and "task" in options:
            self.task = check_task(self.family, options["task"])
        elif self.family.goal == "velocity":
            self.task = float(self.np_random.uniform(0.0, self.family.max_velocity))
        else:
            self.task = float(self.np_random.choice([-1.0, 1.0]))
        return observation, {**info, "task": self.task}

    def _clip(self, action: np.ndarray) -> np.ndarray:
        """The action in float64, clipped to the action space."""
        return np.clip(np.asarray(action, dtype=np.float64), self.action_space.low, self.action_space.high)

    def _reward(self, x_velocity: float, action: np.ndarray, contact_forces: np.ndarray) -> float:
        """`tasks.task_rewards` of this one step (the sampler's formula, evaluated the same way)."""
        rewards = task_rewards(self.family, np.array([self.task]), np.array([x_velocity]), action[None],
                               contact_forces.reshape(1, -1))
        return float(rewards[0])


class HalfCheetahTaskEnv(_TaskEnv, HalfCheetahEnv):
    """HalfCheetah-v5 at dt 0.01 (frame_skip 1) with a velocity or direction task; never terminates. `variant`
    "rllab": observation [20] ending with the torso subtree's centre of mass, qpos0 + 0.01 N(0, 1) at reset, the
    velocity of the subtree's centre of mass (a forward pass after each step computes both)."""

    def __init__(self, family: str = "cheetah-velocity", variant: str | None = None, **kwargs: Any) -> None:
        self.family = family_of(family)
        if self.family.robot is not CHEETAH:
            raise ValueError(f"{family} is not a cheetah family")
        self.variant = variant_of(variant, CHEETAH)
        self.task = 0.0
        HalfCheetahEnv.__init__(self, frame_skip=CHEETAH.frame_skip, reset_noise_scale=RESET_NOISE, **kwargs)
        size = observation_size(CHEETAH, self.variant)
        self.observation_space = gymnasium.spaces.Box(-np.inf, np.inf, (size,), np.float64)
        EzPickle.__init__(self, family, variant, **kwargs)

    def reset_model(self) -> np.ndarray:
        """gymnasium's initial state, or rllab's: qpos0 + 0.01 N(0, 1), qvel 0.1 N(0, 1)."""
        if not self.variant.normal_qpos_noise:
            return super().reset_model()
        qpos = self.init_qpos + RLLAB_QPOS_NOISE * self.np_random.standard_normal(self.model.nq)
        self.set_state(qpos, self.init_qvel + RESET_NOISE * self.np_random.standard_normal(self.model.nv))
        return self._get_obs()

    def _get_obs(self) -> np.ndarray:
        observation = super()._get_obs()
        if self.variant.torso_com:
            return np.concatenate([observation, self.data.body("torso").subtree_com])
        return observation

    def step(self, action: np.ndarray) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        """-> (observation [17 or 20], reward, False, False, info with x_velocity and task)."""
        action = self._clip(action)
        x_before = self.data.qpos[0]
        self.do_simulation(action, self.frame_skip)
        if self.variant.torso_com:
            mujoco.mj_forward(self.model, self.data)
            mujoco.mj_subtreeVel(self.model, self.data)
            x_velocity = float(self.data.body("torso").subtree_linvel[0])
        else:
            x_velocity = (self.data.qpos[0] - x_before) / self.dt
        reward = self._reward(x_velocity, action, np.zeros(0))
        return self._get_obs(), reward, False, False, {"x_velocity": x_velocity, "task": self.task}


class AntTaskEnv(_TaskEnv, AntEnv):
    """Ant-v5 at dt 0.02 (frame_skip 2) with a velocity or direction task; terminates when unhealthy (torso z
    outside [0.2, 1.0] or a non-finite state). Observation: gymnasium Ant-v5's 105 = qpos[2:] + qvel +
    clip(cfrc_ext[1:], -1, 1), the contact forces computed by gymnasium's mj_rnePostConstraint after the step."""

    def __init__(self, family: str = "ant-velocity", variant: str | None = None, **kwargs: Any) -> None:
        self.family = family_of(family)
        if self.family.robot is not ANT:
            raise ValueError(f"{family} is not an ant family")
        variant_of(variant, ANT)  # gymnasium's only
        self.task = 0.0
        AntEnv.__init__(self, frame_skip=ANT.frame_skip, reset_noise_scale=RESET_NOISE,
                        contact_force_range=(-1.0, 1.0), healthy_z_range=ANT.healthy_z, **kwargs)
        EzPickle.__init__(self, family, variant, **kwargs)

    def step(self, action: np.ndarray) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        """-> (observation [105], reward, terminated, False, info with x_velocity and task)."""
        action = self._clip(action)
        x_before = self.data.body(self._main_body).xpos[0]
        self.do_simulation(action, self.frame_skip)
        x_velocity = (self.data.body(self._main_body).xpos[0] - x_before) / self.dt
        reward = self._reward(x_velocity, action, self.contact_forces[1:])
        info = {"x_velocity": x_velocity, "task": self.task}
        return self._get_obs(), reward, not self.is_healthy, False, info


_ENTRY_POINTS = {CHEETAH.name: "HalfCheetahTaskEnv", ANT.name: "AntTaskEnv"}


def register_envs() -> None:
    """Register the four environments with gymnasium (TimeLimit of 200 steps), once."""
    for family in FAMILIES.values():
        if family.env_id not in gymnasium.envs.registry:
            gymnasium.register(id=family.env_id, entry_point=f"{__name__}:{_ENTRY_POINTS[family.robot.name]}",
                               kwargs={"family": family.name}, max_episode_steps=HORIZON)
