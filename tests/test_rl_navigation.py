"""The 2D navigation task: batched torch environment, gymnasium environment, and their agreement."""
from __future__ import annotations

import math
import warnings

import gymnasium
import numpy as np
import pytest
import torch
from gymnasium.utils.env_checker import check_env

from plugins.rl.navigation import Navigation2DEnv, NavigationBatch, register_envs, sample_goals

ENV_ID = "harness/Navigation2D-v0"
GOALS = [(0.25, 0.0), (0.3, -0.2), (-0.45, 0.4)]


def _actions() -> torch.Tensor:
    """Fixed actions [100, 3, 2]: env 0 walks (0.05, 0) to its goal, the others act at random, often beyond 0.1."""
    actions = torch.randn(100, len(GOALS), 2, generator=torch.Generator().manual_seed(0)) * 0.15
    actions[:, 0] = torch.tensor([0.05, 0.0])
    return actions


def _gym_episode(goal: tuple[float, float], actions: torch.Tensor) -> tuple[list[float], bool, bool]:
    """Roll out `actions` [100, 2] in the registered environment -> (rewards, terminated, truncated) of the episode."""
    env = gymnasium.make(ENV_ID)
    env.reset(seed=0, options={"goal": goal})
    rewards: list[float] = []
    for action in actions.numpy():
        _, reward, terminated, truncated, _ = env.step(action)
        rewards.append(reward)
        if terminated or truncated:
            return rewards, terminated, truncated
    raise AssertionError("the episode did not end within 100 steps")


def test_batch_matches_gymnasium_env():
    actions = _actions()
    batch = NavigationBatch(torch.tensor(GOALS))
    batch.reset()
    rewards, dones = zip(*[batch.step(a)[1:] for a in actions])
    rewards, dones = torch.stack(rewards), torch.stack(dones)
    for i, goal in enumerate(GOALS):
        gym_rewards, terminated, truncated = _gym_episode(goal, actions[:, i])
        length = int(dones[:, i].int().argmax()) + 1
        assert length == len(gym_rewards)
        assert (terminated, truncated) == ((True, False) if i == 0 else (False, True))
        torch.testing.assert_close(rewards[:length, i], torch.tensor(gym_rewards), atol=0, rtol=0)
        assert rewards[length:, i].eq(0).all() and dones[length - 1 :, i].all()
        assert math.isclose(rewards[:, i].sum().item(), sum(gym_rewards), abs_tol=1e-5)
    assert len(_gym_episode(GOALS[0], actions[:, 0])[0]) == 5


@pytest.mark.parametrize("unwrapped", [True, False])
def test_check_env(unwrapped: bool):
    env = gymnasium.make(ENV_ID)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        check_env(env.unwrapped if unwrapped else env)
    expected = ("infinity", "different from the unwrapped version")
    assert all(any(text in str(w.message) for text in expected) for w in caught), [str(w.message) for w in caught]


def test_reward_is_minus_distance_of_clipped_move():
    batch = NavigationBatch(torch.tensor([[0.3, 0.4]]))
    assert batch.reset().tolist() == [[0.0, 0.0]]
    observations, rewards, done = batch.step(torch.tensor([[1.0, -1.0]]))
    torch.testing.assert_close(observations, torch.tensor([[0.1, -0.1]]))
    assert rewards.item() == pytest.approx(-math.hypot(0.2, 0.5), abs=1e-6)
    assert not done.item()
    env = Navigation2DEnv()
    env.reset(options={"goal": (0.3, 0.4)})
    observation, reward, terminated, truncated, info = env.step(np.array([1.0, -1.0]))
    assert observation.dtype == np.float32 and observation.tolist() == observations[0].tolist()
    assert isinstance(reward, float) and reward == rewards.item()
    assert not terminated and not truncated and info["goal"].tolist() == pytest.approx([0.3, 0.4])


def test_done_environments_stay_frozen_until_reset():
    batch = NavigationBatch(torch.tensor([[0.05, 0.0], [0.5, 0.5]]))
    batch.reset()
    _, rewards, done = batch.step(torch.tensor([[0.05, 0.0], [0.0, 0.0]]))
    assert done.tolist() == [True, False] and rewards[0].item() == pytest.approx(0.0, abs=1e-6)
    for step in range(2, 101):
        observations, rewards, done = batch.step(torch.tensor([[0.1, 0.1], [-0.1, 0.0]]))
        assert observations[0].tolist() == pytest.approx([0.05, 0.0]) and rewards[0].item() == 0.0
        assert done.tolist() == [True, step == 100]
    assert batch.step(torch.ones(2, 2))[1].eq(0).all()
    assert batch.reset().eq(0).all() and not batch.step(torch.zeros(2, 2))[2].any()


def test_truncation_at_horizon_wrapped_and_unwrapped():
    register_envs()  # idempotent
    for env in (gymnasium.make(ENV_ID), Navigation2DEnv()):
        env.reset(seed=1)
        ends = [env.step(np.zeros(2, np.float32))[2:4] for _ in range(100)]
        assert ends[:99] == [(False, False)] * 99 and ends[99] == (False, True)


def test_batch_shapes_and_dtypes_for_many_environments():
    goals = sample_goals(800, torch.Generator().manual_seed(3))
    batch = NavigationBatch(goals)
    assert batch.reset().shape == (800, 2)
    observations, rewards, done = batch.step(torch.randn(800, 2, dtype=torch.float64))
    assert observations.shape == (800, 2) and rewards.shape == (800,) and done.shape == (800,)
    assert observations.dtype == rewards.dtype == torch.float32 and done.dtype == torch.bool
    assert observations.abs().max() <= 0.1 + 1e-7


def test_sample_goals_range_and_reproducibility():
    goals = sample_goals(1000, torch.Generator().manual_seed(7))
    assert goals.shape == (1000, 2) and goals.dtype == torch.float32
    assert goals.min() >= -0.5 and goals.max() <= 0.5 and goals.min() < -0.45 and goals.max() > 0.45
    assert torch.equal(goals, sample_goals(1000, torch.Generator().manual_seed(7)))
    assert not torch.equal(goals, sample_goals(1000, torch.Generator().manual_seed(8)))
