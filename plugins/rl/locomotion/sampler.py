"""The batched sampler: `LocomotionBatch` steps E environments of one task family together (the `BatchEnv`
protocol of `plugins.rl.policy_gradient`), with the same observations and rewards as the registered gymnasium
environments for the same actions and initial states; `env_factory` builds them for `rollout`, reusing the
simulations from one rollout to the next.
"""
from __future__ import annotations

import warnings
from collections.abc import Callable

import numpy as np
import torch
from torch import Tensor

from plugins.rl.locomotion.simulators import Simulator, make_simulator
from plugins.rl.locomotion.tasks import (
    COM_SIZE,
    GYMNASIUM,
    HORIZON,
    RESET_NOISE,
    RLLAB_QPOS_NOISE,
    Variant,
    family_of,
    load_model,
    observation_size,
    task_rewards,
    unhealthy,
)


class LocomotionBatch:
    """E environments of one family (one task each), float32 tensors on the tasks' device.

    An environment is done when it terminates (ant: unhealthy), fails (a MuJoCo warning or error: it is counted in
    `failed`, rewarded 0 for that step and a RuntimeWarning names how many failed) or reaches the horizon 200 steps
    after its episode began; a done environment is no longer simulated, keeps its last observation and returns reward
    0 and done True until `reset` (all) or `restart` (some) starts a new episode."""

    horizon: int = HORIZON

    def __init__(self, family: str, tasks: Tensor, generator: torch.Generator, simulator: Simulator | None = None,
                 threads: int = 0, variant: Variant = GYMNASIUM) -> None:
        """tasks [E, 1]: one task parameter per environment; `generator` draws the initial states (the variant's
        noise); `simulator`: E simulations of the family's robot to reuse (else made, on `threads` threads), made
        for `variant` (`make_simulator`)."""
        self.family, self.variant = family_of(family), variant
        robot = self.family.robot
        if tasks.ndim != 2 or tasks.shape[1] != 1:
            raise ValueError(f"tasks must have shape [E, 1], got {tuple(tasks.shape)}")
        self.device = tasks.device
        self.tasks = tasks[:, 0].detach().double().cpu().numpy()
        self.generator = generator
        self.sim = simulator if simulator is not None else make_simulator(robot, len(tasks), threads, variant)
        if variant.torso_com and not self.sim.com_sensors:
            raise ValueError("the rllab variant needs a simulator made for it: make_simulator(..., variant=RLLAB)")
        if self.sim.size != len(tasks):
            raise ValueError(f"the simulator has {self.sim.size} simulations for {len(tasks)} tasks")
        model = load_model(robot)
        self.observation_size, self.action_size = observation_size(robot, variant), robot.action_size
        self.dt = model.opt.timestep * robot.frame_skip
        self._low, self._high = model.actuator_ctrlrange[:, 0], model.actuator_ctrlrange[:, 1]
        self._init_qpos, self._init_qvel = model.qpos0.copy(), np.zeros(model.nv)
        self.failed = torch.zeros(len(tasks), dtype=torch.bool)

    def reset(self) -> Tensor:
        """Draw every environment's initial state (`_initial_states`) -> observations [E, obs]."""
        return self.reset_to(*self._initial_states(len(self.tasks)))

    def restart(self, which: Tensor) -> Tensor:
        """Start a new episode, from an initial state drawn as `reset`'s, in the environments where `which` [E]
        (bool) holds; the others go on -> observations [E, obs] of all."""
        ids = np.flatnonzero(which.cpu().numpy())
        if len(ids):
            self.sim.reset(*self._initial_states(len(ids)), ids)
            self.steps[ids], self.done[ids] = 0, False
            if self._x is not None:
                self._x[ids] = self._x_position()[ids]
            self._observations[ids] = self._observe(self._contact_forces())[ids]
        return self._tensor(self._observations)

    def stop(self, which: Tensor) -> None:
        """End the episodes of the environments where `which` [E] (bool) holds: done, not simulated, until
        restarted."""
        self.done |= which.cpu().numpy()

    def _initial_states(self, n: int) -> tuple[np.ndarray, np.ndarray]:
        """n initial states drawn from the generator as the variant's: qpos0 + U(-0.1, 0.1) (gymnasium v5) or
        + 0.01 N(0, 1) (rllab) [n, nq], qvel 0.1 N(0, 1) [n, nv]."""
        g = self.generator
        shape = (n, len(self._init_qpos))
        if self.variant.normal_qpos_noise:
            noise = torch.randn(shape, generator=g, device=g.device, dtype=torch.float64).cpu().numpy()
            qpos = self._init_qpos + RLLAB_QPOS_NOISE * noise
        else:
            uniform = torch.rand(shape, generator=g, device=g.device, dtype=torch.float64)
            qpos = self._init_qpos + (uniform.cpu().numpy() * 2 - 1) * RESET_NOISE
        normal = torch.randn(n, len(self._init_qvel), generator=g, device=g.device, dtype=torch.float64)
        return qpos, self._init_qvel + RESET_NOISE * normal.cpu().numpy()

    def reset_to(self, qpos: np.ndarray, qvel: np.ndarray) -> Tensor:
        """Reset to the states qpos [E, nq], qvel [E, nv] (as gymnasium's `set_state`) -> observations [E, obs]."""
        self.sim.reset(qpos, qvel)
        self.steps = np.zeros(len(self.tasks), dtype=np.int64)  # of each environment's episode
        self.done = np.zeros(len(self.tasks), dtype=bool)
        self.failed = torch.zeros(len(self.tasks), dtype=torch.bool)
        self._x = None if self.variant.torso_com else self._x_position()
        self._observations = self._observe(self._contact_forces())
        return self._tensor(self._observations)

    def state(self) -> tuple[np.ndarray, np.ndarray]:
        """Copies of the current qpos [E, nq] and qvel [E, nv] (float64)."""
        return self.sim.qpos.copy(), self.sim.qvel.copy()

    def step(self, actions: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """actions [E, act] (clipped here to [-1, 1]) -> (observations [E, obs], rewards [E], done [E] bool)."""
        action = np.clip(actions.detach().double().cpu().numpy(), self._low, self._high)
        active = ~self.done
        ids = np.flatnonzero(active)
        failed = np.zeros_like(active)
        if len(ids):
            failed[ids] = self.sim.step(action, ids)
        live = active & ~failed
        contact_forces = self._contact_forces()
        observations = self._observe(contact_forces)
        rewards = task_rewards(self.family, self.tasks, self._velocity(live), action, contact_forces)
        rewards = np.where(live, rewards, 0.0)
        self._observations = np.where(live[:, None], observations, self._observations)
        self.steps += 1
        terminated = live & unhealthy(self.family.robot, self.sim.qpos, self.sim.qvel)
        self.done = self.done | terminated | failed | (self.steps >= self.horizon)
        self._report(failed)
        return self._tensor(self._observations), self._tensor(rewards), torch.from_numpy(self.done).to(self.device)

    def _velocity(self, live: np.ndarray) -> np.ndarray:
        """[E] the reward's x-velocity of this step: rllab's torso subtree's (the simulator's, of the new state) or
        gymnasium v5's change of `_x_position` over dt, whose last value the `live` [E] environments update."""
        if self._x is None:
            return self.sim.com[:, COM_SIZE]
        x = self._x_position()
        velocity = (x - self._x) / self.dt
        self._x = np.where(live, x, self._x)
        return velocity

    def _x_position(self) -> np.ndarray:
        """[E] the x coordinate whose change over dt is the velocity (gymnasium v5's choice per robot)."""
        return self.sim.torso_x.copy() if self.family.robot.torso_velocity else self.sim.qpos[:, 0].copy()

    def _contact_forces(self) -> np.ndarray:
        """[E, k] clipped contact forces (k = 0 for robots without contact costs)."""
        if self.family.robot.contact_cost_weight > 0:
            return self.sim.contact_forces
        return np.zeros((len(self.tasks), 0))

    def _observe(self, contact_forces: np.ndarray) -> np.ndarray:
        """[E, obs] float64: qpos without its skipped entries, qvel, the clipped contact forces [E, k]; rllab's: then
        the torso's rotation matrix (ant) and the torso subtree's centre of mass."""
        robot = self.family.robot
        if not self.variant.torso_com:
            return np.concatenate([self.sim.qpos[:, robot.skipped_qpos:], self.sim.qvel, contact_forces], axis=1)
        parts = [self.sim.qpos[:, robot.rllab_skipped_qpos:], self.sim.qvel, contact_forces]
        if robot.rllab_torso_xmat:
            parts.append(self.sim.torso_xmat)
        return np.concatenate([*parts, self.sim.com[:, :COM_SIZE]], axis=1)

    def _tensor(self, array: np.ndarray) -> Tensor:
        return torch.from_numpy(array).to(device=self.device, dtype=torch.float32)

    def _report(self, failed: np.ndarray) -> None:
        """Count the simulations that failed this step in `failed` and warn, naming how many."""
        if not failed.any():
            return
        self.failed |= torch.from_numpy(failed)
        warnings.warn(f"{self.family.name}: {int(failed.sum())} of {len(failed)} MuJoCo simulations failed at step "
                      f"{int(self.steps[failed].max())} of their episode (a NaN, inf or huge state, or a MuJoCo "
                      "error); they are done from this step, rewarded 0", RuntimeWarning, stacklevel=3)


def env_factory(family: str, generator: torch.Generator, threads: int = 0,
                variant: Variant = GYMNASIUM) -> Callable[[Tensor], LocomotionBatch]:
    """tasks [E, 1] -> a `LocomotionBatch` of `family` (`variant`) drawing its initial states from `generator`, for
    `rollout`.

    The simulations are made once per E and reused, so only the latest environment made for each E is valid."""
    simulators: dict[int, Simulator] = {}

    def make(tasks: Tensor) -> LocomotionBatch:
        n = len(tasks)
        if n not in simulators:
            simulators[n] = make_simulator(family_of(family).robot, n, threads, variant)
        return LocomotionBatch(family, tasks, generator, simulators[n], variant=variant)

    return make
