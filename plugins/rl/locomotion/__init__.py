"""MuJoCo locomotion of the MAML paper (section 5.3, Table 5): HalfCheetah and Ant, goal velocity and
forward/backward direction, H = 200, on gymnasium's v5 models with the released code's time steps and rewards.

- `tasks`: the four families (`FAMILIES`: cheetah-velocity, cheetah-direction, ant-velocity, ant-direction), their
  rewards and `sample_tasks(family, n, generator) -> [n, 1]`; the docstring says what was taken from where.
- `envs`: one environment as gymnasium's (`harness/HalfCheetahVel-v0`, `harness/HalfCheetahDir-v0`,
  `harness/AntVel-v0`, `harness/AntDir-v0`; `reset(options={"task": value})`), registered on import.
- `sampler`: `LocomotionBatch`, E environments stepped together (the `BatchEnv` of `rollout`), and `env_factory`.
- `simulators`: the two ways of stepping E MuJoCo simulations (`mujoco.batch.Batch`; MjData on threads).
"""
from plugins.rl.locomotion.envs import AntTaskEnv, HalfCheetahTaskEnv, register_envs
from plugins.rl.locomotion.sampler import LocomotionBatch, env_factory
from plugins.rl.locomotion.tasks import FAMILIES, HORIZON, sample_tasks

__all__ = ["FAMILIES", "HORIZON", "AntTaskEnv", "HalfCheetahTaskEnv", "LocomotionBatch", "env_factory",
           "register_envs", "sample_tasks"]

register_envs()
