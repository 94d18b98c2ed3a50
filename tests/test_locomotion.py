"""MuJoCo locomotion: the batched sampler against the registered gymnasium environments and gymnasium's own v5
environments (observations, rewards, termination, x-velocity, contact forces), failure reports, task sampling."""
from __future__ import annotations

import warnings

import gymnasium
import mujoco
import numpy as np
import pytest
import torch
from gymnasium.utils.env_checker import check_env

from plugins.rl.locomotion import FAMILIES, LocomotionBatch, env_factory, sample_tasks
from plugins.rl.locomotion.simulators import BatchSimulator, LoopSimulator, make_simulator
from plugins.rl.locomotion.tasks import GYMNASIUM, RLLAB, Variant, load_model
from plugins.rl.policy_gradient import GaussianMLPPolicy, rollout

TASKS = {"cheetah-velocity": [0.3, 1.2, 2.0], "cheetah-direction": [1.0, -1.0, 1.0],
         "ant-velocity": [0.5, 2.5, 1.0], "ant-direction": [1.0, -1.0, -1.0]}
STEPS = 50


def _batch(family: str, tasks: list[float], seed: int = 0, variant: Variant = GYMNASIUM) -> LocomotionBatch:
    return LocomotionBatch(family, torch.tensor(tasks)[:, None], torch.Generator().manual_seed(seed), threads=2,
                           variant=variant)


def _actions(family: str, n: int, steps: int = STEPS, scale: float = 0.8) -> torch.Tensor:
    """Fixed random actions [steps, n, act], some beyond the action bounds [-1, 1]."""
    size = FAMILIES[family].robot.action_size
    return torch.randn(steps, n, size, generator=torch.Generator().manual_seed(1)) * scale


def _gym_episode(env: gymnasium.Env, qpos: np.ndarray, qvel: np.ndarray, task: float | None,
                 actions: torch.Tensor) -> tuple[list[np.ndarray], list[float], list[bool], list[dict]]:
    """Reset `env` (with `task` as option where given) to (qpos, qvel), then step `actions` until it ends ->
    (observations including the initial one, rewards, terminated flags, infos)."""
    env.reset(seed=0, options=None if task is None else {"task": task})
    env.unwrapped.set_state(qpos, qvel)
    observations, rewards, ends, infos = [env.unwrapped._get_obs()], [], [], []
    for action in actions.numpy():
        observation, reward, terminated, truncated, info = env.step(action)
        observations.append(observation)
        rewards.append(reward)
        ends.append(terminated)
        infos.append(info)
        if terminated or truncated:
            break
    return observations, rewards, ends, infos


def _f32(values) -> torch.Tensor:
    return torch.tensor(np.asarray(values), dtype=torch.float32)


@pytest.mark.parametrize(("family", "variant"), [(family, GYMNASIUM) for family in sorted(FAMILIES)]
                         + [(family, RLLAB) for family in sorted(FAMILIES)],
                         ids=lambda value: value.name if isinstance(value, Variant) else value)
def test_batch_matches_registered_gymnasium_env(family: str, variant: Variant):
    """Same actions and initial states -> bit-identical float32 observations and rewards, the same termination; an
    ant started rising fast leaves the healthy range early and is masked from then on. The rllab variant's sensors
    (the batch) give what the env's mj_subtreeVel gives."""
    tasks, actions = TASKS[family], _actions(family, 3)
    batch = _batch(family, tasks, variant=variant)
    batch.reset()
    qpos, qvel = batch.state()
    early = family.startswith("ant")
    if early:  # env 2 rises through z = 1.0 within a few steps
        qpos[2, 2], qvel[2, 2] = 0.9, 4.0
    observations = [batch.reset_to(qpos, qvel)]
    rewards, dones = [], []
    for action in actions:
        observation, reward, done = batch.step(action)
        observations.append(observation)
        rewards.append(reward)
        dones.append(done)
    observations, rewards, dones = torch.stack(observations), torch.stack(rewards), torch.stack(dones)
    for i, task in enumerate(batch.tasks.tolist()):  # the float32 tasks, as the sampler sees them
        kwargs = {"variant": "rllab"} if variant is RLLAB else {}
        gym_obs, gym_rewards, ends, _ = _gym_episode(gymnasium.make(FAMILIES[family].env_id, **kwargs), qpos[i],
                                                     qvel[i], task, actions[:, i])
        length = len(gym_rewards)
        assert length < 10 if early and i == 2 else length == STEPS and not any(ends)
        assert torch.equal(observations[: length + 1, i], _f32(gym_obs))
        assert torch.equal(rewards[:length, i], _f32(gym_rewards))
        assert dones[:, i].tolist() == [ends[-1] and t >= length - 1 for t in range(STEPS)]
        if length < STEPS:  # masked: frozen observation, reward 0
            assert rewards[length:, i].eq(0).all()
            assert (observations[length + 1 :, i] == observations[length, i]).all()
    assert not batch.failed.any()


