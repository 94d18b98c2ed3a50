"""The locomotion tasks as single gymnasium environments: gymnasium's HalfCheetah-v5 and Ant-v5 (their models,
observations and reset noise) with the released code's time steps and rewards (`tasks`), registered as
`harness/HalfCheetahVel-v0`, `harness/HalfCheetahDir-v0`, `harness/AntVel-v0` and `harness/AntDir-v0` (TimeLimit
of 200 steps). `reset(options={"task": value})` sets the task (a goal velocity, or a direction +-1); without it a task
is drawn from `self.np_random` at every reset. Actions are clipped to [-1, 1] before the physics and the costs.
`gymnasium.make("harness/HalfCheetahDir-v0", variant="rllab")`: the released code's rllab conventions (`tasks`).
"""
from __future__ import annotations

from collections.abc import Callable
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
    Robot,
    Variant,
    check_task,
    family_of,
    observation_size,
    task_rewards,
    variant_of,
)


class _TaskEnv:
    """What both environments share: `reset(options={"task": ...})`, clipping, the reward, the rllab variant (its
    initial states, its forward pass after each step, its observation)."""

    family: Family
    variant: Variant
    task: float
    np_random: np.random.Generator
    action_space: gymnasium.spaces.Box
    model: mujoco.MjModel
    data: mujoco.MjData
    init_qpos: np.ndarray
    init_qvel: np.ndarray

    def _setup(self, family: str, variant: str | None, robot: Robot) -> None:
        """Set the family (of `robot`), the variant and a neutral task, before gymnasium's __init__."""
        self.family = family_of(family)
        if self.family.robot is not robot:
            raise ValueError(f"{family} is not a {robot.name} family")
        self.variant = variant_of(variant)
        self.task = 0.0

    def _headless(self) -> None:
        """Declare no render modes: the harness never renders, and gymnasium's (a window, or an OpenGL context for
        frames) fail on a machine without a display, where `gymnasium.utils.env_checker.check_env` tries them all.
        For pictures, render gymnasium's own HalfCheetah-v5 or Ant-v5."""
        self.metadata = {**self.metadata, "render_modes": []}

    def _observation_space(self) -> None:
        """The observation space of the variant's observation size (after gymnasium's __init__)."""
        size = observation_size(self.family.robot, self.variant)
        self.observation_space = gymnasium.spaces.Box(-np.inf, np.inf, (size,), np.float64)

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

    def reset_model(self) -> np.ndarray:
        """gymnasium's initial state, or rllab's: qpos0 + 0.01 N(0, 1), qvel 0.1 N(0, 1)."""
        if not self.variant.normal_qpos_noise:
            return super().reset_model()  # type: ignore[misc]
        qpos = self.init_qpos + RLLAB_QPOS_NOISE * self.np_random.standard_normal(self.model.nq)
        self.set_state(qpos, self.init_qvel + RESET_NOISE * self.np_random.standard_normal(self.model.nv))
        return self._get_obs()

    def set_state(self, qpos: np.ndarray, qvel: np.ndarray) -> None:
        """gymnasium's (state, then mj_forward); rllab's quantities of that state too."""
        super().set_state(qpos, qvel)  # type: ignore[misc]
        if self.variant.torso_com:
            self._rllab_forward(forward=False)

    def _rllab_forward(self, forward: bool = True) -> None:
        """rllab's forward pass on the current state, with what MuJoCo 1.31's computed in it (contact forces) and
        the subtrees' velocities."""
        if forward:
            mujoco.mj_forward(self.model, self.data)
        mujoco.mj_rnePostConstraint(self.model, self.data)
        mujoco.mj_subtreeVel(self.model, self.data)

    def _get_obs(self) -> np.ndarray:
        """gymnasium v5's observation, or rllab's: qpos (its skipped entries left out), qvel, clip(cfrc_ext, -1, 1)
        of every body and the torso's rotation matrix (ant), the torso subtree's centre of mass."""
        if not self.variant.torso_com:
            return super()._get_obs()  # type: ignore[misc]
        robot, torso = self.family.robot, self.data.body("torso")
        parts = [self.data.qpos[robot.rllab_skipped_qpos:], self.data.qvel]
        if robot.contact_cost_weight > 0:
            parts.append(self._rllab_contact_forces())
        if robot.rllab_torso_xmat:
            parts.append(torso.xmat)
        return np.concatenate([*parts, torso.subtree_com])

    def _rllab_contact_forces(self) -> np.ndarray:
        """clip(cfrc_ext, -1, 1) of every body, the world's included (rllab's), flattened."""
        return np.clip(self.data.cfrc_ext, -1.0, 1.0).ravel()

    def _step(self, action: np.ndarray, x_position: Callable[[], float]) -> tuple[float, float]:
        """Clip `action`, simulate, -> (x-velocity, reward): gymnasium's velocity (the change of `x_position()` over
        dt) or rllab's (the torso subtree's, after its forward pass)."""
        action = self._clip(action)
        x = x_position()
        self.do_simulation(action, self.frame_skip)  # type: ignore[attr-defined]
        if self.variant.torso_com:
            self._rllab_forward()
            x_velocity = float(self.data.body("torso").subtree_linvel[0])
        else:
            x_velocity = (x_position() - x) / self.dt  # type: ignore[attr-defined]
        return x_velocity, self._reward(x_velocity, action, self._cost_contact_forces())

    def _cost_contact_forces(self) -> np.ndarray:
        """The clipped contact forces the reward charges for (none for the cheetah)."""
        if self.family.robot.contact_cost_weight == 0:
            return np.zeros(0)
        return self._rllab_contact_forces() if self.variant.torso_com else self.contact_forces[1:]  # type: ignore

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
    "rllab": rllab's observation [20], initial states and velocity (`tasks`)."""

    def __init__(self, family: str = "cheetah-velocity", variant: str | None = None, **kwargs: Any) -> None:
        self._setup(family, variant, CHEETAH)
        HalfCheetahEnv.__init__(self, frame_skip=CHEETAH.frame_skip, reset_noise_scale=RESET_NOISE, **kwargs)
        self._headless()
        self._observation_space()
        EzPickle.__init__(self, family, variant, **kwargs)

    def step(self, action: np.ndarray) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        """-> (observation [17 or 20], reward, False, False, info with x_velocity and task)."""
        x_velocity, reward = self._step(action, lambda: float(self.data.qpos[0]))
        return self._get_obs(), reward, False, False, {"x_velocity": x_velocity, "task": self.task}


