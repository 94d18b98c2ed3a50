"""E MuJoCo simulations of one model stepped together, two ways (chosen per robot and variant by `make_simulator`):

- `BatchSimulator`: `mujoco.batch.Batch` (MuJoCo 4.0) steps them in C on a thread pool; the fastest, bit-identical to
  one MjData per simulation. Its forward passes compute contact forces only when a sensor needs them.
- `LoopSimulator`: one MjData each, stepped by a Python loop on a thread pool (mj_step releases the GIL) and followed
  by mj_rnePostConstraint as gymnasium does, so cfrc_ext and the torso's xpos are gymnasium Ant-v5's. A sensor that
  needs cfrc_ext would make Batch compute it, but inside mj_step, before the RK4 stages: not the values gymnasium
  reports (those come from the last stage).

For the rllab variant, `BatchSimulator(rllab=True)` makes a forward pass after each step (and reset), so that what it
reports is the new state's, as rllab's: the model's added sensors (`load_model`) give the torso subtree's centre of
mass and velocity (`com`) and, for the ant, make that forward pass compute the contact forces of every body.

Both report simulation failures instead of keeping them: MuJoCo resets a simulation whose qpos, qvel or qacc go bad
(NaN, inf, huge) and counts a warning; `step` returns which simulations raised a warning or a MuJoCo error.
"""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Protocol

import mujoco
import mujoco.batch
import numpy as np

from harness.machine import cpu_count
from plugins.rl.locomotion.tasks import GYMNASIUM, Robot, Variant, load_model

TORSO = 1  # gymnasium v5's main body of both robots


class Simulator(Protocol):
    """E simulations; qpos [E, nq] and qvel [E, nv] (float64) are the current state of each."""

    size: int
    qpos: np.ndarray
    qvel: np.ndarray
    com_sensors: bool
    """When set, `com` [E, 6] holds the torso subtree's centre of mass and linear velocity of the current state."""

    def reset(self, qpos: np.ndarray, qvel: np.ndarray, ids: np.ndarray | None = None) -> None:
        """Reset simulations `ids` (None: all) to MuJoCo's defaults with the states qpos [len(ids), nq] and qvel
        [len(ids), nv] (then mj_forward), clearing their warnings; the others are untouched."""
        ...

    def step(self, ctrl: np.ndarray, ids: np.ndarray) -> np.ndarray:
        """Step simulations `ids` by the robot's frame skip with ctrl[ids] (ctrl [E, act]) -> failed [len(ids)] bool:
        those that raised a MuJoCo warning or error since their reset (their state is then meaningless)."""
        ...


class BatchSimulator:
    """E simulations on `mujoco.batch.Batch` with `threads` threads (0: all CPUs); qpos and qvel are live views.
    With `rllab`, of the current state (after a forward pass): `com` [E, 6], the torso subtree's centre of mass and
    linear velocity; for robots with contact costs `contact_forces` and `torso_xmat` [E, 9] too."""

    def __init__(self, robot: Robot, size: int, threads: int = 0, rllab: bool = False) -> None:
        self.size, self.frame_skip, self.com_sensors = size, robot.frame_skip, rllab
        self.batch = mujoco.batch.Batch(load_model(robot, rllab), size, nthread=threads or cpu_count())
        self.qpos, self.qvel, self._ctrl = (self.batch.bind(name) for name in ("qpos", "qvel", "ctrl"))
        self._stage = mujoco.mjtStage.mjSTAGE_ACC if rllab else mujoco.mjtStage.mjSTAGE_NONE
        if rllab:
            self.com = self.batch.bind("sensordata")[:, :6]
            if robot.contact_cost_weight > 0:
                self._cfrc_ext, self._xmat = self.batch.bind("cfrc_ext"), self.batch.bind("xmat")
        self._errors = np.zeros(size, dtype=bool)

    @property
    def contact_forces(self) -> np.ndarray:
        """[E, 6 nbody] clip(cfrc_ext, -1, 1) of every body, the world's included (rllab's), flattened."""
        return np.clip(self._cfrc_ext, -1.0, 1.0).reshape(self.size, -1)

    @property
    def torso_xmat(self) -> np.ndarray:
        """[E, 9] the torso's rotation matrix."""
        return self._xmat[:, TORSO]

    def reset(self, qpos: np.ndarray, qvel: np.ndarray, ids: np.ndarray | None = None) -> None:
        rows = slice(None) if ids is None else ids
        self.batch.reset(ids, stage=mujoco.mjtStage.mjSTAGE_NONE)
        self.qpos[rows], self.qvel[rows] = qpos, qvel
        self._errors[rows] = False
        self._call(self.batch.forward, ids)

    def step(self, ctrl: np.ndarray, ids: np.ndarray) -> np.ndarray:
        self._ctrl[ids] = ctrl[ids]
        which = None if len(ids) == self.size else ids
        self._call(self.batch.step, which, nstep=self.frame_skip, stage=self._stage)
        return self._errors[ids] | (self.batch.warning[ids, :, 1].sum(axis=1) > 0)

    def _call(self, method, *args, **kwargs) -> None:
        """Run a Batch call; the simulations MuJoCo raised in keep their state and are marked failed."""
        try:
            method(*args, **kwargs)
        except mujoco.batch.SimulationError as error:
            self._errors[error.ids] = True


