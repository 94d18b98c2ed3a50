"""TRPO step (plugins.rl.trpo): conjugate gradients, Hessian-vector products, the KL bound and step rejection."""
from __future__ import annotations

import math

import pytest
import torch
from torch import Tensor

from harness.protocols import Params
from plugins.rl.trpo import (
    TRPOConfig,
    conjugate_gradient,
    fisher_vector_product,
    flatten_params,
    trpo_step,
    unflatten_params,
)


def _gaussian(p: Params, obs: Tensor) -> tuple[Tensor, Tensor]:
    """Linear-mean diagonal Gaussian policy: (mean, log_std), each (N, act_dim)."""
    mean = obs @ p["w"] + p["b"]
    return mean, p["log_std"].expand_as(mean)


def _log_prob(mean: Tensor, log_std: Tensor, act: Tensor) -> Tensor:
    return (-0.5 * ((act - mean) / log_std.exp()) ** 2 - log_std - 0.5 * math.log(2 * math.pi)).sum(-1)


def _mean_kl(mean0: Tensor, log_std0: Tensor, mean1: Tensor, log_std1: Tensor) -> Tensor:
    """Mean over rows of KL(N(mean0, std0) || N(mean1, std1)), summed over action dimensions."""
    var0, var1 = (2 * log_std0).exp(), (2 * log_std1).exp()
    return (log_std1 - log_std0 + (var0 + (mean0 - mean1) ** 2) / (2 * var1) - 0.5).sum(-1).mean()


def _flat(p: Params) -> Tensor:
    """Differentiable concatenation of p's tensors."""
    return torch.cat([t.reshape(-1) for t in p.values()])


def _problem(learn_std: bool) -> tuple[Params, object, object]:
    """(params, surrogate loss, mean KL) for fixed observations, actions drawn from the policy, and advantages.

    With `learn_std` False the log-std is a constant of the closures, so the KL is exactly quadratic in the params.
    """
    gen = torch.Generator().manual_seed(0)
    n, obs_dim, act_dim = 256, 3, 2
    params = {
        "w": 0.3 * torch.randn(obs_dim, act_dim, generator=gen, dtype=torch.float64),
        "b": torch.zeros(act_dim, dtype=torch.float64),
    }
    fixed_log_std = torch.full((act_dim,), -0.5, dtype=torch.float64)
    if learn_std:
        params["log_std"] = fixed_log_std

    def policy(p: Params) -> tuple[Tensor, Tensor]:
        return _gaussian({"log_std": fixed_log_std, **p}, obs)

    obs = torch.randn(n, obs_dim, generator=gen, dtype=torch.float64)
    mean0, log_std0 = policy(params)
    act = mean0 + log_std0.exp() * torch.randn(n, act_dim, generator=gen, dtype=torch.float64)
    logp0 = _log_prob(mean0, log_std0, act)
    adv = -((act - 1.0) ** 2).sum(-1)
    adv = (adv - adv.mean()) / adv.std()

    def loss(p: Params) -> Tensor:
        return -((_log_prob(*policy(p), act) - logp0).exp() * adv).mean()

    def kl(p: Params) -> Tensor:
        return _mean_kl(mean0, log_std0, *policy(p))

    return params, loss, kl


@pytest.fixture
def problem() -> tuple[Params, object, object]:
    return _problem(learn_std=True)


def test_conjugate_gradient_solves_spd_system():
    gen = torch.Generator().manual_seed(1)
    m = torch.randn(20, 20, generator=gen, dtype=torch.float64)
    a = m @ m.T + 2.0 * torch.eye(20, dtype=torch.float64)
    b = torch.randn(20, generator=gen, dtype=torch.float64)
    x = conjugate_gradient(lambda v: a @ v, b, iters=60, residual_tol=1e-24)
    torch.testing.assert_close(x, torch.linalg.solve(a, b), atol=1e-8, rtol=0)