class AntTaskEnv(_TaskEnv, AntEnv):
    """Ant-v5 at dt 0.02 (frame_skip 2) with a velocity or direction task; terminates when unhealthy (torso z
    outside [0.2, 1.0] or a non-finite state). Observation: gymnasium Ant-v5's 105 = qpos[2:] + qvel +
    clip(cfrc_ext[1:], -1, 1), the contact forces computed by gymnasium's mj_rnePostConstraint after the step;
    `variant` "rllab": rllab's [125], initial states and velocity (`tasks`)."""

    def __init__(self, family: str = "ant-velocity", variant: str | None = None, **kwargs: Any) -> None:
        self._setup(family, variant, ANT)
        AntEnv.__init__(self, frame_skip=ANT.frame_skip, reset_noise_scale=RESET_NOISE,
                        contact_force_range=(-1.0, 1.0), healthy_z_range=ANT.healthy_z, **kwargs)
        self._headless()
        self._observation_space()
        EzPickle.__init__(self, family, variant, **kwargs)

    def step(self, action: np.ndarray) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        """-> (observation [105 or 125], reward, terminated, False, info with x_velocity and task)."""
        x_velocity, reward = self._step(action, lambda: float(self.data.body(self._main_body).xpos[0]))
        info = {"x_velocity": x_velocity, "task": self.task}
        return self._get_obs(), reward, not self.is_healthy, False, info


_ENTRY_POINTS = {CHEETAH.name: "HalfCheetahTaskEnv", ANT.name: "AntTaskEnv"}


def register_envs() -> None:
    """Register the four environments with gymnasium (TimeLimit of 200 steps), once."""
    for family in FAMILIES.values():
        if family.env_id not in gymnasium.envs.registry:
            gymnasium.register(id=family.env_id, entry_point=f"{__name__}:{_ENTRY_POINTS[family.robot.name]}",
                               kwargs={"family": family.name}, max_episode_steps=HORIZON)
