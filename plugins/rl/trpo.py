"""One TRPO update from closures: the meta-optimiser of the MAML RL experiments (Finn et al. 2017).

Trust Region Policy Optimization (Schulman et al. 2015, Appendix C) as in rllab's ``ConjugateGradientOptimizer``
(``rllab/optimizers/conjugate_gradient_optimizer.py``; the MAML authors' ``cbfinn/maml_rl`` uses its TF port with the
same defaults): conjugate gradients (``rllab.misc.krylov.cg``, 10 iterations) solve (H + reg_coeff I) x = -g with H
the Hessian of the mean KL and g the gradient of the surrogate loss; x is scaled so that 0.5 x^T (H + reg I) x equals
the KL bound (``step_size`` 0.01 in ``MAMLNPO``); the step shrinks by ``backtrack_ratio`` (0.8) up to
``max_backtracks`` (15) times until the loss decreases and the mean KL is within the bound, else it is rejected.
Deliberate differences: Hessian-vector products by double backward (rllab's ``PerlmutterHvp``; maml_rl's default is
``FiniteDifferenceHvp``, a central difference of the KL gradient), no 1e-8 guards in the divisions, and a direction
with non-positive or non-finite curvature is rejected at once instead of being line-searched.
"""
from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from harness.protocols import Params

_log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TRPOConfig:
    max_kl: float = 0.01  # mean KL bound (rllab step_size)
    cg_iters: int = 10
    damping: float = 1e-5  # rllab reg_coeff
    backtrack_ratio: float = 0.8
    max_backtracks: int = 15


def flatten_params(params: Params) -> Tensor:
    """Concatenate the tensors of `params` (in the dict's order) into one detached 1-D tensor."""
    return torch.cat([t.detach().reshape(-1) for t in params.values()])


def unflatten_params(flat: Tensor, like: Params) -> Params:
    """Split `flat` into views shaped like `like` (same keys and order); differentiable w.r.t. `flat`."""
    out, i = {}, 0
    for name, t in like.items():
        out[name] = flat[i : i + t.numel()].view(t.shape)
        i += t.numel()
    return out


def conjugate_gradient(fvp: Callable[[Tensor], Tensor], b: Tensor, iters: int, residual_tol: float = 1e-10) -> Tensor:
    """Approximately solve F x = b for symmetric positive definite F given only products F v.

    Starts from x = 0 and runs at most `iters` iterations, one `fvp` call each, stopping once the squared residual
    norm r.r is at most `residual_tol` (as rllab.misc.krylov.cg).
    """
    x = torch.zeros_like(b)
    r = b.clone()
    p = b.clone()
    rr = r.dot(r)
    for _ in range(iters):
        if rr <= residual_tol:
            break
        z = fvp(p)
        alpha = rr / p.dot(z)
        x += alpha * p
        r -= alpha * z
        rr_new = r.dot(r)
        p = r + (rr_new / rr) * p
        rr = rr_new
    return x


def fisher_vector_product(params: Params, kl: Callable[[Params], Tensor], damping: float) -> Callable[[Tensor], Tensor]:
    """Return v -> H v + damping v on flat vectors, H the Hessian of `kl` at `params`.

    Evaluates `kl` once (in grad mode, keeping the graph of its gradient); each product is then one backward pass.
    """
    flat = flatten_params(params).requires_grad_()
    (grad_kl,) = torch.autograd.grad(kl(unflatten_params(flat, params)), flat, create_graph=True)

    def fvp(v: Tensor) -> Tensor:
        # grad of (grad_kl . v) w.r.t. flat, as a vector-Jacobian product of grad_kl
        (hv,) = torch.autograd.grad(grad_kl, flat, grad_outputs=v, retain_graph=True)
        return hv + damping * v

    return fvp


def trpo_step(
    params: Params,
    loss: Callable[[Params], Tensor],
    kl: Callable[[Params], Tensor],
    config: TRPOConfig = TRPOConfig(),
    hessian_product: Callable[[Tensor], Tensor] | None = None,
) -> tuple[Params, dict[str, Any]]:
    """One TRPO update of `params` (plain tensors, no graph needed; all of one dtype and device).

    `loss(p)`: the scalar surrogate loss to minimise, differentiable w.r.t. p. `kl(p)`: the scalar mean KL between the
    policy at `params` (held fixed inside the closure) and at p. `hessian_product(v)`, where given, is the Hessian of
    `kl` at `params` times a flat vector (e.g. in closed form); otherwise it comes from differentiating `kl` twice.
    Calls: `loss` once with grad, `kl` once with grad unless `hessian_product` is given (for config.cg_iters + 1
    Hessian-vector products), then per line-search candidate `loss` under no_grad and, only
    when the loss improved, `kl` under no_grad. Returns (new params, info) with info: loss_before, loss_after,
    kl_after, backtracks (-1 when rejected), accepted, step_norm. A rejected step returns a copy of the `params` dict
    (same tensors), loss_after = loss_before and kl_after = nan (not evaluated).
    """
    flat0 = flatten_params(params)
    leaf = flat0.clone().requires_grad_()
    loss0 = loss(unflatten_params(leaf, params))
    (g,) = torch.autograd.grad(loss0, leaf)
    loss_before = loss0.item()

    if hessian_product is None:
        fvp = fisher_vector_product(params, kl, config.damping)
    else:
        fvp = lambda v: hessian_product(v) + config.damping * v
    x = conjugate_gradient(fvp, -g, config.cg_iters)
    curvature = x.dot(fvp(x)).item()
    del fvp  # frees the double-backward graph before the line search

    info: dict[str, Any] = {
        "loss_before": loss_before, "loss_after": loss_before, "kl_after": math.nan,
        "backtracks": -1, "accepted": False, "step_norm": 0.0,
    }
    if 0.0 < curvature < math.inf:
        full_step = math.sqrt(2.0 * config.max_kl / curvature) * x
        with torch.no_grad():
            for k in range(config.max_backtracks):
                step = config.backtrack_ratio**k * full_step
                candidate = unflatten_params(flat0 + step, params)
                loss_new = loss(candidate).item()
                if not loss_new < loss_before:
                    continue
                kl_new = kl(candidate).item()
                if kl_new <= config.max_kl:
                    info.update(loss_after=loss_new, kl_after=kl_new, backtracks=k, accepted=True,
                                step_norm=step.norm().item())
                    return candidate, info
    _log.info("Line search condition violated. Rejecting the step! (loss %.6g)", loss_before)
    return dict(params), info