def test_conjugate_gradient_zero_rhs_needs_no_products():
    def fvp(v: Tensor) -> Tensor:
        raise AssertionError("no product needed")

    assert torch.equal(conjugate_gradient(fvp, torch.zeros(5, dtype=torch.float64), iters=10), torch.zeros(5))


def test_fisher_vector_product_is_hessian_of_kl_times_v(problem):
    params, _, kl = problem
    flat = flatten_params(params)
    hessian = torch.autograd.functional.hessian(lambda f: kl(unflatten_params(f, params)), flat)
    v = torch.randn(flat.numel(), generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    fvp = fisher_vector_product(params, kl, damping=1e-3)
    torch.testing.assert_close(fvp(v), hessian @ v + 1e-3 * v, atol=1e-12, rtol=1e-10)
    torch.testing.assert_close(fvp(2 * v), 2 * (hessian @ v + 1e-3 * v), atol=1e-12, rtol=1e-10)  # graph reusable


@pytest.mark.parametrize("max_kl", [1e-3, 1e-2, 1e-1])
def test_step_keeps_kl_bound_and_lowers_loss(problem, max_kl):
    params, loss, kl = problem
    new, info = trpo_step(params, loss, kl, TRPOConfig(max_kl=max_kl))
    assert info["accepted"] and info["backtracks"] >= 0
    assert info["kl_after"] <= max_kl
    assert info["loss_after"] < info["loss_before"]
    assert list(new) == list(params) and all(new[k].shape == params[k].shape for k in params)
    with torch.no_grad():
        assert info["loss_before"] == pytest.approx(loss(params).item())
        assert info["loss_after"] == pytest.approx(loss(new).item())
        assert info["kl_after"] == pytest.approx(kl(new).item())
    step = flatten_params(new) - flatten_params(params)
    assert info["step_norm"] == pytest.approx(step.norm().item())
    if info["backtracks"] == 0:
        assert info["kl_after"] > 0.3 * max_kl


@pytest.mark.parametrize("max_kl", [1e-3, 1e-2, 1e-1])
def test_quadratic_kl_accepts_full_step_near_the_bound_with_few_calls(max_kl):
    params, loss, kl = _problem(learn_std=False)
    calls = {"loss": 0, "kl": 0}

    def counted(name, fn):
        def wrapped(p: Params) -> Tensor:
            calls[name] += 1
            return fn(p)

        return wrapped

    _, info = trpo_step(params, counted("loss", loss), counted("kl", kl), TRPOConfig(max_kl=max_kl))
    assert info["accepted"] and info["backtracks"] == 0
    assert 0.3 * max_kl < info["kl_after"] <= max_kl
    assert info["loss_after"] < info["loss_before"]
    assert calls == {"loss": 2, "kl": 2}  # gradient + one candidate; Hessian graph + one candidate


def test_step_rejected_when_kl_always_above_bound(problem):
    params, loss, kl = problem
    new, info = trpo_step(params, loss, lambda p: kl(p) + 0.02, TRPOConfig(max_kl=0.01))
    assert not info["accepted"] and info["backtracks"] == -1
    assert all(new[k] is params[k] for k in params)
    assert info["loss_after"] == info["loss_before"] and math.isnan(info["kl_after"])
    assert info["step_norm"] == 0.0


def test_step_rejected_at_a_strict_minimum_of_the_loss(problem):
    params, _, kl = problem
    flat0 = flatten_params(params)
    new, info = trpo_step(params, lambda p: ((_flat(p) - flat0) ** 2).sum(), kl)
    assert not info["accepted"] and info["backtracks"] == -1
    assert all(torch.equal(new[k], params[k]) for k in params)


def test_step_rejected_when_loss_increases_along_the_direction(problem):
    params, loss, kl = problem
    flat0 = flatten_params(params)

    def kinked(p: Params) -> Tensor:  # gradient points one way, but any move costs more than it gains
        return loss(p) + 10.0 * (_flat(p) - flat0).abs().sum()

    new, info = trpo_step(params, kinked, kl)
    assert not info["accepted"]
    assert all(torch.equal(new[k], params[k]) for k in params)