class LoopSimulator:
    """E MjData stepped by mj_step then mj_rnePostConstraint (as gymnasium's MujocoEnv) on `threads` threads (0: all
    CPUs). Besides qpos and qvel: torso_x [E] (the torso's xpos x) and `contact_forces`."""

    com_sensors = False

    def __init__(self, robot: Robot, size: int, threads: int = 0) -> None:
        self.model = load_model(robot)
        self.size, self.frame_skip = size, robot.frame_skip
        self.datas = [mujoco.MjData(self.model) for _ in range(size)]
        self.qpos = np.zeros((size, self.model.nq))
        self.qvel = np.zeros((size, self.model.nv))
        self.torso_x = np.zeros(size)
        self._cfrc_ext = np.zeros((size, self.model.nbody, 6))
        self._failed = np.zeros(size, dtype=bool)
        self.threads = threads or cpu_count()
        self._pool = ThreadPoolExecutor(self.threads) if self.threads > 1 else None

    @property
    def contact_forces(self) -> np.ndarray:
        """[E, 6 (nbody - 1)] clip(cfrc_ext[1:], -1, 1), flattened as in gymnasium Ant-v5's observation."""
        return np.clip(self._cfrc_ext[:, 1:], -1.0, 1.0).reshape(self.size, -1)

    def reset(self, qpos: np.ndarray, qvel: np.ndarray, ids: np.ndarray | None = None) -> None:
        """As gymnasium's reset: mj_resetData, the state, mj_forward (cfrc_ext stays zero until the first step)."""
        for j, i in enumerate(range(self.size) if ids is None else ids):
            data = self.datas[i]
            self._failed[i] = False
            mujoco.mj_resetData(self.model, data)
            data.qpos[:], data.qvel[:] = qpos[j], qvel[j]
            try:
                mujoco.mj_forward(self.model, data)
            except mujoco.FatalError:
                self._failed[i] = True
            self._record(i)

    def step(self, ctrl: np.ndarray, ids: np.ndarray) -> np.ndarray:
        chunks = np.array_split(ids, min(self.threads, max(len(ids), 1)))
        if self._pool is None or len(chunks) == 1:
            self._step_all(ctrl, ids)
        else:
            list(self._pool.map(lambda chunk: self._step_all(ctrl, chunk), chunks))
        return self._failed[ids].copy()

    def _step_all(self, ctrl: np.ndarray, ids: np.ndarray) -> None:
        for i in ids:
            data = self.datas[i]
            data.ctrl[:] = ctrl[i]
            try:
                mujoco.mj_step(self.model, data, self.frame_skip)
                mujoco.mj_rnePostConstraint(self.model, data)
            except mujoco.FatalError:
                self._failed[i] = True
            self._record(i)

    def _record(self, i: int) -> None:
        """Copy simulation i's state, torso x and contact forces out; mark it failed on a MuJoCo warning."""
        data = self.datas[i]
        self.qpos[i], self.qvel[i] = data.qpos, data.qvel
        self.torso_x[i] = data.xpos[TORSO, 0]
        self._cfrc_ext[i] = data.cfrc_ext
        self._failed[i] |= data.warning.number.any()


def make_simulator(robot: Robot, size: int, threads: int = 0, variant: Variant = GYMNASIUM) -> Simulator:
    """The fastest simulator that gives what `robot`'s observation and reward need under `variant`
    (`BatchSimulator`, unless gymnasium's contact forces or the torso's xpos are needed)."""
    if not variant.torso_com and (robot.contact_cost_weight > 0 or robot.torso_velocity):
        return LoopSimulator(robot, size, threads)
    return BatchSimulator(robot, size, threads, rllab=variant.torso_com)
