"""The four locomotion task families of the MAML paper (section 5.3, Table 5): their robots, task distributions and
rewards, shared by the gymnasium environments and the batched sampler so that both compute the same numbers.

Taken from the authors' released code (github.com/cbfinn/maml_rl, rllab `envs/mujoco/half_cheetah_env_rand.py`,
`half_cheetah_env_rand_direc.py`, `ant_env_rand.py`, `ant_env_rand_direc.py`), on gymnasium's v5 models:

- Cheetah: reward -|v - g| - 0.05 * sum(a^2) (velocity, g ~ U[0, 2]) or d * v - 0.05 * sum(a^2) (direction,
  d = +-1); rllab: `ctrl_cost = 1e-1 * 0.5 * sum(a^2)` on the action clipped to its bounds. rllab's half_cheetah.xml
  has timestep 0.01 and no frame skip: dt 0.01 = gymnasium's timestep 0.01 with frame_skip 1.
- Ant: reward -|v - g| + 1.0 + 0.05 - ctrl - contact (velocity, g ~ U[0, 3]) or d * v + 0.05 - ctrl - contact
  (direction); rllab: `forward_reward = -|comvel - goal| + 1.0`, `survive_reward = 0.05`,
  `ctrl_cost = 0.5 * 1e-2 * sum((a / scaling)^2)` with scaling = 150 (rllab's ant.xml: gear 1, ctrlrange +-150),
  `contact_cost = 0.5 * 1e-3 * sum(clip(cfrc_ext, -1, 1)^2)`, done unless the state is finite and torso z in
  [0.2, 1.0]. gymnasium's ant.xml has gear 150 and ctrlrange +-1, so its action is rllab's a / 150 and the control
  cost is 0.005 * sum(a^2). rllab's ant.xml: RK4, timestep 0.02, no frame skip; here RK4 at gymnasium's 0.01 with
  frame_skip 2 (dt 0.02; the released step would need opt.timestep changed, and MuJoCo's contact time constant
  0.02 is then below 2 timesteps).
- rllab's policies acted through its `normalize` wrapper, which clips the action to the bounds; here the
  environments clip (to [-1, 1], both robots) before the physics and the control cost.
- The released direction tasks drew g ~ U[0, 2] (cheetah) or U[0, 3] (ant) and went backwards below the midpoint:
  d = +-1 with equal probability, as here.
- Velocity v as gymnasium v5 computes it: the change of qpos[0] (cheetah) or of the torso's xpos x (ant, after an
  RK4 step xpos is that of the last stage, not qpos) over dt. rllab used the torso's centre-of-mass velocity.

Observations, initial states and velocity follow gymnasium v5 (`GYMNASIUM`) or the released code's rllab
environments (`RLLAB`, the suites' `variant`; `mujoco_env.py`, `half_cheetah_env_rand*.py`, `ant_env_rand*.py`):
qpos starts at qpos0 + 0.01 N(0, 1); v is the torso subtree's centre-of-mass velocity (`get_body_comvel`, the whole
robot's); the observation is the cheetah's qpos[1:], qvel and the torso subtree's centre of mass (`get_body_com`, 20
values; its x grows with the distance run), or the ant's qpos (with x, y), qvel, clip(cfrc_ext, -1, 1) of every body,
the torso's rotation matrix and centre of mass (125 values) - all after a forward pass on the new state, as rllab's
`forward_dynamics` made one (the ant's contact forces then come from mj_rnePostConstraint on that state: MuJoCo 1.31's
forward pass computed them, today's does not). Dynamics, costs and time steps are the same in both.
"""
from __future__ import annotations

import functools
import warnings
from dataclasses import dataclass

import mujoco
import numpy as np
import torch
from gymnasium.envs.mujoco.mujoco_env import expand_model_path
from torch import Tensor

HORIZON = 200
RESET_NOISE = 0.1
"""gymnasium v5's reset_noise_scale: qpos0 + U(-0.1, 0.1), qvel 0.1 * N(0, 1) (rllab: N(0, 0.01), N(0, 0.1))."""
RLLAB_QPOS_NOISE = 0.01
"""rllab's `reset_mujoco`: qpos0 + 0.01 N(0, 1) (its qvel noise, 0.1 N(0, 1), is gymnasium's)."""
COM_SIZE = 3
"""The values the rllab variant appends to the observation: the torso subtree's centre of mass."""


