"""Non-meta-learned baselines that fine-tune at test time with a step size tuned on validation tasks:

- `pretrain`: one network trained on all tasks at once (paper: "pretraining on all tasks"), then fine-tuned; on a
  classification suite, a classifier over all training classes (`Suite.pooled_classes`) whose output layer is then
  replaced by a fresh, zero-initialised N-way head (the paper's "fine-tuning baseline");
- `oracle`: the same, with each task's true parameters as extra inputs (paper: "oracle");
- `scratch`: random initialisation, fine-tuned.

Training is the suite trainer's joint training (supervised: `meta_iterations` batches of `meta_batch` tasks, every
support and query example as training data, Adam `meta_lr`; RL: TRPO on trajectories of randomly drawn tasks). The
fine-tuning step sizes come from the trainer too (tuned on validation tasks, every candidate's score recorded as
`step_size_validation`) and are part of the trained state.
"""
from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

import torch
from torch import Tensor

from harness import hookimpl
from harness.finetune import step_size_for
from harness.functional import adapt_batch, resolve_vectorize
from harness.models import FunctionalModel
from harness.protocols import Adapted, Learner, Suite, TaskBatch, TrainContext
from harness.training import adaptation_step_sizes, trainer_for


def pooled_classifier(suite: Suite, config: Mapping[str, Any], ctx: TrainContext) -> FunctionalModel:
    """A classifier over all training classes of a classification suite (`Suite.pooled_classes`), trained jointly
    on every example of the training tasks by the suite's trainer: the body the fine-tuning baseline fine-tunes and
    `nearest-neighbour` embeds with."""
    pooled = FunctionalModel(suite, ctx.device, outputs=suite.pooled_classes)
    trainer_for(suite, config).train(pooled, ctx)
    return pooled


class Pretrain(Learner):
    name = "pretrain"
    description = "one network trained on all tasks, fine-tuned with a tuned step size"
    defaults: Mapping[str, Any] = {}
    uses_features = False
    trains = True

    def __init__(self, config: Mapping[str, Any]) -> None:
        self.config = config

    @classmethod
    def applies_to(cls, suite: type[Suite]) -> bool:
        return not cls.uses_features or bool(suite.feature_names)

    def network(self, suite: Suite, device: torch.device | str) -> FunctionalModel:
        return FunctionalModel(suite, device, features=len(suite.feature_names) if self.uses_features else 0)

    def per_task(self, tasks: TaskBatch) -> dict[str, Tensor] | None:
        return {"task_features": tasks.features} if self.uses_features else None

    def meta_train(self, suite: Suite, ctx: TrainContext) -> dict[str, Tensor]:
        net = self.network(suite, ctx.device)
        if self.trains and suite.pooled_classes:
            ctx.record("fresh_head", net.load_body(pooled_classifier(suite, self.config, ctx)))
        elif self.trains:
            self.train(suite, net, ctx)
        tuned = trainer_for(suite, self.config).step_sizes(net, ctx, features=self.uses_features)
        ctx.record("tuned_step_sizes", {str(int(k)): lr for k, lr in tuned.tolist()})
        return {**net.state_dict(), "tuned_step_sizes": tuned}

    def train(self, suite: Suite, net: FunctionalModel, ctx: TrainContext) -> None:
        """Train `net` jointly on all tasks (the suite trainer's `train`)."""
        trainer_for(suite, self.config).train(net, ctx, features=self.uses_features)

    def adapt(self, suite: Suite, state: Mapping[str, Tensor], tasks: TaskBatch, steps: int) -> Iterator[Adapted]:
        net = self.network(suite, tasks.support_x.device)
        net.load_state_dict(state)
        lr = step_size_for(state["tuned_step_sizes"], tasks.n_shots)
        for params in adapt_batch(net.loss, net.params, tasks.support_x, tasks.support_y,
                                  adaptation_step_sizes(lr, steps, self.config), adapt=net.weights,
                                  vectorize=resolve_vectorize(self.config["vectorize"]), per_task=self.per_task(tasks),
                                  renew=tasks.renewer(net.forward)):
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
