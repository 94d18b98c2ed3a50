"""MAML (Finn, Abbeel, Levine 2017), its first-order variant, and context-vector adaptation (paper Appendix C.2).

Model-agnostic: any suite whose model is trained by gradient descent on a loss. Meta-training takes `inner_steps`
SGD steps of size `inner_lr` on each task's support set and a step of the suite's outer optimiser on the mean query
loss (supervised: Adam with `meta_lr`; RL: TRPO on the adapted policies' trajectories); adaptation at test time
repeats the inner step. MAML adapts every weight; context adaptation appends a learned
vector z to the input and adapts z only (the weights and z's initial value are meta-trained as in MAML).
"""
from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

import torch
from torch import Tensor

from harness import hookimpl
from harness.functional import adapt_batch, resolve_vectorize, step_sizes
from harness.models import FunctionalModel
from harness.protocols import Adapted, Key, Learner, Suite, TaskBatch, TrainContext
from harness.training import Adaptation, adaptation_step_sizes, trainer_for


class MAML(Learner):
    name = "maml"
    description = "model-agnostic meta-learning, second-order meta-gradient"
    defaults: Mapping[str, Any] = {"first_order": False}
    keys: Mapping[str, Key] = {"first_order": Key(bool, "treat the inner gradient as a constant (first-order MAML)")}

    def __init__(self, config: Mapping[str, Any]) -> None:
        self.config = config

    @classmethod
    def applies_to(cls, suite: type[Suite]) -> bool:
        return True  # any suite whose model trains by gradient descent: supervised or RL (the suite's trainer)

    def network(self, suite: Suite, device: torch.device | str) -> FunctionalModel:
        return FunctionalModel(suite, device)

    def adapted_names(self, net: FunctionalModel) -> list[str]:
        """The parameters the inner loop changes."""
        return list(net.params)

    def eval_step_sizes(self, steps: int) -> list[float]:
        """`inner_lr` for the first step; a suite may set `later_inner_lr` for the rest (RL evaluation: alpha/2)."""
        return adaptation_step_sizes(self.config["inner_lr"], steps, self.config)

    def meta_train(self, suite: Suite, ctx: TrainContext) -> dict[str, Tensor]:
        cfg = self.config
        net = self.network(suite, ctx.device)
        adaptation = Adaptation(step_sizes(cfg["inner_lr"], cfg["inner_steps"]), self.adapted_names(net),
                                cfg["first_order"])
        trainer_for(suite, cfg).meta_train(net, adaptation, ctx)
        return net.state_dict()

    def adapt(self, suite: Suite, state: Mapping[str, Tensor], tasks: TaskBatch, steps: int) -> Iterator[Adapted]:
        net = self.network(suite, tasks.support_x.device)
        net.load_state_dict(state)
        for params in adapt_batch(net.loss, net.params, tasks.support_x, tasks.support_y, self.eval_step_sizes(steps),
                                  adapt=self.adapted_names(net), vectorize=resolve_vectorize(self.config["vectorize"]),
                                  renew=tasks.renewer(net.forward)):
            yield Adapted(net.forward, params)


class FirstOrderMAML(MAML):
    name = "fomaml"
    description = "first-order MAML: the inner gradient is treated as a constant"
    defaults: Mapping[str, Any] = {"first_order": True}


class ContextVector(MAML):
    # context_size 5: the sinusoid family has 2 parameters, so z needs at least 2; at the quick profile
    # (`python -m harness run --learners context --suite sinusoid --set context_size=N`) the 5-shot MSE after
    # 10 steps was 0.067 for z = 2, 0.052 for z = 5 and 0.124 for z = 10.
    name = "context"
    description = "context-vector adaptation: z appended to the input, only z adapted (paper C.2)"
    defaults: Mapping[str, Any] = {"first_order": False, "context_size": 5}
    keys: Mapping[str, Key] = {**MAML.keys, "context_size": Key(int, "length of the learned context z", low=1,
                                                                 high=1024)}

    def network(self, suite: Suite, device: torch.device | str) -> FunctionalModel:
        return FunctionalModel(suite, device, context_size=self.config["context_size"])

    def adapted_names(self, net: FunctionalModel) -> list[str]:
        return ["context"]


@hookimpl
def harness_learners() -> list[type]:
    return [MAML, FirstOrderMAML, ContextVector]
