"""MAML (Finn, Abbeel, Levine 2017) and its first-order variant, model-agnostic: any suite whose model is trained
by gradient descent on a loss. Meta-training takes `inner_steps` SGD steps of size `inner_lr` on each task's
support set and an Adam step (`meta_lr`) on the mean query loss; adaptation at test time repeats the inner step."""
from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

import torch
from torch import Tensor
from torch.func import functional_call

from harness import hookimpl
from harness.functional import adapt_batch, meta_gradient, resolve_vectorize, step_sizes, task_loss
from harness.protocols import Adapted, Suite, TaskBatch, TrainContext


class MAML:
    name = "maml"
    description = "model-agnostic meta-learning, second-order meta-gradient"
    defaults: Mapping[str, Any] = {"first_order": False}

    def __init__(self, config: Mapping[str, Any]) -> None:
        self.config = config

    @classmethod
    def applies_to(cls, suite: type[Suite]) -> bool:
        return suite.kind == "supervised"

    def meta_train(self, suite: Suite, ctx: TrainContext) -> dict[str, Tensor]:
        cfg = self.config
        model = suite.make_model().to(ctx.device)
        params = dict(model.named_parameters())
        optimizer = torch.optim.Adam(params.values(), lr=cfg["meta_lr"])
        start = 0
        if (checkpoint := ctx.load_checkpoint()) is not None:
            model.load_state_dict(checkpoint["model"])
            optimizer.load_state_dict(checkpoint["optimizer"])
            start = checkpoint["iteration"] + 1
        step = meta_gradient(
            task_loss(model, suite.loss), step_sizes(cfg["inner_lr"], cfg["inner_steps"]),
            first_order=cfg["first_order"], vectorize=resolve_vectorize(cfg["vectorize"], model, ctx.device),
            compile=cfg["compile"],
        )
        for it in ctx.iterations(start, cfg["meta_iterations"]):
            tasks = suite.sample("train", cfg["meta_batch"], ctx.generator(it), cfg["train_shots"], cfg["train_query"])
            tasks = tasks.to(ctx.device)
            loss, grads = step({k: p.detach() for k, p in params.items()},
                               tasks.support_x, tasks.support_y, tasks.query_x, tasks.query_y)
            for name, p in params.items():
                p.grad = grads[name]
            optimizer.step()
            ctx.log(it, loss.item())
            if ctx.checkpoint_due(it):
                ctx.save_checkpoint({"iteration": it, "model": model.state_dict(), "optimizer": optimizer.state_dict()})
        return model.state_dict()

    def adapt(self, suite: Suite, state: Mapping[str, Tensor], tasks: TaskBatch, steps: int) -> Iterator[Adapted]:
        model = suite.make_model().to(tasks.support_x.device)
        model.load_state_dict(state)
        forward = lambda p, x: functional_call(model, p, (x,))
        vectorize = resolve_vectorize(self.config["vectorize"], model, tasks.support_x.device)
        for params in adapt_batch(task_loss(model, suite.loss), dict(model.named_parameters()), tasks.support_x,
                                  tasks.support_y, step_sizes(self.config["inner_lr"], steps), vectorize=vectorize):
            yield Adapted(forward, params)


class FirstOrderMAML(MAML):
    name = "fomaml"
    description = "first-order MAML: the inner gradient is treated as a constant"
    defaults: Mapping[str, Any] = {"first_order": True}


@hookimpl
def harness_learners() -> list[type]:
    return [MAML, FirstOrderMAML]
