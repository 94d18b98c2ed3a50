"""Outer loops: how a learner's network is trained on a suite, whatever the learner.

A learner states what it adapts (`Adaptation`) and asks the suite's `MetaTrainer` to train its network: the MAML
family meta-trains through the adaptation, the baselines train jointly on every task. Supervised suites use
`SupervisedTrainer` (tasks from `Suite.sample`, Adam); a suite with an outer loop of its own (RL: rollouts of the
adapted policies and a TRPO step) provides it as `Suite.trainer(config)`.
"""
from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import torch
from torch import Tensor

from harness.decisions import fastest_meta_gradient
from harness.finetune import best_step_sizes, tune_step_sizes
from harness.functional import batch_gradient, step_sizes
from harness.models import FunctionalModel
from harness.protocols import Params, Suite, TaskBatch, TrainContext


@dataclass(frozen=True)
class Adaptation:
    """A learner's inner loop: SGD steps of `step_sizes` on the parameters named `adapt` (all when None), the inner
    gradient treated as a constant when `first_order`."""

    step_sizes: Sequence[float]
    adapt: Sequence[str] | None = None
    first_order: bool = False


class MetaTrainer(Protocol):
    """Trains a learner's `FunctionalModel` in place on a suite; resumable through the context's checkpoints."""

    def meta_train(self, net: FunctionalModel, adaptation: Adaptation, ctx: TrainContext) -> None:
        """Optimise `net.params` for the loss after `adaptation` on each task (the MAML objective)."""

    def train(self, net: FunctionalModel, ctx: TrainContext, features: bool = False) -> None:
        """Optimise `net.params` jointly on every task, without adaptation; with `features` each task's true
        parameters are the per-task entry "task_features" (an oracle)."""

    def step_sizes(self, net: FunctionalModel, ctx: TrainContext, features: bool = False) -> Tensor:
        """The fine-tuning step size of `net` per shot count, as `harness.finetune.best_step_sizes` gives them."""


def adaptation_step_sizes(lr: float, steps: int, config: Mapping[str, Any]) -> list[float]:
    """Step sizes of `steps` adaptation steps at test time starting with `lr`: the later ones scaled as the suite's
    optional `later_inner_lr` scales `inner_lr` (RL: halved; `later_inner_lr` itself after `inner_lr`), else all
    `lr`."""
    if "later_inner_lr" not in config or lr == config["inner_lr"]:
        return step_sizes(lr, steps, config.get("later_inner_lr"))
    return step_sizes(lr, steps, lr * config["later_inner_lr"] / config["inner_lr"])


def trainer_for(suite: Suite, config: Mapping[str, Any]) -> MetaTrainer:
    """An RL suite's own trainer (`RLSuite.trainer`), else `SupervisedTrainer`."""
    return suite.trainer(config) if suite.kind == "rl" else SupervisedTrainer(suite, config)


class SupervisedTrainer:
    """Adam (`meta_lr`) for `meta_iterations` on batches of `meta_batch` tasks from `Suite.sample` (`train_shots`
    support and `train_query` query examples per task); step sizes tuned on validation tasks."""

    def __init__(self, suite: Suite, config: Mapping[str, Any]) -> None:
        self.suite, self.config = suite, config

    def tasks(self, ctx: TrainContext, it: int) -> TaskBatch:
        cfg = self.config
        return self.suite.sample("train", cfg["meta_batch"], ctx.generator(it), cfg["train_shots"],
                                 cfg["train_query"]).to(ctx.device)

    def meta_train(self, net: FunctionalModel, adaptation: Adaptation, ctx: TrainContext) -> None:
        cfg = self.config
        step = fastest_meta_gradient(
            net.loss, adaptation.step_sizes, adapt=adaptation.adapt, first_order=adaptation.first_order,
            vectorize=cfg["vectorize"], compile=cfg["compile"],
            on_choice=lambda mode, ms: ctx.record("vectorize", {"chosen": mode, "ms_per_meta_iteration": ms,
                                                                "remembered": not ms}),
        )

        def gradient(params: Params, it: int) -> tuple[Tensor, Params]:
            tasks = self.tasks(ctx, it)
            return step(params, tasks.support_x, tasks.support_y, tasks.query_x, tasks.query_y)

        train_adam(net, ctx, cfg["meta_iterations"], cfg["meta_lr"], gradient)

    def train(self, net: FunctionalModel, ctx: TrainContext, features: bool = False) -> None:
        """Every support and query example of every sampled task is training data (per-task losses averaged); a
        classification suite's examples are labelled with their class among all training classes."""
        step = batch_gradient(net.loss, compile=self.config["compile"])
        pooled = bool(self.suite.pooled_classes)  # once: a suite may compute it (Omniglot reads its split manifest)

        def gradient(params: Params, it: int) -> tuple[Tensor, Params]:
            tasks = self.tasks(ctx, it)
            x = torch.cat([tasks.support_x, tasks.query_x], dim=1)
            if pooled:
                y = torch.cat([tasks.support_classes, tasks.query_classes], dim=1)
            else:
                y = torch.cat([tasks.support_y, tasks.query_y], dim=1)
            return step(params, {"task_features": tasks.features} if features else {}, x, y)

        train_adam(net, ctx, self.config["meta_iterations"], self.config["meta_lr"], gradient)

    def step_sizes(self, net: FunctionalModel, ctx: TrainContext, features: bool = False) -> Tensor:
        """The best of a grid on validation tasks (every candidate's score recorded with the run)."""
        scores = tune_step_sizes(self.suite, self.config, net.loss, net.forward, net.params, adapt=net.weights,
                                 features=features)
        ctx.record("step_size_validation", {k: {str(lr): e for lr, e in by_lr.items()} for k, by_lr in scores.items()})
        return best_step_sizes(scores, self.suite.lower_is_better)


CURVE_EVERY = 50
"""The detail `training_loss` averages the training loss over blocks of this many iterations."""


def train_adam(net: FunctionalModel, ctx: TrainContext, iterations: int, lr: float,
               gradient: Callable[[Params, int], tuple[Tensor, Params]]) -> None:
    """`iterations` Adam steps on `net.params`; `gradient(params, iteration)` gives (loss, gradient by name) at the
    current parameters (plain tensors). Resumes from the context's last checkpoint and saves one when due. Records
    the learning curve as the detail `training_loss`: {"every": CURVE_EVERY, "mean": the mean loss of each block of
    that many iterations} (null for a block begun in a checkpoint written before the curve was kept)."""
    optimizer = torch.optim.Adam(net.params.values(), lr=lr)
    start, losses = 0, torch.empty(iterations, dtype=torch.float64)
    if (checkpoint := ctx.load_checkpoint()) is not None:
        net.load_state_dict(checkpoint["model"])
        optimizer.load_state_dict(checkpoint["optimizer"])
        start = checkpoint["iteration"] + 1
        losses[:start] = checkpoint.get("losses", torch.full((start,), math.nan, dtype=torch.float64))
    for it in ctx.iterations(start, iterations):
        loss, grads = gradient({k: p.detach() for k, p in net.params.items()}, it)
        for name, p in net.params.items():
            p.grad = grads[name]
        optimizer.step()
        losses[it] = value = loss.item()
        ctx.log(it, value)
        if ctx.checkpoint_due(it):
            ctx.save_checkpoint({"iteration": it, "model": net.state_dict(), "optimizer": optimizer.state_dict(),
                                 "losses": losses[:it + 1].clone()})
    means = [block.mean().item() for block in losses.split(CURVE_EVERY)]
    ctx.record("training_loss", {"every": CURVE_EVERY, "mean": [m if math.isfinite(m) else None for m in means]})
