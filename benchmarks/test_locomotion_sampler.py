"""Env-steps per second of the locomotion sampler (`LocomotionBatch`, E = 800 environments) with a random Gaussian
MLP 100-100 policy in the loop (one torch forward per step for all environments), with gymnasium v5's conventions and
with rllab's (the suites' `variant`: a forward pass more per step), against gymnasium's SyncVectorEnv of 80
registered environments with the same policy. Only steps of live environments count (a random ant falls).

    python -m pytest benchmarks/test_locomotion_sampler.py --benchmark-only -s

torch runs on one thread here: on 2 cores its intra-op threads and the simulation threads contend (measured: cheetah
~100k env-steps/s with torch on 2 threads against ~145k on 1, the policy forward itself no faster).
"""
from __future__ import annotations

import time

import gymnasium
import pytest
import torch

from plugins.rl.locomotion import FAMILIES, LocomotionBatch, sample_tasks
from plugins.rl.locomotion.tasks import VARIANTS
from plugins.rl.policy_gradient import GaussianMLPPolicy, split

E, STEPS, VECTOR_ENVS = 800, 50, 80
FAMILY_NAMES = ["cheetah-velocity", "ant-velocity"]


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


class Meter:
    """Live env-steps and seconds accumulated over the benchmark's rounds."""

    def __init__(self) -> None:
        self.steps, self.seconds = 0, 0.0

    def add(self, steps: int, seconds: float) -> None:
        self.steps += steps
        self.seconds += seconds

    def report(self, benchmark, label: str) -> None:
        rate = self.steps / self.seconds
        benchmark.extra_info["env_steps_per_s"] = round(rate)
        print(f"\n{label}: {rate:,.0f} env-steps/s ({self.steps} live env-steps in {self.seconds:.2f} s)")


def _actions(policy: GaussianMLPPolicy, observations: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    mean, log_std = split(policy(observations))
    return mean + log_std.exp() * torch.randn(mean.shape, generator=generator)


@torch.no_grad()
def _sample_batch(env: LocomotionBatch, policy: GaussianMLPPolicy, generator: torch.Generator, meter: Meter) -> None:
    start = time.perf_counter()
    observations, live = env.reset(), 0
    for _ in range(STEPS):
        live += int((~env.done).sum())
        observations, _, _ = env.step(_actions(policy, observations, generator))
    meter.add(live, time.perf_counter() - start)


@torch.no_grad()
def _sample_vector(envs: gymnasium.vector.VectorEnv, policy: GaussianMLPPolicy, generator: torch.Generator,
                   meter: Meter) -> None:
    start = time.perf_counter()
    observations, _ = envs.reset(seed=0)
    for _ in range(STEPS):
        actions = _actions(policy, torch.as_tensor(observations, dtype=torch.float32), generator)
        observations, *_ = envs.step(actions.numpy())
    meter.add(VECTOR_ENVS * STEPS, time.perf_counter() - start)


@pytest.mark.parametrize("variant", ["gymnasium", "rllab"])
@pytest.mark.parametrize("family", FAMILY_NAMES)
def test_locomotion_batch(benchmark, family: str, variant: str):
    benchmark.group = f"locomotion sampling, {family}"
    generator = torch.Generator().manual_seed(0)
    env = LocomotionBatch(family, sample_tasks(family, E, generator), generator, variant=VARIANTS[variant])
    policy, meter = GaussianMLPPolicy(env.observation_size, env.action_size), Meter()
    benchmark.pedantic(_sample_batch, args=(env, policy, generator, meter), rounds=3, warmup_rounds=1)
    meter.report(benchmark, f"LocomotionBatch {family} ({variant}), E = {E}")


@pytest.mark.parametrize("family", FAMILY_NAMES)
def test_gymnasium_sync_vector_env(benchmark, family: str):
    benchmark.group = f"locomotion sampling, {family}"
    generator = torch.Generator().manual_seed(0)
    envs = gymnasium.make_vec(FAMILIES[family].env_id, num_envs=VECTOR_ENVS, vectorization_mode="sync")
    robot = FAMILIES[family].robot
    policy, meter = GaussianMLPPolicy(robot.observation_size, robot.action_size), Meter()
    benchmark.pedantic(_sample_vector, args=(envs, policy, generator, meter), rounds=3, warmup_rounds=1)
    meter.report(benchmark, f"gymnasium SyncVectorEnv {family}, {VECTOR_ENVS} envs")
    envs.close()
