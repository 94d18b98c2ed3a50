"""The model-agnostic inner loop: differentiable SGD on a parameter dict, for one task, a batch, or a meta-gradient.

A model is a `LossFn` over a parameter dict (see `task_loss`), so the same code adapts an MLP, a conv net or a
policy. Second order by default; `first_order=True` detaches the inner gradient. `adapt` names the parameters the
inner loop may change (all of them when None). The tasks of a batch run under `torch.func.vmap` or in a Python
loop (`vectorize`: "auto" | "vmap" | "loop"); both give the same numbers (to rounding). For meta-training, "auto" is
resolved by the execution layer, which times both on the first batch and keeps the faster
(`harness.decisions.fastest_meta_gradient`); for adaptation without a meta-gradient it takes vmap, which was faster for
every model and device measured (`benchmarks/`).
"""
from __future__ import annotations

from collections.abc import Callable, Collection, Iterator, Sequence

import torch
from torch import Tensor, nn
from torch.func import functional_call, grad, grad_and_value, vmap

from harness.protocols import Params

LossFn = Callable[[Params, Tensor, Tensor], Tensor]
"""(one task's parameters, inputs, targets) -> scalar loss."""

VECTORIZE = ("auto", "vmap", "loop")


def task_loss(model: nn.Module, loss: Callable[[Tensor, Tensor], Tensor]) -> LossFn:
    """The `LossFn` of `model` under `loss`: `loss(functional_call(model, params, x), y)`."""
    return lambda params, x, y: loss(functional_call(model, params, (x,)), y)


def resolve_vectorize(mode: str) -> str:
    """"vmap" or "loop" for adaptation (no meta-gradient): "auto" takes vmap."""
    if mode not in VECTORIZE:
        raise ValueError(f"vectorize must be one of {', '.join(VECTORIZE)}, not {mode!r}")
    return "vmap" if mode == "auto" else mode


def step_sizes(lr: float, steps: int, later_lr: float | None = None) -> list[float]:
    """Per-step step sizes: `lr` for the first step, `later_lr` (default `lr`) for the rest."""
    return [lr] + [lr if later_lr is None else later_lr] * (steps - 1) if steps > 0 else []


def sgd_step(
    loss_fn: LossFn, params: Params, x: Tensor, y: Tensor, lr: float,
    adapt: Collection[str] | None = None, first_order: bool = False,
) -> Params:
    """One SGD step of one task on its (x, y); differentiable through the gradient unless `first_order`."""
    trainable = {k: params[k] for k in (params if adapt is None else adapt)}
    grads = grad(lambda a: loss_fn({**params, **a}, x, y))(trainable)
    if first_order:
        grads = {k: g.detach() for k, g in grads.items()}
    return {**params, **{k: p - lr * grads[k] for k, p in trainable.items()}}


def inner_loop(
    loss_fn: LossFn, params: Params, x: Tensor, y: Tensor, lrs: Sequence[float],
    adapt: Collection[str] | None = None, first_order: bool = False,
) -> Params:
    """`len(lrs)` SGD steps of one task on the same (x, y)."""
    for lr in lrs:
        params = sgd_step(loss_fn, params, x, y, lr, adapt, first_order)
    return params


def meta_loss(
    loss_fn: LossFn, params: Params, support_x: Tensor, support_y: Tensor, query_x: Tensor, query_y: Tensor,
    lrs: Sequence[float], adapt: Collection[str] | None = None, first_order: bool = False, vectorize: str = "vmap",
) -> Tensor:
    """Mean over tasks (dimension 0 of the data) of the query loss after the inner loop on the support set."""

    def one_task(p: Params, sx: Tensor, sy: Tensor, qx: Tensor, qy: Tensor) -> Tensor:
        return loss_fn(inner_loop(loss_fn, p, sx, sy, lrs, adapt, first_order), qx, qy)

    if vectorize == "vmap":
        return vmap(one_task, in_dims=(None, 0, 0, 0, 0))(params, support_x, support_y, query_x, query_y).mean()
    if vectorize == "loop":
        data = zip(support_x, support_y, query_x, query_y)
        return torch.stack([one_task(params, *task) for task in data]).mean()
    raise ValueError(f"vectorize must be 'vmap' or 'loop' here, not {vectorize!r}")