@pytest.mark.parametrize(("family", "env_id", "frame_skip"),
                         [("cheetah-direction", "HalfCheetah-v5", 1), ("ant-direction", "Ant-v5", 2)])
def test_batch_matches_gymnasium_v5_velocity_and_contact_forces(family: str, env_id: str, frame_skip: int):
    """Against gymnasium's own HalfCheetah-v5 / Ant-v5 at the same frame skip: the same observations (the ant's
    include clip(cfrc_ext), non-zero after contacts) and rewards d * v + bonus - costs from gymnasium's x_velocity
    (the ant's from the torso xpos, which differs from qpos[0]'s change) and contact cost."""
    actions = _actions(family, 1, steps=30, scale=0.5).clamp(-1, 1)[:, 0]
    batch = _batch(family, [1.0])
    observations = [batch.reset()[0]]
    qpos, qvel = batch.state()
    env = gymnasium.make(env_id, frame_skip=frame_skip)
    env.reset(seed=0)
    env.unwrapped.set_state(qpos[0], qvel[0])
    gym_obs, expected, x = [env.unwrapped._get_obs()], [], [env.unwrapped.data.qpos[0]]
    robot = FAMILIES[family].robot
    for action in actions:
        observation, reward, _ = batch.step(action[None])
        observations.append(observation[0])
        gym_observation, _, terminated, _, info = env.step(action.numpy())
        assert not terminated
        gym_obs.append(gym_observation)
        x.append(env.unwrapped.data.qpos[0])
        ctrl_cost = robot.ctrl_cost_weight * float((action.double() ** 2).sum())
        gym_reward = info["x_velocity"] + robot.survive_bonus - ctrl_cost + info.get("reward_contact", 0.0)
        torch.testing.assert_close(reward[0], torch.tensor(gym_reward, dtype=torch.float32), rtol=0, atol=1e-5)
        expected.append(info["x_velocity"])
    assert torch.equal(torch.stack(observations), _f32(gym_obs))
    if robot.torso_velocity:
        assert robot.contact_cost_weight == 5e-4  # gymnasium Ant-v5's, so info["reward_contact"] is the cost here
        assert (np.abs(np.stack(gym_obs)[:, -78:]).sum(1) > 0).sum() >= 3  # contacts after several steps
        assert not np.allclose(np.diff(x) / batch.dt, expected, rtol=0, atol=1e-6)


def _rllab_body_comvels(model: mujoco.MjModel, data: mujoco.MjData) -> np.ndarray:
    """rllab's `MjModel.body_comvels` (its mujoco_py): each body's velocity by mj_objectVelocity, its linear part
    times the body's mass summed up the tree into subtree momenta, over the subtree masses -> [nbody, 3]."""
    velocity = np.zeros(6)
    momenta, mass = np.zeros((model.nbody, 3)), model.body_mass.copy()
    for body in range(model.nbody):
        mujoco.mj_objectVelocity(model, data, mujoco.mjtObj.mjOBJ_BODY, body, velocity, 0)
        momenta[body] = velocity[3:] * mass[body]
    for body in range(model.nbody - 1, 0, -1):
        momenta[model.body_parentid[body]] += momenta[body]
        mass[model.body_parentid[body]] += mass[body]
    return momenta / mass[:, None]


