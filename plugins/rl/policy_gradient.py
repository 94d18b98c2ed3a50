"""Policy gradients for the MAML RL experiments, after the authors' released code (cbfinn/maml_rl, built on rllab).

A Gaussian MLP policy used functionally on a params dict (`GaussianMLPPolicy`, ReLU as in maml_rl), a sampler that
rolls out the adapted policies of T tasks at once (`rollout` -> `Paths`, padded to the horizon H with a mask),
rllab's `LinearFeatureBaseline` fitted on each task's own paths before predicting them (`fit_baseline`, as
maml_rl's `BaseSampler.process_samples`), advantages normalised per task (`advantages`, rllab's `center_adv`) and
the REINFORCE surrogate, MAML's inner-loop loss for one task (`surrogate_loss`; vmap it over tasks).
"""
from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

import torch
import torch.utils._pytree as pytree
from torch import Tensor, nn
from torch.func import functional_call, vmap

from harness.protocols import Forward, Key, Params


class BatchEnv(Protocol):
    """E environments stepped together, one per trajectory; a done env stays frozen and is rewarded 0."""

    observation_size: int
    action_size: int
    horizon: int

    def reset(self) -> Tensor:
        """Observations [E, obs]."""
        ...

    def step(self, actions: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Actions [E, act] -> (observations [E, obs], rewards [E], done [E] bool)."""
        ...

    def restart(self, which: Tensor) -> Tensor:
        """Start a new episode in the envs where `which` [E] (bool) holds -> observations [E, obs] of all (used by
        `rollout`'s `fill_env_steps`, as is `stop`)."""
        ...

    def stop(self, which: Tensor) -> None:
        """End the episodes of the envs where `which` [E] (bool) holds: done, no longer simulated, until restarted."""
        ...


class GaussianMLPPolicy(nn.Module):
    """Observations [..., obs] -> [..., 2 act]: the mean and log-std of a diagonal Gaussian over actions, concatenated
    (one output tensor, like any model of a suite: `split` takes them apart).

    The mean is a ReLU MLP (Xavier-uniform weights, zero biases); `log_std` [act] is one state-independent parameter,
    initialised to log(init_std).
    """

    def __init__(
        self, observation_size: int, action_size: int, hidden: Sequence[int] = (100, 100), init_std: float = 1.0,
    ) -> None:
        super().__init__()
        sizes = [observation_size, *hidden, action_size]
        layers: list[nn.Module] = []
        for n_in, n_out in zip(sizes[:-1], sizes[1:]):
            linear = nn.Linear(n_in, n_out)
            nn.init.xavier_uniform_(linear.weight)
            nn.init.zeros_(linear.bias)
            layers += [linear, nn.ReLU()]
        self.mean = nn.Sequential(*layers[:-1])
        self.log_std = nn.Parameter(torch.full((action_size,), math.log(init_std)))

    def forward(self, observations: Tensor) -> Tensor:
        mean = self.mean(observations)
        return torch.cat([mean, self.log_std.expand_as(mean)], dim=-1)


def split(outputs: Tensor) -> tuple[Tensor, Tensor]:
    """A policy's outputs [..., 2 act] -> (mean [..., act], log_std [..., act])."""
    mean, log_std = outputs.chunk(2, dim=-1)
    return mean, log_std


def gaussian_log_prob(outputs: Tensor, actions: Tensor) -> Tensor:
    """Log density [...] of actions [..., act] under policy outputs [..., 2 act] (summed over action dimensions)."""
    mean, log_std = split(outputs)
    z = (actions - mean) * torch.exp(-log_std)
    return (-0.5 * z**2 - log_std - 0.5 * math.log(2 * math.pi)).sum(-1)


def log_prob(module: nn.Module, params: Params, observations: Tensor, actions: Tensor) -> Tensor:
    """Log density [...] of actions [..., act] given observations [..., obs] (summed over action dimensions)."""
    return gaussian_log_prob(functional_call(module, params, (observations,)), actions)


def gaussian_kl(old: Tensor, new: Tensor) -> Tensor:
    """KL(old || new) [...] of two diagonal Gaussian policies given by their outputs [..., 2 act]."""
    old_mean, old_log_std = split(old)
    new_mean, new_log_std = split(new)
    squared = (torch.exp(2 * old_log_std) + (old_mean - new_mean) ** 2) / (2 * torch.exp(2 * new_log_std))
    return (new_log_std - old_log_std + squared - 0.5).sum(-1)


def kl(module: nn.Module, old_params: Params, new_params: Params, observations: Tensor) -> Tensor:
    """KL(old || new) [...] of the two policies' action distributions at each observation [..., obs]."""
    return gaussian_kl(functional_call(module, old_params, (observations,)),
                       functional_call(module, new_params, (observations,)))


def _sample(mean: Tensor, log_std: Tensor, generator: torch.Generator) -> Tensor:
    noise = torch.randn(mean.shape, generator=generator, dtype=mean.dtype, device=mean.device)
    return mean + torch.exp(log_std) * noise


def sample_actions(module: nn.Module, params: Params, observations: Tensor, generator: torch.Generator) -> Tensor:
    """Actions [..., act] drawn at observations [..., obs]: mean + std * standard normal noise from `generator`."""
    return _sample(*split(functional_call(module, params, (observations,))), generator)


@dataclass(frozen=True)
class Paths:
    """Trajectories padded to the horizon H: observations [T, N, H, obs], actions [T, N, H, act], rewards [T, N, H],
    mask [T, N, H] (float: 1 on the steps kept, 0 elsewhere); T tasks of N rows each. `time` [T, N, H] (float) is
    each step's index within its episode where a task's episodes follow one another along its rows, an episode
    continuing from the end of one row to the next (`rollout`'s `fill_env_steps`); None: each row is one episode
    from step 0.

    The methods accept any leading shape (one task's paths are [N, H, ...]); registered as a pytree, so `vmap`
    maps over its tensors.
    """

    observations: Tensor
    actions: Tensor
    rewards: Tensor
    mask: Tensor
    time: Tensor | None = None

    def step_times(self) -> Tensor:
        """Each step's index within its episode [..., H]."""
        if self.time is not None:
            return self.time
        return torch.arange(self.rewards.shape[-1], dtype=self.rewards.dtype, device=self.rewards.device).expand_as(
            self.rewards)

    def returns(self, gamma: float) -> Tensor:
        """Discounted reward-to-go within each episode [..., H], zero on the steps not kept."""
        rewards = self.rewards * self.mask
        if self.time is None:
            steps = torch.arange(self.rewards.shape[-1], device=self.rewards.device)
            lag = steps[None, :] - steps[:, None]  # lag[i, j] = j - i
            discount = torch.tensor(gamma, dtype=self.rewards.dtype, device=self.rewards.device) ** lag.clamp(min=0)
            return rewards @ torch.where(lag >= 0, discount, 0).mT * self.mask
        # episodes follow one another along the rows of a task (at most H steps each)
        flat, time = rewards.flatten(-2), self.time.flatten(-2)
        episode = (time == 0).cumsum(-1)
        to_go = flat.clone()
        for lag in range(1, self.rewards.shape[-1]):
            same = episode[..., lag:] == episode[..., :-lag]
            to_go[..., :-lag] += gamma**lag * torch.where(same, flat[..., lag:], 0)
        return to_go.reshape(self.rewards.shape) * self.mask

    def episodes(self) -> Tensor:
        """The number of episodes of each task [...] (the leading shape without the rows and steps)."""
        return ((self.step_times() == 0) & (self.mask > 0)).sum((-2, -1))

    def undiscounted_return(self) -> Tensor:
        """Mean over episodes of the sum of rewards: [T] (the paper's metric)."""
        return (self.rewards * self.mask).sum((-2, -1)) / self.episodes()


pytree.register_dataclass(Paths)

EnvFactory = Callable[[Tensor], BatchEnv]
"""Task parameters of each env [E, k] -> a `BatchEnv` of E envs."""


FILL_LIMIT = 4
"""With `fill_env_steps`, an env runs at most this many times the horizon to fill its task's batch."""

ROLLOUT_KEYS: Mapping[str, Key] = {
    "fill_env_steps": Key(bool, "count a task's batch in env steps of whole episodes (`rollout`)"),
    "finish_begun": Key(bool, "with fill_env_steps, keep the episodes begun before the budget is spent (`rollout`)",
                        optional=True),
}
"""The config keys of a suite that passes `rollout`'s options from its config (a suite's `keys` include them)."""


@torch.no_grad()
def rollout(
    env_factory: EnvFactory, policy: Forward, params: Params, tasks: Tensor, n_trajectories: int,
    generator: torch.Generator, action_scale: float = 1.0, fill_env_steps: bool = False, finish_begun: bool = False,
) -> Paths:
    """`n_trajectories` (N) trajectories of each of the T tasks `tasks` [T, k], each under its own policy.

    `policy(params, observations)` is one task's policy outputs (`split` takes them apart); every tensor of `params`
    has a leading T dimension (task t's adapted policy). The envs (E = T * N, task t's trajectories contiguous) are
    stepped together for at most the env's horizon H, stopping once all are done; each receives `action_scale` x the
    sampled action (rllab's `normalize`: a policy action in [-1, 1] spans the env's range), the paths keep the
    sampled one. Returns `Paths` [T, N, H, ...]: mask 1 on each step taken, including the one that ended the
    episode; everything else is zero on padded steps.

    With `fill_env_steps`, a task's batch is N x H env steps of whole episodes rather than N episodes, as rllab's
    sampler counted its batch: every env starts a new episode (`restart`) whenever one ends, until the finished
    episodes of its task hold N x H steps (or `FILL_LIMIT` x H steps have passed); then the task's envs are not
    restarted and their running episodes are stopped (`stop`: not simulated further) and dropped, as rllab dropped
    unfinished paths. With `finish_begun` as well, a task's budget counts the steps its envs have taken instead, and
    the episodes begun before it is spent run to their end and are kept: whether an episode is kept is settled when
    it begins, not by how long it runs (dropping favours the episodes that end early: rllab's one env per task
    dropped one path in N, 20 envs per task drop up to 20). Each task's kept steps, env by env, are then packed into
    rows of H (`Paths.time` says where episodes start; one may continue into the next row): [T, R, H, ...] with R >=
    N rows, as many as the task keeping the most steps needs, so that the work on a batch follows its env steps.
    Where no episode ends early the paths are the same as without.
    """
    n_tasks, n = tasks.shape[0], n_trajectories
    env = env_factory(tasks.repeat_interleave(n, dim=0))
    policy = vmap(policy)
    obs = env.reset()
    e, h = obs.shape[0], env.horizon
    length = FILL_LIMIT * h if fill_env_steps else h
    alive = torch.ones(e, dtype=torch.bool, device=obs.device)
    time = torch.zeros(e, dtype=obs.dtype, device=obs.device)
    finished = torch.zeros(e, dtype=obs.dtype, device=obs.device)  # steps in this env's finished episodes
    taken = torch.zeros(e, dtype=obs.dtype, device=obs.device)  # steps this env has taken
    observations = obs.new_zeros(e, length, env.observation_size)
    actions = obs.new_zeros(e, length, env.action_size)
    rewards = obs.new_zeros(e, length)
    mask = obs.new_zeros(e, length)
    times = obs.new_zeros(e, length)
    ended = torch.zeros(e, length, dtype=torch.bool, device=obs.device)
    for t in range(length):
        action = _sample(*split(policy(params, obs.reshape(n_tasks, n, -1))), generator).reshape(e, -1)
        next_obs, reward, done = env.step(action_scale * action)
        observations[:, t] = torch.where(alive[:, None], obs, 0)
        actions[:, t] = torch.where(alive[:, None], action, 0)
        rewards[:, t] = torch.where(alive, reward, 0)
        mask[:, t] = alive.to(mask.dtype)
        times[:, t], ended[:, t] = time, done & alive
        if fill_env_steps:
            finished = torch.where(done & alive, finished + time + 1, finished)
            taken = taken + alive.to(taken.dtype)
            spent = (taken if finish_begun else finished).reshape(n_tasks, n).sum(-1).ge(n * h).repeat_interleave(n)
            alive = alive & ~(spent & done if finish_begun else spent)
            env.stop(~alive)  # episodes that ended or will be dropped: not simulated further
            time = torch.where(done, 0, time + 1)
            obs = env.restart(done & alive)
        else:
            alive = alive & ~done
            obs = next_obs
        if not alive.any():
            break
    if not fill_env_steps:
        return Paths(*(x.reshape(n_tasks, n, h, *x.shape[2:]) for x in (observations, actions, rewards, mask)))
    last_end = torch.where(ended.any(-1), length - 1 - ended.flip(-1).to(torch.int8).argmax(-1), -1)
    kept = torch.arange(length, device=obs.device) <= last_end[:, None]  # up to the end of the last finished episode
    return _pack(kept.reshape(n_tasks, n * length), h, *(x.reshape(n_tasks, n * length, *x.shape[2:])
                                                           for x in (observations, actions, rewards, times)))


def _pack(kept: Tensor, h: int, observations: Tensor, actions: Tensor, rewards: Tensor, times: Tensor) -> Paths:
    """Each task's kept steps [T, S] (bool), in order, laid out in rows of H: `Paths` [T, R, H, ...] with R the
    fewest rows that hold the most steps kept by a task; episodes continue from one row to the next."""
    count = int(kept.sum(-1).max())
    rows = -(-count // h)
    order = torch.argsort((~kept).to(torch.int8), dim=-1, stable=True)[:, :rows * h]  # kept steps first, in order
    mask = kept.gather(-1, order).to(rewards.dtype)

    def packed(x: Tensor) -> Tensor:
        picked = x.gather(1, order.reshape(*order.shape, *(1,) * (x.ndim - 2)).expand(-1, -1, *x.shape[2:]))
        picked = picked * mask.reshape(*mask.shape, *(1,) * (x.ndim - 2))
        return picked.reshape(len(x), rows, h, *x.shape[2:])

    return Paths(packed(observations), packed(actions), packed(rewards), mask.reshape(len(kept), rows, h),
                 time=packed(times))


def _features(paths: Paths) -> Tensor:
    """rllab's LinearFeatureBaseline features [..., H, 2 obs + 4], zero on padded steps (whatever they hold)."""
    o = paths.observations.clamp(-10, 10)
    t = paths.step_times()[..., None].to(o.dtype) / 100
    features = torch.cat([o, o**2, t, t**2, t**3, torch.ones_like(t)], dim=-1)
    return torch.where(paths.mask[..., None] > 0, features, 0)


def fit_baseline(paths: Paths, returns: Tensor, reg_coeff: float = 1e-5) -> Tensor:
    """rllab's linear feature baseline, fitted on each task's own paths [T, N, H, ...] and evaluated on them.

    Ridge least squares of `returns` [T, N, H] on the features of the valid steps only, in float64 as rllab's numpy
    (in float32 the Gram matrix of the ant's 214 features, many of them always zero, can factor with an exact zero
    pivot); a task whose solve fails or is not finite retries with 10x the ridge coefficient (5 tries in all). All
    tasks are solved at once. Returns the values [T, N, H] in the returns' dtype, zero on padded steps.
    """
    features = _features(paths).double()
    x = features.flatten(-3, -2)  # [T, N*H, F]
    y = torch.where(paths.mask > 0, returns, 0).double().flatten(-2)[..., None]  # [T, N*H, 1]
    gram, rhs = x.mT @ x, x.mT @ y
    reg = torch.full(gram.shape[:-2], reg_coeff, dtype=gram.dtype, device=gram.device)
    for _ in range(5):
        coeffs, failed = _ridge_solve(gram, rhs, reg)
        if not failed.any():
            break
        reg = torch.where(failed, reg * 10, reg)
    values = (features @ coeffs.unsqueeze(-3)).squeeze(-1).to(returns.dtype)
    return torch.where(paths.mask > 0, values, 0)


def _ridge_solve(gram: Tensor, rhs: Tensor, reg: Tensor) -> tuple[Tensor, Tensor]:
    """Solutions [T, F, 1] of (gram + reg I) c = rhs per task, and which failed [T] (singular or not finite; their
    solution is zero). A batch that torch refuses as a whole is solved task by task."""
    matrices = gram + reg[..., None, None] * torch.eye(gram.shape[-1], dtype=gram.dtype, device=gram.device)
    try:
        coeffs, info = torch.linalg.solve_ex(matrices, rhs)
        failed = info != 0
    except RuntimeError:  # some versions raise for a batch holding an exactly singular matrix
        solved = [_solve_one(m, r) for m, r in zip(matrices, rhs)]
        coeffs = torch.stack([c for c, _ in solved])
        failed = torch.tensor([f for _, f in solved], device=gram.device)
    failed = failed | ~coeffs.isfinite().all(-1).all(-1)
    return torch.where(failed[..., None, None], 0, coeffs), failed


def _solve_one(matrix: Tensor, rhs: Tensor) -> tuple[Tensor, bool]:
    try:
        return torch.linalg.solve(matrix, rhs), False
    except RuntimeError:
        return torch.zeros_like(rhs), True


def advantages(paths: Paths, gamma: float = 0.99, baseline: bool = True, normalize: bool = True) -> Tensor:
    """Advantages [T, N, H]: discounted returns minus the fitted baseline (GAE with lambda 1), zero on padded steps.

    `normalize`: mean 0, std 1 (+1e-8) over each task's valid steps, as rllab's `center_adv`.
    """
    returns = paths.returns(gamma)
    adv = returns - fit_baseline(paths, returns) if baseline else returns
    if not normalize:
        return adv
    mask = paths.mask
    count = mask.sum((-2, -1), keepdim=True)
    mean = (adv * mask).sum((-2, -1), keepdim=True) / count
    std = ((((adv - mean) * mask) ** 2).sum((-2, -1), keepdim=True) / count).sqrt()
    return (adv - mean) / (std + 1e-8) * mask


def pack_targets(paths: Paths, adv: Tensor) -> Tensor:
    """What the policy-gradient loss needs beside the policy's outputs, as one tensor [..., N, H, act + 2]:
    actions, advantage and mask per step (the "targets" of `reinforce_loss`, as a suite's loss takes them)."""
    return torch.cat([paths.actions, adv[..., None], paths.mask[..., None]], dim=-1)


def reinforce_loss(outputs: Tensor, targets: Tensor) -> Tensor:
    """REINFORCE loss of ONE task from policy outputs [N, H, 2 act] and `pack_targets` [N, H, act + 2]: the masked
    mean of -log_prob * advantage. A suite's `loss(outputs, targets)`, so MAML's inner step is the policy gradient."""
    actions, adv, mask = targets[..., :-2], targets[..., -2], targets[..., -1]
    return -(gaussian_log_prob(outputs, actions) * adv * mask).sum() / mask.sum()


def surrogate_loss(module: nn.Module, params: Params, paths: Paths, adv: Tensor) -> Tensor:
    """REINFORCE loss of ONE task, paths [N, H, ...] and advantages `adv` [N, H] (constants): the masked mean of
    -log_prob * adv. Differentiable in `params` (`torch.func.grad`); vmap over tasks for a batch.
    """
    return reinforce_loss(functional_call(module, params, (paths.observations,)), pack_targets(paths, adv))


def support_of(paths: Paths, gamma: float) -> tuple[Tensor, Tensor]:
    """Paths as a support set of the suite's REINFORCE loss: (observations, actions + advantage + mask)."""
    return paths.observations, pack_targets(paths, advantages(paths, gamma))


class RLSuite(Protocol):
    """What the RL trainer and evaluator need of a suite besides the `Suite` protocol."""

    name: str

    def sample_tasks(self, n: int, generator: torch.Generator) -> Tensor:
        """n task parameters [n, k] (e.g. goals), drawn from `generator`."""

    def rollout(self, policy: Forward, params: Params, tasks: Tensor, trajectories: int,
                generator: torch.Generator) -> Paths:
        """`trajectories` paths of each task under its own policy (`params` with a leading task dimension), or whole
        paths filling `trajectories` x H env steps where the suite counts its batches so (`rollout`'s
        `fill_env_steps`)."""