@dataclass(frozen=True)
class Robot:
    """A gymnasium v5 MuJoCo model with the released code's costs; observations as gymnasium v5's."""

    name: str
    xml_file: str
    frame_skip: int
    observation_size: int
    action_size: int
    skipped_qpos: int
    """Leading qpos entries left out of the observation (the x, y position)."""
    ctrl_cost_weight: float
    contact_cost_weight: float = 0.0
    """> 0: clip(cfrc_ext[1:], -1, 1) (after mj_rnePostConstraint) is in the observation and costs this per square."""
    survive_bonus: float = 0.0
    velocity_bonus: float = 0.0
    """Added to the reward of velocity tasks only (the released ant's `+ 1.0`, "make it happy, not suicidal")."""
    healthy_z: tuple[float, float] | None = None
    """Episodes terminate when torso z (qpos[2]) leaves this range or the state is not finite."""
    torso_velocity: bool = False
    """v from the torso's xpos (gymnasium Ant-v5) rather than from qpos[0] (gymnasium HalfCheetah-v5)."""
    rllab_skipped_qpos: int = 0
    """Leading qpos entries rllab's observation leaves out (its cheetah: x; its ant: none)."""
    rllab_torso_xmat: bool = False
    """rllab's observation holds the torso's rotation matrix (its ant's)."""


CHEETAH = Robot("cheetah", "half_cheetah.xml", frame_skip=1, observation_size=17, action_size=6, skipped_qpos=1,
                ctrl_cost_weight=0.05, rllab_skipped_qpos=1)
ANT = Robot("ant", "ant.xml", frame_skip=2, observation_size=105, action_size=8, skipped_qpos=2,
            ctrl_cost_weight=0.005, contact_cost_weight=5e-4, survive_bonus=0.05, velocity_bonus=1.0,
            healthy_z=(0.2, 1.0), torso_velocity=True, rllab_torso_xmat=True)


@dataclass(frozen=True)
class Variant:
    """Whose observation, initial states and velocity the environments use: gymnasium v5's or rllab's."""

    name: str
    normal_qpos_noise: bool
    """qpos0 + 0.01 N(0, 1) (rllab) rather than qpos0 + U(-0.1, 0.1) (gymnasium v5)."""
    torso_com: bool
    """rllab's observation (ending with the torso subtree's centre of mass) and v its x-velocity, after the step."""


GYMNASIUM = Variant("gymnasium", normal_qpos_noise=False, torso_com=False)
RLLAB = Variant("rllab", normal_qpos_noise=True, torso_com=True)
VARIANTS = {None: GYMNASIUM, "gymnasium": GYMNASIUM, "rllab": RLLAB}
"""By config value: None (unset) and "gymnasium" are gymnasium v5's conventions."""


def variant_of(name: str | None) -> Variant:
    """The variant called `name` (None: gymnasium's); a clear error for an unknown one."""
    if name not in VARIANTS:
        raise ValueError(f"unknown locomotion variant {name!r}; set gymnasium (gymnasium v5's) or rllab")
    return VARIANTS[name]


def observation_size(robot: Robot, variant: Variant) -> int:
    """The length of `robot`'s observation under `variant` (rllab: cheetah 20, ant 125)."""
    if not variant.torso_com:
        return robot.observation_size
    model = load_model(robot)
    contacts = 6 * model.nbody if robot.contact_cost_weight > 0 else 0
    return model.nq - robot.rllab_skipped_qpos + model.nv + contacts + 9 * robot.rllab_torso_xmat + COM_SIZE


@dataclass(frozen=True)
class Family:
    """A task family: a robot and its task parameter, a goal velocity in [0, max_velocity] or a direction +-1."""

    name: str
    robot: Robot
    goal: str  # "velocity" | "direction"
    env_id: str
    max_velocity: float = 0.0