def test_rllab_variant_runs_on_the_whole_cheetahs_centre_of_mass():
    """The rllab cheetah: 20 observations ending with the torso subtree's centre of mass (x growing as it runs), the
    reward's velocity equal to rllab's `body_comvels` of the torso computed as rllab did (not qpos[0]'s change), the
    same dynamics as gymnasium's conventions, qpos0 + 0.01 N(0, 1) at reset."""
    model = load_model(FAMILIES["cheetah-direction"].robot)
    rllab, plain = _batch("cheetah-direction", [1.0], variant=RLLAB), _batch("cheetah-direction", [1.0])
    rllab.reset()
    qpos, qvel = rllab.state()
    plain.reset_to(qpos, qvel)
    data = mujoco.MjData(model)
    actions = _actions("cheetah-direction", 1, steps=40, scale=0.5).clamp(-1, 1)
    velocities, com_x = [], [float(rllab.reset_to(qpos, qvel)[0, -3])]
    for action in actions:
        observation, reward, _ = rllab.step(action)
        plain_observation, plain_reward, _ = plain.step(action)
        assert observation.shape == (1, 20) and torch.equal(observation[:, :17], plain_observation)
        data.qpos[:], data.qvel[:] = rllab.state()[0][0], rllab.state()[1][0]
        mujoco.mj_forward(model, data)
        comvel = _rllab_body_comvels(model, data)[1, 0]
        ctrl_cost = 0.05 * float((action.double() ** 2).sum())
        torch.testing.assert_close(reward[0], torch.tensor(comvel - ctrl_cost, dtype=torch.float32), rtol=0, atol=1e-5)
        assert abs(comvel - (plain_reward[0] + ctrl_cost)) > 1e-4  # not the root's velocity
        velocities.append(comvel)
        com_x.append(float(observation[0, -3]))
    np.testing.assert_allclose(np.diff(com_x) / rllab.dt, velocities, atol=0.05 * np.abs(velocities).max())
    noise = _batch("cheetah-direction", [1.0] * 2000, variant=RLLAB)
    noise.reset()
    deviation = noise.state()[0] - model.qpos0
    assert 0.0095 < deviation.std() < 0.0105 and np.abs(deviation).max() > 0.03  # normal, not U(-0.1, 0.1)


def test_rllab_ant_observes_position_contacts_rotation_and_centre_of_mass():
    """The rllab ant: 125 observations - qpos with x, y; qvel; clip(cfrc_ext) of all 14 bodies (non-zero once it
    touches the ground, the world's zero); the torso's rotation matrix; the torso subtree's centre of mass - of the
    state after the step (a fresh forward pass there gives the same), the reward's velocity rllab's body_comvels."""
    model = load_model(FAMILIES["ant-direction"].robot)
    batch = _batch("ant-direction", [1.0], variant=RLLAB)
    batch.reset()
    data, touching = mujoco.MjData(model), 0
    for action in _actions("ant-direction", 1, steps=30, scale=0.5).clamp(-1, 1):
        observation, reward, done = batch.step(action)
        assert observation.shape == (1, 125) and not done.any()
        data.qpos[:], data.qvel[:] = batch.state()[0][0], batch.state()[1][0]
        data.ctrl[:] = action[0].double().numpy()
        mujoco.mj_forward(model, data)
        mujoco.mj_rnePostConstraint(model, data)
        forces = np.clip(data.cfrc_ext, -1, 1).ravel()
        expected = np.concatenate([data.qpos, data.qvel, forces, data.xmat[1], data.subtree_com[1]])
        assert torch.equal(observation[0], _f32(expected))
        comvel = _rllab_body_comvels(model, data)[1, 0]
        costs = 0.005 * float((action.double() ** 2).sum()) + 5e-4 * float((forces ** 2).sum())
        torch.testing.assert_close(reward[0], torch.tensor(comvel + 0.05 - costs, dtype=torch.float32), rtol=0,
                                   atol=1e-5)
        assert not forces[:6].any()
        touching += bool(np.abs(forces).sum() > 0)
    assert touching >= 3


def test_rllab_variant_needs_its_simulator_and_a_known_name():
    robot = FAMILIES["cheetah-velocity"].robot
    with pytest.raises(ValueError, match="simulator made for it"):
        LocomotionBatch("cheetah-velocity", torch.ones(2, 1), torch.Generator(), make_simulator(robot, 2, 1),
                        variant=RLLAB)
    with pytest.raises(ValueError, match="unknown locomotion variant"):
        gymnasium.make("harness/HalfCheetahVel-v0", variant="mujoco-py")


def test_ant_contact_forces_are_gymnasiums_after_each_step():
    """The ant's raw contact forces are non-zero once it touches the ground and equal gymnasium Ant-v5's (computed
    by mj_rnePostConstraint after the RK4 step), step by step."""
    env = gymnasium.make("Ant-v5", frame_skip=2)
    sim = LoopSimulator(FAMILIES["ant-velocity"].robot, 1, threads=1)
    env.reset(seed=3)
    sim.reset(env.unwrapped.data.qpos[None].copy(), env.unwrapped.data.qvel[None].copy())
    touching = 0
    for action in _actions("ant-velocity", 1, steps=30, scale=0.5).clamp(-1, 1)[:, 0].numpy():
        env.step(action)
        sim.step(action[None].astype(np.float64), np.arange(1))
        gym_forces = env.unwrapped.contact_forces[1:].ravel()
        np.testing.assert_array_equal(sim.contact_forces[0], gym_forces)
        assert sim.torso_x[0] == env.unwrapped.data.body(1).xpos[0]
        touching += bool(np.abs(gym_forces).sum() > 0)
    assert touching >= 3