MetaGradient = Callable[[Params, Tensor, Tensor, Tensor, Tensor], tuple[Tensor, Params]]


def meta_gradient(
    loss_fn: LossFn, lrs: Sequence[float], adapt: Collection[str] | None = None, first_order: bool = False,
    vectorize: str = "vmap", compile: bool = False,
) -> MetaGradient:
    """A function (params, support_x, support_y, query_x, query_y) -> (meta-loss, its gradient by parameter).

    `params` are plain tensors (no autograd graph needed). With `compile`, the whole computation goes through
    `torch.compile` (slow to start, several times faster per call on small models); the eager path is the reference.
    """

    def value(params: Params, *data: Tensor) -> Tensor:
        return meta_loss(loss_fn, params, *data, lrs=lrs, adapt=adapt, first_order=first_order, vectorize=vectorize)

    def functional(params: Params, *data: Tensor) -> tuple[Tensor, Params]:
        grads, loss = grad_and_value(value)(params, *data)
        return loss, grads

    def eager(params: Params, *data: Tensor) -> tuple[Tensor, Params]:
        # outer reverse mode through autograd: about 1.3x faster than grad_and_value when not compiled
        leaves = {k: p.detach().requires_grad_() for k, p in params.items()}
        loss = value(leaves, *data)
        return loss.detach(), dict(zip(leaves, torch.autograd.grad(loss, list(leaves.values()))))

    return torch.compile(functional, dynamic=False) if compile else eager


def batch_gradient(loss_fn: LossFn, compile: bool = False) -> Callable[..., tuple[Tensor, Params]]:
    """A function (params, per_task, x, y) -> (mean over tasks of the loss, its gradient by entry of `params`) for
    plain supervised training on a batch of tasks; `per_task` holds entries with a task dimension (not differentiated),
    e.g. each task's features. With `compile`, it goes through `torch.compile`."""

    def value(params: Params, per_task: Params, x: Tensor, y: Tensor) -> Tensor:
        return vmap(lambda extra, xi, yi: loss_fn({**params, **extra}, xi, yi))(per_task, x, y).mean()

    def fn(params: Params, per_task: Params, x: Tensor, y: Tensor) -> tuple[Tensor, Params]:
        grads, loss = grad_and_value(value)(params, per_task, x, y)
        return loss, grads

    return torch.compile(fn, dynamic=False) if compile else fn


def adapt_batch(
    loss_fn: LossFn, params: Params, x: Tensor, y: Tensor, lrs: Sequence[float],
    adapt: Collection[str] | None = None, vectorize: str = "vmap", per_task: Params | None = None,
    renew: Callable[[Params], tuple[Tensor, Tensor]] | None = None,
) -> Iterator[Params]:
    """Adapt shared `params` to every task of (x, y) (task dimension 0) and yield the per-task parameters after
    0, 1, ..., len(lrs) steps. `per_task` adds entries that differ between tasks and are never adapted (e.g. each
    task's true parameters for an oracle). `renew(per-task params)`, where given, replaces (x, y) before each step
    (a support set that depends on the model: `TaskBatch.renewer`). For evaluation: no graph to the shared
    parameters is kept."""
    adapt = list(params) if adapt is None else adapt
    with torch.no_grad():
        batched = {k: v.detach().expand(x.shape[0], *v.shape) for k, v in params.items()} | (per_task or {})
        yield batched
        for lr in lrs:
            if renew is not None:
                x, y = renew(batched)
            if vectorize == "vmap":
                batched = vmap(sgd_step, in_dims=(None, 0, 0, 0, None, None, None))(
                    loss_fn, batched, x, y, lr, adapt, True)
            else:
                per_task_steps = [sgd_step(loss_fn, {k: v[i] for k, v in batched.items()}, x[i], y[i], lr, adapt, True)
                                  for i in range(x.shape[0])]
                batched = {k: torch.stack([p[k] for p in per_task_steps]) for k in batched}
            yield batched
