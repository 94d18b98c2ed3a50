"""The policy-gradient pieces of the MAML RL experiments, on a 1D point mass (plugins/rl/policy_gradient.py)."""
from __future__ import annotations

import math

import torch
import torch.utils._pytree as pytree
from torch import Tensor
from torch.distributions import Independent, Normal, kl_divergence
from torch.func import functional_call, grad, vmap

from harness.functional import meta_gradient, sgd_step, task_loss
from plugins.rl.policy_gradient import (
    GaussianMLPPolicy,
    Paths,
    advantages,
    fit_baseline,
    kl,
    log_prob,
    pack_targets,
    reinforce_loss,
    rollout,
    sample_actions,
    split,
    surrogate_loss,
)

DTYPE = torch.float64


class PointEnv:
    """E 1D point masses from 0; task params [goal, tolerance]: reward -|pos - goal|, done within tolerance or after
    `horizon` steps of the env's episode (`restart` starts a new one in some envs, `stop` ends it); `simulated`
    counts each env's steps taken while not done."""

    observation_size = 1
    action_size = 1

    def __init__(self, tasks: Tensor, horizon: int = 20) -> None:
        self.goal, self.tolerance = tasks[:, 0], tasks[:, 1]
        self.horizon = horizon

    def reset(self) -> Tensor:
        self.pos = torch.zeros_like(self.goal)
        self.done = torch.zeros_like(self.goal, dtype=torch.bool)
        self.steps = torch.zeros_like(self.goal, dtype=torch.long)
        self.restarts = torch.zeros_like(self.goal, dtype=torch.long)
        self.simulated = torch.zeros_like(self.goal, dtype=torch.long)
        return self.pos[:, None].clone()

    def restart(self, which: Tensor) -> Tensor:
        self.restarts = self.restarts + which
        self.pos = torch.where(which, 0, self.pos)
        self.done = self.done & ~which
        self.steps = torch.where(which, 0, self.steps)
        return self.pos[:, None].clone()

    def stop(self, which: Tensor) -> None:
        self.done = self.done | which

    def step(self, actions: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        self.steps = self.steps + 1
        live = ~self.done
        self.simulated = self.simulated + live
        self.pos = torch.where(live, self.pos + 0.1 * actions[:, 0].clamp(-1, 1), self.pos)
        distance = (self.pos - self.goal).abs()
        reward = torch.where(live, -distance, 0)
        self.done = self.done | (distance < self.tolerance) | (self.steps >= self.horizon)
        return self.pos[:, None].clone(), reward, self.done.clone()


def forward_of(module):
    return lambda params, observations: functional_call(module, params, (observations,))


def policy_and_params(hidden: tuple[int, ...], obs: int = 1, act: int = 1, seed: int = 0):
    torch.manual_seed(seed)
    policy = GaussianMLPPolicy(obs, act, hidden).to(DTYPE)
    params = {k: v.detach() for k, v in policy.named_parameters()}
    return policy, params


def random_paths(generator: torch.Generator, shape: tuple[int, ...], obs: int = 2, act: int = 1) -> Paths:
    """Random paths of random lengths 1..H; padded steps hold garbage."""
    *lead, h = shape
    lengths = torch.randint(1, h + 1, tuple(lead), generator=generator)
    lengths.view(-1)[0] = h
    mask = (torch.arange(h) < lengths[..., None]).to(DTYPE)
    return Paths(
        torch.randn(*shape, obs, generator=generator, dtype=DTYPE) * 3,
        torch.randn(*shape, act, generator=generator, dtype=DTYPE),
        torch.randn(*shape, generator=generator, dtype=DTYPE),
        mask,
    )


def central_differences(fn, params: dict[str, Tensor], eps: float = 1e-6) -> dict[str, Tensor]:
    """The gradient of the scalar `fn(params)` by central finite differences, entry by entry."""
    out = {}
    for name, value in params.items():
        numeric = torch.zeros_like(value)
        for i in range(value.numel()):
            step = torch.zeros_like(value)
            step.view(-1)[i] = eps
            numeric.view(-1)[i] = (fn({**params, name: value + step}) - fn({**params, name: value - step})) / (2 * eps)
        out[name] = numeric
    return out


def per_task(params: dict[str, Tensor], *tasks: dict[str, Tensor]) -> dict[str, Tensor]:
    return {k: torch.stack([{**params, **t}[k] for t in tasks]) for k in params}


def test_log_prob_kl_and_sampling_match_torch_distributions():
    policy, old = policy_and_params((5,), obs=3, act=2)
    g = torch.Generator().manual_seed(0)
    new = {k: v + 0.3 * torch.randn(v.shape, generator=g, dtype=DTYPE) for k, v in old.items()}
    obs = torch.randn(4, 6, 3, generator=g, dtype=DTYPE)
    actions = torch.randn(4, 6, 2, generator=g, dtype=DTYPE)

    def dist(p: dict[str, Tensor]) -> Independent:
        mean, log_std = split(torch.func.functional_call(policy, p, (obs,)))
        return Independent(Normal(mean, log_std.exp()), 1)

    assert log_prob(policy, new, obs, actions).shape == (4, 6)
    torch.testing.assert_close(log_prob(policy, new, obs, actions), dist(new).log_prob(actions))
    torch.testing.assert_close(kl(policy, old, new, obs), kl_divergence(dist(old), dist(new)))
    torch.testing.assert_close(kl(policy, old, old, obs), torch.zeros(4, 6, dtype=DTYPE))
    mean, log_std = split(torch.func.functional_call(policy, new, (obs,)))
    noise = torch.randn(mean.shape, generator=torch.Generator().manual_seed(3), dtype=DTYPE)
    drawn = sample_actions(policy, new, obs, torch.Generator().manual_seed(3))
    torch.testing.assert_close(drawn, mean + log_std.exp() * noise)
    assert torch.allclose(policy.log_std, torch.zeros(2, dtype=DTYPE))


def test_surrogate_gradient_matches_finite_differences_and_vmaps_over_tasks():
    policy, params = policy_and_params((4,), obs=2)
    g = torch.Generator().manual_seed(1)
    paths = random_paths(g, (2, 3, 5))
    adv = torch.randn(2, 3, 5, generator=g, dtype=DTYPE) * paths.mask
    one = pytree.tree_map(lambda x: x[0], paths)
    loss = lambda p: surrogate_loss(policy, p, one, adv[0])
    analytic, numeric = grad(loss)(params), central_differences(loss, params)
    for name in params:
        torch.testing.assert_close(analytic[name], numeric[name], rtol=1e-6, atol=1e-9)

    one_task_grad = grad(lambda p, x, a: surrogate_loss(policy, p, x, a))
    batched = per_task(params, params, {k: v + 0.1 for k, v in params.items()})
    grads = vmap(one_task_grad)(batched, paths, adv)
    for t in range(2):
        task = pytree.tree_map(lambda x, t=t: x[t], paths)
        expected = one_task_grad({k: v[t] for k, v in batched.items()}, task, adv[t])
        for k in params:
            torch.testing.assert_close(grads[k][t], expected[k])


def test_maml_inner_step_and_second_order_meta_gradient_with_the_reinforce_loss_match_finite_differences():
    """The harness's supervised inner loop, unchanged, is the policy-gradient step with `reinforce_loss` as the loss:
    its one step equals params - lr * grad(surrogate), and the second-order meta-gradient of the post-adaptation
    loss (through that step) matches central finite differences."""
    policy, params = policy_and_params((3,), obs=2)
    g = torch.Generator().manual_seed(2)
    pre, post = random_paths(g, (1, 3, 4)), random_paths(g, (1, 3, 4))
    adv_pre, adv_post = (torch.randn(1, 3, 4, generator=g, dtype=DTYPE) for _ in range(2))
    loss_fn = task_loss(policy, reinforce_loss)
    support = (pre.observations, pack_targets(pre, adv_pre))
    query = (post.observations, pack_targets(post, adv_post))
    lr = 0.5
    adapted = sgd_step(loss_fn, params, support[0][0], support[1][0], lr)
    surrogate = grad(lambda p: surrogate_loss(policy, p, pytree.tree_map(lambda x: x[0], pre), adv_pre[0]))(params)
    for k in params:
        torch.testing.assert_close(adapted[k], params[k] - lr * surrogate[k])

    outer = lambda p: loss_fn(sgd_step(loss_fn, p, support[0][0], support[1][0], lr), query[0][0], query[1][0])
    _, meta = meta_gradient(loss_fn, [lr])(params, *support, *query)
    numeric = central_differences(outer, params)
    for name in params:
        torch.testing.assert_close(meta[name], numeric[name], rtol=1e-5, atol=1e-8)
    first_order = meta_gradient(loss_fn, [lr], first_order=True)(params, *support, *query)[1]
    assert max((first_order[k] - meta[k]).abs().max() for k in params) > 1e-4  # second-order terms matter here


def test_returns_and_undiscounted_return_match_a_loop_with_masks():
    paths = random_paths(torch.Generator().manual_seed(2), (2, 3, 6))
    gamma = 0.9
    returns = paths.returns(gamma)
    for t in range(2):
        for n in range(3):
            length = int(paths.mask[t, n].sum())
            running = 0.0
            for i in reversed(range(6)):
                if i < length:
                    running = paths.rewards[t, n, i].item() + gamma * running
                    assert math.isclose(returns[t, n, i].item(), running, rel_tol=1e-12, abs_tol=1e-12)
                else:
                    assert returns[t, n, i].item() == 0.0
    totals = [[paths.rewards[t, n, : int(paths.mask[t, n].sum())].sum() for n in range(3)] for t in range(2)]
    torch.testing.assert_close(paths.undiscounted_return(), torch.tensor(totals, dtype=DTYPE).mean(1))


def rllab_baseline(observations: list[Tensor], returns: list[Tensor], reg_coeff: float = 1e-5) -> list[Tensor]:
    """rllab's LinearFeatureBaseline on unpadded paths (fit on all of them, predict each)."""

    def features(o: Tensor) -> Tensor:
        o = o.clamp(-10, 10)
        al = torch.arange(len(o), dtype=DTYPE)[:, None] / 100
        return torch.cat([o, o**2, al, al**2, al**3, torch.ones_like(al)], 1)

    x, y = torch.cat([features(o) for o in observations]), torch.cat(returns)
    coeffs = torch.linalg.lstsq(x.T @ x + reg_coeff * torch.eye(x.shape[1], dtype=DTYPE), x.T @ y).solution
    return [features(o) @ coeffs for o in observations]


def test_baseline_fits_only_valid_steps_per_task_as_rllab():
    paths = random_paths(torch.Generator().manual_seed(4), (2, 4, 7))
    returns = paths.returns(0.99)
    values = fit_baseline(paths, returns)
    for t in range(2):
        lengths = [int(m.sum()) for m in paths.mask[t]]
        expected = rllab_baseline([o[:n] for o, n in zip(paths.observations[t], lengths)],
                                  [r[:n] for r, n in zip(returns[t], lengths)])
        for n, length in enumerate(lengths):
            torch.testing.assert_close(values[t, n, :length], expected[n], rtol=1e-7, atol=1e-9)
    assert (values[paths.mask == 0] == 0).all()

    padded = paths.mask[..., None] == 0
    garbage = Paths(torch.where(padded, torch.tensor(float("nan"), dtype=DTYPE), paths.observations), paths.actions,
                    torch.where(padded[..., 0], 1e6, paths.rewards), paths.mask)
    garbage_returns = torch.where(paths.mask > 0, returns, float("inf"))
    torch.testing.assert_close(fit_baseline(garbage, garbage_returns), values)


def test_baseline_is_finite_for_a_singular_design():
    paths = random_paths(torch.Generator().manual_seed(5), (2, 3, 5))
    zero_obs = Paths(torch.zeros_like(paths.observations), paths.actions, paths.rewards, paths.mask)
    for dtype in (torch.float64, torch.float32):
        cast = pytree.tree_map(lambda x, dtype=dtype: x.to(dtype), zero_obs)
        values = fit_baseline(cast, cast.returns(0.99))
        assert values.isfinite().all()
        assert advantages(cast).isfinite().all()


def test_advantages_are_normalised_per_task_over_valid_steps():
    paths = random_paths(torch.Generator().manual_seed(6), (3, 4, 6))
    for baseline in (True, False):
        adv = advantages(paths, baseline=baseline)
        assert (adv[paths.mask == 0] == 0).all()
        for t in range(3):
            valid = adv[t][paths.mask[t] > 0]
            torch.testing.assert_close(valid.mean(), torch.tensor(0.0, dtype=DTYPE), atol=1e-10, rtol=0)
            torch.testing.assert_close(valid.std(unbiased=False), torch.tensor(1.0, dtype=DTYPE))
    raw = advantages(paths, gamma=0.9, baseline=False, normalize=False)
    torch.testing.assert_close(raw, paths.returns(0.9))


def test_baseline_reduces_the_variance_of_the_gradient_estimate():
    policy, params = policy_and_params((8,), seed=7)
    tasks = torch.tensor([[2.0, 0.05]], dtype=DTYPE)
    estimates: dict[bool, list[Tensor]] = {True: [], False: []}
    for seed in range(30):
        paths = rollout(PointEnv, forward_of(policy), per_task(params, params), tasks, 5,
                        torch.Generator().manual_seed(seed))
        one = pytree.tree_map(lambda x: x[0], paths)
        for baseline in (True, False):
            adv = advantages(paths, baseline=baseline, normalize=False)[0]
            g = grad(lambda p, adv=adv, one=one: surrogate_loss(policy, p, one, adv))(params)
            estimates[baseline].append(torch.cat([v.flatten() for v in g.values()]))
    spread = {b: torch.stack(e).var(0).sum().item() for b, e in estimates.items()}
    assert spread[True] < 0.25 * spread[False], spread


def test_rollout_shapes_masks_per_task_policies_and_reproducibility():
    policy, params = policy_and_params((4,))
    last = policy.mean[-1]
    assert isinstance(last, torch.nn.Linear)
    n_last = len(policy.mean) - 1
    shifted = lambda b: {f"mean.{n_last}.weight": torch.zeros_like(params[f"mean.{n_last}.weight"]),
                         f"mean.{n_last}.bias": torch.full_like(params[f"mean.{n_last}.bias"], b),
                         "log_std": torch.full_like(params["log_std"], -12.0)}
    batched = per_task(params, shifted(5.0), shifted(-5.0))
    envs: list[PointEnv] = []
    make = lambda t: envs.append(PointEnv(t, horizon=6)) or envs[-1]

    # task 0 ends on its first step (tolerance 100), task 1 runs to the horizon (tolerance 0)
    tasks = torch.tensor([[0.0, 100.0], [0.0, 0.0]], dtype=DTYPE)
    paths = rollout(make, forward_of(policy), batched, tasks, 3, torch.Generator().manual_seed(0))
    assert paths.observations.shape == (2, 3, 6, 1) and paths.actions.shape == (2, 3, 6, 1)
    assert paths.rewards.shape == paths.mask.shape == (2, 3, 6)
    assert paths.mask.dtype == DTYPE
    assert (paths.mask[0, :, 0] == 1).all() and (paths.mask[0, :, 1:] == 0).all() and (paths.mask[1] == 1).all()
    padded = paths.mask == 0
    assert (paths.rewards[padded] == 0).all() and (paths.actions[padded] == 0).all()
    assert (paths.observations[padded] == 0).all()
    torch.testing.assert_close(paths.actions[0, :, 0], torch.full((3, 1), 5.0, dtype=DTYPE), atol=1e-4, rtol=0)
    torch.testing.assert_close(paths.actions[1], torch.full((3, 6, 1), -5.0, dtype=DTYPE), atol=1e-4, rtol=0)
    assert (paths.observations[:, :, 0] == 0).all()
    torch.testing.assert_close(paths.observations[1, :, 1:, 0], -0.1 * torch.arange(1, 6, dtype=DTYPE).expand(3, 5))

    # stops early once every env is done
    paths = rollout(make, forward_of(policy), batched, tasks[:1].expand(2, 2), 3, torch.Generator().manual_seed(0))
    assert (envs[-1].steps == 1).all() and paths.mask.shape == (2, 3, 6) and paths.mask.sum() == 6

    # the same generator seed gives the same paths, another seed others
    noisy = per_task(params, params, {k: v + 0.5 for k, v in params.items()})
    sample = lambda seed: rollout(make, forward_of(policy), noisy, tasks, 4, torch.Generator().manual_seed(seed))
    first, again, other = sample(1), sample(1), sample(2)
    for a, b in zip(pytree.tree_leaves(first), pytree.tree_leaves(again)):
        assert torch.equal(a, b)
    assert not torch.equal(first.actions, other.actions)


def test_rollout_gives_the_env_scaled_actions_and_keeps_the_sampled_ones():
    policy, params = policy_and_params((4,))
    envs: list[PointEnv] = []
    make = lambda t: envs.append(PointEnv(t, horizon=3)) or envs[-1]
    tasks = torch.tensor([[0.0, 0.0]], dtype=DTYPE)
    paths = {scale: rollout(make, forward_of(policy), per_task(params, params), tasks, 2,
                            torch.Generator().manual_seed(0), action_scale=scale) for scale in (1.0, 0.1)}
    for scale, p in paths.items():  # PointEnv moves by 0.1 * clip(its action, -1, 1)
        moved = p.observations[..., 1:, 0] - p.observations[..., :-1, 0]
        torch.testing.assert_close(moved, 0.1 * (scale * p.actions[..., :-1, 0]).clamp(-1, 1))


def test_ridge_solve_marks_a_singular_task_failed_and_solves_the_others():
    from plugins.rl.policy_gradient import _ridge_solve

    good = torch.tensor([[2.0, 0.0], [0.0, 4.0]], dtype=torch.float64)
    gram = torch.stack([good, torch.zeros(2, 2, dtype=torch.float64)])  # the second is singular without a ridge
    rhs = torch.ones(2, 2, 1, dtype=torch.float64)
    coeffs, failed = _ridge_solve(gram, rhs, torch.zeros(2, dtype=torch.float64))
    assert failed.tolist() == [False, True]
    assert torch.allclose(coeffs[0, :, 0], torch.tensor([0.5, 0.25], dtype=torch.float64))
    assert torch.equal(coeffs[1], torch.zeros(2, 1, dtype=torch.float64))


def test_filling_env_steps_packs_whole_episodes_and_drops_the_unfinished_ones_as_rllab_counted_its_batch():
    from plugins.rl.policy_gradient import FILL_LIMIT

    policy, params = policy_and_params((4,))
    noisy = per_task(params, params, params, params, {k: v + 0.5 for k, v in params.items()})
    horizon, n, gamma = 10, 3, 0.9
    envs: list[PointEnv] = []
    make = lambda t: envs.append(PointEnv(t, horizon=horizon)) or envs[-1]
    # tasks 0 and 1 end at random steps (goal near, wide tolerance), task 2 never ends early, task 3 on every step
    tasks = torch.tensor([[0.15, 0.1], [-0.2, 0.1], [0.0, 0.0], [0.0, 100.0]], dtype=DTYPE)
    plain = rollout(make, forward_of(policy), noisy, tasks, n, torch.Generator().manual_seed(0))
    filled = rollout(make, forward_of(policy), noisy, tasks, n, torch.Generator().manual_seed(0), fill_env_steps=True)
    assert plain.mask.shape == (4, n, horizon) and filled.mask.shape[0] == 4 and filled.mask.shape[2] == horizon
    assert n < filled.mask.shape[1] <= FILL_LIMIT * n
    for a, b in zip(pytree.tree_leaves(plain), pytree.tree_leaves(filled)):  # no early end: the same paths
        assert torch.equal(a[2], b[2, :n]) and (b[2, n:] == 0).all()
    assert filled.episodes()[3] == n * horizon  # one-step episodes, each env's first H
    assert (envs[-1].restarts[3 * n:] == horizon - 1).all()  # and no restart once the task is full
    assert filled.episodes()[0] > n and filled.episodes()[1] > n
    assert (filled.mask.sum((-2, -1)) >= n * horizon).all()  # each task's batch: at least N x H steps

    simulated = envs[-1].simulated.sum()

    class Unstoppable(PointEnv):
        def stop(self, which: Tensor) -> None:  # a full task's running episodes go on being simulated
            pass

    envs.clear()
    make = lambda t: envs.append(Unstoppable(t, horizon=horizon)) or envs[-1]
    unstopped = rollout(make, forward_of(policy), noisy, tasks, n, torch.Generator().manual_seed(0),
                        fill_env_steps=True)
    for a, b in zip(pytree.tree_leaves(filled), pytree.tree_leaves(unstopped)):
        assert torch.equal(a, b)  # stopping a full task's envs changes no path, and saves their steps:
    assert simulated < envs[-1].simulated.sum()

    returns = filled.returns(gamma)
    for t in range(len(tasks)):
        mask, time = filled.mask[t].flatten(), filled.time[t].flatten()
        rewards, to_go_of = filled.rewards[t].flatten(), returns[t].flatten()
        kept = int(mask.sum())
        assert (mask[:kept] == 1).all() and (mask[kept:] == 0).all() and (to_go_of[kept:] == 0).all()
        starts = [i for i in range(kept) if time[i] == 0] + [kept]
        sums = []
        for a, b in zip(starts[:-1], starts[1:]):  # each kept episode is whole: it ended at the goal or at H
            torch.testing.assert_close(time[a:b], torch.arange(b - a, dtype=DTYPE))
            assert b - a == horizon or -rewards[b - 1] < tasks[t, 1]
            r = rewards[a:b]
            to_go = [sum(gamma ** (j - i) * r[j] for j in range(i, b - a)) for i in range(b - a)]
            torch.testing.assert_close(to_go_of[a:b], torch.stack(to_go))
            sums.append(r.sum())
        torch.testing.assert_close(filled.undiscounted_return()[t], torch.stack(sums).mean())
    torch.testing.assert_close(plain.returns(gamma), Paths(*pytree.tree_leaves(plain), time=plain.step_times())
                               .returns(gamma))  # one episode per row: the two ways agree


def test_filling_with_finish_begun_keeps_every_episode_begun_and_begins_none_once_the_budget_is_spent():
    policy, params = policy_and_params((4,))
    noisy = per_task(params, params, params, params, {k: v + 0.5 for k, v in params.items()})
    horizon, n = 10, 3
    tasks = torch.tensor([[0.15, 0.1], [-0.2, 0.1], [0.0, 0.0], [0.0, 100.0]], dtype=DTYPE)

    class Logged(PointEnv):
        def restart(self, which: Tensor) -> Tensor:  # the steps its task had taken when each episode began
            taken = self.simulated.reshape(len(tasks), n).sum(-1).repeat_interleave(n)
            self.begun_after = getattr(self, "begun_after", []) + taken[which].tolist()
            return super().restart(which)

    envs: list[PointEnv] = []
    make = lambda t: envs.append(Logged(t, horizon=horizon)) or envs[-1]
    sample = lambda **fill: rollout(make, forward_of(policy), noisy, tasks, n, torch.Generator().manual_seed(0),
                                    fill_env_steps=True, **fill)
    dropping = sample()
    finishing = sample(finish_begun=True)
    env = envs[-1]
    for a, b in zip(pytree.tree_leaves(dropping), pytree.tree_leaves(finishing)):  # no early end: the same paths
        assert torch.equal(a[2, :n], b[2, :n]) and (a[2, n:] == 0).all() and (b[2, n:] == 0).all()
    begun = n + env.restarts.reshape(len(tasks), n).sum(-1)
    assert torch.equal(finishing.episodes(), begun)  # every episode begun is kept ...
    kept = finishing.mask.sum((-2, -1))
    assert torch.equal(kept, env.simulated.reshape(len(tasks), n).sum(-1).to(DTYPE))  # ... whole: none is dropped
    assert ((kept >= n * horizon) & (kept < n * horizon + n * horizon)).all()  # an env overruns by under H steps
    assert finishing.episodes()[3] == n * horizon  # one-step episodes: the budget is spent exactly
    assert max(env.begun_after) < n * horizon  # no episode begins once the task's envs have taken N x H steps
    for t in range(len(tasks)):  # each kept episode is whole: it ended at the goal or at H
        mask, time = finishing.mask[t].flatten(), finishing.time[t].flatten()
        count = int(mask.sum())
        ends = [i for i in range(1, count) if time[i] == 0] + [count]
        rewards = finishing.rewards[t].flatten()
        assert all(time[e - 1] == horizon - 1 or -rewards[e - 1] < tasks[t, 1] for e in ends)