@pytest.mark.parametrize(("env_id", "kwargs"), [(family.env_id, {}) for family in FAMILIES.values()]
                         + [(env_id, {"variant": "rllab"}) for env_id in ("harness/HalfCheetahDir-v0",
                                                                          "harness/AntVel-v0")])
def test_check_env(env_id: str, kwargs: dict):
    """gymnasium's checker passes headless, render check included (the envs declare no render mode: gymnasium's
    need a display, and trying them crashed the process), with only its infinite-bounds notes."""
    for env in (gymnasium.make(env_id, **kwargs), gymnasium.make(env_id, **kwargs).unwrapped):
        assert env.metadata["render_modes"] == []
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            check_env(env)
        expected = ("infinity", "different from the unwrapped version")
        assert all(any(text in str(w.message) for text in expected) for w in caught), [str(w.message) for w in caught]


@pytest.mark.parametrize(("family", "variant", "simulator"),
                         [("cheetah-velocity", GYMNASIUM, BatchSimulator), ("ant-direction", GYMNASIUM, LoopSimulator),
                          ("ant-direction", RLLAB, BatchSimulator)],
                         ids=lambda value: value.name if isinstance(value, Variant) else None)
def test_simulation_error_is_reported_and_masked(family: str, variant: Variant, simulator: type):
    """A huge velocity in one env: MuJoCo warns and resets it; the sampler counts it in `failed`, warns, and masks
    it (done, reward 0, frozen observation) while the others run on."""
    batch = _batch(family, TASKS[family], variant=variant)
    assert isinstance(batch.sim, simulator)
    batch.reset()
    qpos, qvel = batch.state()
    qvel[1] = 1e12
    start = batch.reset_to(qpos, qvel)
    actions = _actions(family, 3, steps=3, scale=0.3)
    with pytest.warns(RuntimeWarning, match="1 of 3 MuJoCo simulations failed at step 1"):
        observations, rewards, done = batch.step(actions[0])
    assert batch.failed.tolist() == [False, True, False] and done.tolist() == [False, True, False]
    assert rewards[1] == 0 and torch.equal(observations[1], start[1]) and rewards[[0, 2]].ne(0).all()
    for action in actions[1:]:
        observations, rewards, done = batch.step(action)
        assert rewards[1] == 0 and torch.equal(observations[1], start[1]) and done.tolist() == [False, True, False]
    batch.reset()
    assert not batch.failed.any()


@pytest.mark.parametrize(("family", "variant", "simulator"),
                         [("cheetah-velocity", GYMNASIUM, BatchSimulator), ("ant-direction", GYMNASIUM, LoopSimulator),
                          ("ant-direction", RLLAB, BatchSimulator)],
                         ids=lambda value: value.name if isinstance(value, Variant) else None)
def test_restart_starts_new_episodes_in_some_envs_and_leaves_the_others_running(family: str, variant: Variant,
                                                                                simulator: type):
    """`restart` (for batches counted in env steps): the restarted envs start from a fresh initial state, as a
    gymnasium env reset there goes on (same observations and rewards), with their own step count towards the horizon;
    the others run on exactly as without the restart."""
    tasks, actions = TASKS[family], _actions(family, 3, steps=12, scale=0.5)
    plain, batch = _batch(family, tasks, variant=variant), _batch(family, tasks, variant=variant)
    assert isinstance(batch.sim, simulator)
    plain.reset(), batch.reset()
    expected = [plain.step(action) for action in actions]
    for action in actions[:5]:
        batch.step(action)
    restarted = batch.restart(torch.tensor([False, True, False]))
    qpos, qvel = batch.state()
    assert batch.steps.tolist() == [5, 0, 5] and not batch.done.any()
    assert not torch.equal(restarted[1], expected[4][0][1])
    gym_obs, gym_rewards, _, _ = _gym_episode(gymnasium.make(FAMILIES[family].env_id, variant=variant.name),
                                              qpos[1], qvel[1], batch.tasks[1], actions[5:, 1])
    assert torch.equal(restarted[1], _f32(gym_obs[0]))
    for t, action in enumerate(actions[5:], start=5):
        observations, rewards, done = batch.step(action)
        assert torch.equal(observations[[0, 2]], expected[t][0][[0, 2]])
        assert torch.equal(rewards[[0, 2]], expected[t][1][[0, 2]])
        assert torch.equal(observations[1], _f32(gym_obs[t - 4])) and rewards[1] == _f32(gym_rewards[t - 5])
    assert batch.steps.tolist() == [12, 7, 12]


