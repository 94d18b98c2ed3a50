"""Reptile (Nichol, Achiam, Schulman 2018) as a third-party learner: the whole algorithm in this file.

Each meta-iteration draws `meta_batch` training tasks, adapts the shared weights to each with `reptile_steps` plain
SGD steps of `reptile_inner_lr` on its support and query examples together, and moves the shared weights
`reptile_outer_lr` of the way towards the mean of the adapted ones. No second-order terms, no meta-gradient. At test
time it adapts as it trained: SGD of `reptile_inner_lr` on the support set.
"""
from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

import torch
from torch import Tensor
from torch.func import functional_call

import harness
from harness.functional import adapt_batch, task_loss
from harness.protocols import Adapted, Key, Learner, Suite, TaskBatch, TrainContext


class Reptile(Learner):
    name = "reptile-example"
    description = "Reptile: inner SGD, outer step towards the adapted weights (a third-party example)"
    defaults = {"reptile_steps": 5, "reptile_inner_lr": 0.02, "reptile_outer_lr": 0.1}
    keys = {
        "reptile_steps": Key(int, "inner SGD steps per task in meta-training", low=1),
        "reptile_inner_lr": Key(float, "inner SGD step size (training and test)", above=0),
        "reptile_outer_lr": Key(float, "fraction of the way to the mean adapted weights", above=0, high=1),
    }

    def __init__(self, config: Mapping[str, Any]) -> None:
        self.config = config

    @classmethod
    def applies_to(cls, suite: type[Suite]) -> bool:
        return suite.kind == "supervised"

    def meta_train(self, suite: Suite, ctx: TrainContext) -> dict[str, Tensor]:
        cfg = self.config
        model = suite.make_model().to(ctx.device)
        weights = {k: p.detach().clone() for k, p in model.named_parameters()}
        start = 0
        if (saved := ctx.load_checkpoint()) is not None:  # resume where an interrupted run stopped
            weights, start = saved["weights"], saved["iteration"] + 1
        loss_fn = task_loss(model, suite.loss)
        for it in ctx.iterations(start, cfg["meta_iterations"]):
            tasks = suite.sample("train", cfg["meta_batch"], ctx.generator(it), cfg["train_shots"],
                                 cfg["train_query"]).to(ctx.device)
            weights, loss = reptile_step(loss_fn, weights, tasks, cfg["reptile_steps"], cfg["reptile_inner_lr"],
                                         cfg["reptile_outer_lr"])
            ctx.log(it, loss)
            if ctx.checkpoint_due(it):
                ctx.save_checkpoint({"iteration": it, "weights": weights})
        model.load_state_dict(weights, strict=False)
        return {k: v.detach().clone() for k, v in model.state_dict().items()}

    def adapt(self, suite: Suite, state: Mapping[str, Tensor], tasks: TaskBatch, steps: int) -> Iterator[Adapted]:
        model = suite.make_model().to(tasks.support_x.device)
        model.load_state_dict(state)
        lrs = [self.config["reptile_inner_lr"]] * steps
        forward = lambda params, x: functional_call(model, params, (x,))
        for params in adapt_batch(task_loss(model, suite.loss), dict(model.named_parameters()), tasks.support_x,
                                  tasks.support_y, lrs):
            yield Adapted(forward, params)


def reptile_step(loss_fn: Any, weights: dict[str, Tensor], tasks: TaskBatch, steps: int, inner_lr: float,
                 outer_lr: float) -> tuple[dict[str, Tensor], float]:
    """One Reptile meta-iteration: (the new shared weights, the mean loss of the tasks before adapting)."""
    x = torch.cat([tasks.support_x, tasks.query_x], dim=1)
    y = torch.cat([tasks.support_y, tasks.query_y], dim=1)
    *_, adapted = adapt_batch(loss_fn, weights, x, y, [inner_lr] * steps)
    with torch.no_grad():
        loss = torch.func.vmap(loss_fn, in_dims=(None, 0, 0))(weights, x, y).mean().item()
    return {k: w + outer_lr * (adapted[k].mean(0) - w) for k, w in weights.items()}, loss


@harness.hookimpl
def harness_learners() -> list[type]:
    return [Reptile]