FAMILIES = {
    family.name: family
    for family in (
        Family("cheetah-velocity", CHEETAH, "velocity", "harness/HalfCheetahVel-v0", max_velocity=2.0),
        Family("cheetah-direction", CHEETAH, "direction", "harness/HalfCheetahDir-v0"),
        Family("ant-velocity", ANT, "velocity", "harness/AntVel-v0", max_velocity=3.0),
        Family("ant-direction", ANT, "direction", "harness/AntDir-v0"),
    )
}


def family_of(name: str) -> Family:
    """The family called `name`; a clear error naming the four otherwise."""
    if name not in FAMILIES:
        raise ValueError(f"unknown locomotion family {name!r}; expected one of {sorted(FAMILIES)}")
    return FAMILIES[name]


@functools.cache
def load_model(robot: Robot, rllab_sensors: bool = False) -> mujoco.MjModel:
    """gymnasium's v5 model of `robot` (read-only: shared by every simulation of this process); with `rllab_sensors`,
    passive sensors that make mj_forward compute what rllab read: the torso subtree's centre of mass and linear
    velocity (sensordata[:6]), and for robots with contact costs the torso's linear acceleration (sensordata[6:9]),
    whose evaluation runs mj_rnePostConstraint and so fills cfrc_ext."""
    if not rllab_sensors:
        return mujoco.MjModel.from_xml_path(expand_model_path(robot.xml_file))
    spec = mujoco.MjSpec.from_file(expand_model_path(robot.xml_file))
    sensors = [mujoco.mjtSensor.mjSENS_SUBTREECOM, mujoco.mjtSensor.mjSENS_SUBTREELINVEL]
    if robot.contact_cost_weight > 0:
        sensors.append(mujoco.mjtSensor.mjSENS_FRAMELINACC)
    for sensor in sensors:
        spec.add_sensor(type=sensor, objtype=mujoco.mjtObj.mjOBJ_BODY, objname="torso")
    with warnings.catch_warnings():  # gymnasium's models use it; from_xml_path above only logs it
        warnings.filterwarnings("ignore", message="compiler attribute 'settotalmass' is deprecated")
        return spec.compile()


def sample_tasks(family: str, n: int, generator: torch.Generator) -> Tensor:
    """n task parameters float32 [n, 1] on the generator's device: goal velocities U[0, max] or directions +-1."""
    spec = family_of(family)
    if spec.goal == "velocity":
        return torch.rand(n, 1, generator=generator, device=generator.device) * spec.max_velocity
    return torch.randint(0, 2, (n, 1), generator=generator, device=generator.device).float() * 2 - 1


def check_task(family: Family, task: float) -> float:
    """`task` as a float; a direction must be +-1."""
    task = float(task)
    if family.goal == "direction" and task not in (-1.0, 1.0):
        raise ValueError(f"{family.name}: the task is a direction, -1 or +1, got {task}")
    return task


def task_rewards(family: Family, tasks: np.ndarray, x_velocity: np.ndarray, actions: np.ndarray,
                 contact_forces: np.ndarray) -> np.ndarray:
    """Rewards float64 [E] of E steps: tasks, x_velocity [E]; actions [E, act] already clipped; contact_forces
    [E, k] clipped (k = 0 for the cheetah). The gymnasium envs call it with E = 1, the sampler with all envs."""
    robot = family.robot
    if family.goal == "velocity":
        progress = -np.abs(x_velocity - tasks) + robot.velocity_bonus
    else:
        progress = tasks * x_velocity
    ctrl_cost = robot.ctrl_cost_weight * np.sum(np.square(actions), axis=1)
    contact_cost = robot.contact_cost_weight * np.sum(np.square(contact_forces), axis=1)
    return progress + robot.survive_bonus - ctrl_cost - contact_cost


def unhealthy(robot: Robot, qpos: np.ndarray, qvel: np.ndarray) -> np.ndarray:
    """[E] bool: the episode terminates (ant: a non-finite state or torso z outside [0.2, 1.0]; cheetah: never)."""
    if robot.healthy_z is None:
        return np.zeros(len(qpos), dtype=bool)
    low, high = robot.healthy_z
    finite = np.isfinite(qpos).all(axis=1) & np.isfinite(qvel).all(axis=1)
    return ~(finite & (qpos[:, 2] >= low) & (qpos[:, 2] <= high))