def test_rollout_with_env_factory_reuses_simulations():
    """`rollout` drives the sampler (T tasks x N paths, mask 1 on every step of the never-ending cheetah) and the
    factory keeps its simulations from one rollout to the next."""
    generator = torch.Generator().manual_seed(0)
    factory = env_factory("cheetah-velocity", generator, threads=1)
    policy_module = GaussianMLPPolicy(17, 6)
    params = {k: v.detach()[None].expand(2, *v.shape) for k, v in policy_module.named_parameters()}
    policy = lambda p, x: torch.func.functional_call(policy_module, p, (x,))
    tasks = sample_tasks("cheetah-velocity", 2, generator)
    paths = rollout(factory, policy, params, tasks, 3, generator)
    assert paths.observations.shape == (2, 3, 200, 17) and paths.mask.eq(1).all()
    assert paths.rewards.ne(0).all() and paths.rewards.isfinite().all()
    assert factory(tasks.repeat_interleave(3, 0)).sim is factory(tasks.repeat_interleave(3, 0)).sim


def test_reset_is_reproducible_and_shapes_for_many_envs():
    tasks = sample_tasks("cheetah-direction", 800, torch.Generator().manual_seed(0))
    first = _batch("cheetah-direction", tasks[:, 0].tolist(), seed=5).reset()
    batch = _batch("cheetah-direction", tasks[:, 0].tolist(), seed=5)
    assert torch.equal(batch.reset(), first) and first.shape == (800, 17) and first.dtype == torch.float32
    observations, rewards, done = batch.step(torch.randn(800, 6))
    assert observations.shape == (800, 17) and rewards.shape == (800,) and done.shape == (800,)
    assert rewards.dtype == torch.float32 and done.dtype == torch.bool and not done.any()
    assert not torch.equal(_batch("cheetah-direction", tasks[:, 0].tolist(), seed=6).reset(), first)


@pytest.mark.parametrize(("family", "high"), [("cheetah-velocity", 2.0), ("ant-velocity", 3.0)])
def test_sample_velocity_tasks(family: str, high: float):
    tasks = sample_tasks(family, 1000, torch.Generator().manual_seed(7))
    assert tasks.shape == (1000, 1) and tasks.dtype == torch.float32
    assert tasks.min() >= 0 and tasks.max() <= high and tasks.min() < 0.05 * high and tasks.max() > 0.95 * high
    assert torch.equal(tasks, sample_tasks(family, 1000, torch.Generator().manual_seed(7)))


@pytest.mark.parametrize("family", ["cheetah-direction", "ant-direction"])
def test_sample_direction_tasks(family: str):
    tasks = sample_tasks(family, 1000, torch.Generator().manual_seed(7))
    assert tasks.shape == (1000, 1) and set(tasks.flatten().tolist()) == {-1.0, 1.0}
    assert 400 < tasks.eq(1).sum() < 600


def test_gym_env_task_option_horizon_and_validation():
    env = gymnasium.make("harness/HalfCheetahDir-v0")
    assert env.reset(seed=0, options={"task": -1})[1]["task"] == -1.0
    drawn = {env.reset(seed=seed)[1]["task"] for seed in range(20)}
    assert drawn == {-1.0, 1.0}
    with pytest.raises(ValueError, match="direction"):
        env.reset(options={"task": 0.5})
    velocity = gymnasium.make("harness/AntVel-v0")
    assert 0 <= velocity.reset(seed=1)[1]["task"] <= 3
    env.reset(seed=0)
    ends = [env.step(np.zeros(6, np.float32))[2:4] for _ in range(200)]
    assert ends[:199] == [(False, False)] * 199 and ends[199] == (False, True)
    assert env.unwrapped.dt == 0.01 and velocity.unwrapped.dt == 0.02
    assert env.observation_space.shape == (17,) and velocity.observation_space.shape == (105,)


def test_the_envs_are_made_by_module_and_id_in_a_fresh_interpreter():
    """gymnasium 1.x loads no plugins by entry point; `gymnasium.make("<module>:<id>")` imports the module that
    registers the id, so a user needs nothing but the installed package."""
    import subprocess
    import sys

    code = ("import gymnasium as gym; "
            "print(gym.make('plugins.rl.locomotion:harness/AntDir-v0').observation_space.shape, "
            "gym.make('plugins.rl.navigation:harness/Navigation2D-v0').action_space.shape)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and done.stdout.split() == ["(105,)", "(2,)"], done.stderr
