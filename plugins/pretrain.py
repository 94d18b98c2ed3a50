"""Non-meta-learned baselines that fine-tune at test time with a step size tuned on validation tasks:

- `pretrain`: one network trained on all tasks at once (paper: "pretraining on all tasks"), then fine-tuned; on a
  classification suite, a classifier over all training classes (`Suite.pooled_classes`) whose output layer is then
  replaced by a fresh, zero-initialised N-way head (the paper's "fine-tuning baseline");
- `oracle`: the same, with each task's true parameters as extra inputs (paper: "oracle");
- `scratch`: random initialisation, fine-tuned.

Training uses the suite's meta-training budget (`meta_iterations` batches of `meta_batch` tasks, every support and
query example as training data, Adam `meta_lr`). The tuned step sizes are part of the trained state and recorded
with the run (`step_size_validation`: the validation error of every candidate).
"""
from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

import torch
from torch import Tensor

from harness import hookimpl
from harness.finetune import best_step_sizes, step_size_for, tune_step_sizes
from harness.functional import adapt_batch, batch_gradient, resolve_vectorize
from harness.models import FunctionalModel
from harness.protocols import Adapted, Params, Suite, TaskBatch, TrainContext
from harness.training import train_adam


class Pretrain:
    name = "pretrain"
    description = "one network trained on all tasks, fine-tuned with a tuned step size"
    defaults: Mapping[str, Any] = {}
    uses_features = False
    trains = True

    def __init__(self, config: Mapping[str, Any]) -> None:
        self.config = config

    @classmethod
    def applies_to(cls, suite: type[Suite]) -> bool:
        return suite.kind == "supervised" and (not cls.uses_features or bool(suite.feature_names))

    def network(self, suite: Suite, device: torch.device | str) -> FunctionalModel:
        return FunctionalModel(suite, device, features=len(suite.feature_names) if self.uses_features else 0)

    def per_task(self, tasks: TaskBatch) -> dict[str, Tensor] | None:
        return {"task_features": tasks.features} if self.uses_features else None

    def meta_train(self, suite: Suite, ctx: TrainContext) -> dict[str, Tensor]:
        cfg = self.config
        net = self.network(suite, ctx.device)
        if self.trains and suite.pooled_classes:
            pooled = FunctionalModel(suite, ctx.device, outputs=suite.pooled_classes)
            self.train(suite, pooled, ctx)
            ctx.record("fresh_head", net.load_body(pooled))
        elif self.trains:
            self.train(suite, net, ctx)
        scores = tune_step_sizes(suite, cfg, net.loss, net.forward, net.params, adapt=net.weights,
                                 features=self.uses_features)
        ctx.record("step_size_validation", {k: {str(lr): e for lr, e in by_lr.items()} for k, by_lr in scores.items()})
        tuned = best_step_sizes(scores, suite.lower_is_better)
        ctx.record("tuned_step_sizes", {str(int(k)): lr for k, lr in tuned.tolist()})
        return {**net.state_dict(), "tuned_step_sizes": tuned}

    def train(self, suite: Suite, net: FunctionalModel, ctx: TrainContext) -> None:
        """Plain supervised training on every example of every sampled task (per-task losses averaged); a
        classification suite's examples are labelled with their class among all training classes."""
        cfg = self.config
        step = batch_gradient(net.loss, compile=cfg["compile"])
        pooled = bool(suite.pooled_classes)  # once: a suite may compute it (Omniglot reads its split manifest)

        def gradient(params: Params, it: int) -> tuple[Tensor, Params]:
            tasks = suite.sample("train", cfg["meta_batch"], ctx.generator(it), cfg["train_shots"], cfg["train_query"])
            tasks = tasks.to(ctx.device)
            x = torch.cat([tasks.support_x, tasks.query_x], dim=1)
            if pooled:
                y = torch.cat([tasks.support_classes, tasks.query_classes], dim=1)
            else:
                y = torch.cat([tasks.support_y, tasks.query_y], dim=1)
            return step(params, self.per_task(tasks) or {}, x, y)

        train_adam(net, ctx, cfg["meta_iterations"], cfg["meta_lr"], gradient)

    def adapt(self, suite: Suite, state: Mapping[str, Tensor], tasks: TaskBatch, steps: int) -> Iterator[Adapted]:
        net = self.network(suite, tasks.support_x.device)
        net.load_state_dict(state)
        lr = step_size_for(state["tuned_step_sizes"], tasks.n_shots)
        vectorize = resolve_vectorize(self.config["vectorize"])
        for params in adapt_batch(net.loss, net.params, tasks.support_x, tasks.support_y, [lr] * steps,
                                  adapt=net.weights, vectorize=vectorize, per_task=self.per_task(tasks)):
            yield Adapted(net.forward, params)


class Oracle(Pretrain):
    name = "oracle"
    description = "pretrain with each task's true parameters as extra inputs (an upper bound)"
    uses_features = True


class Scratch(Pretrain):
    name = "scratch"
    description = "random initialisation, fine-tuned with a tuned step size"
    trains = False


@hookimpl
def harness_learners() -> list[type]:
    return [Pretrain, Oracle, Scratch]
