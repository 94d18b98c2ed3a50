"""The outer loop of the RL suites (MAML's meta-RL, after cbfinn/maml_rl's MAML-TRPO): a `harness.training.MetaTrainer`.

One meta-iteration, for a batch of `meta_batch` tasks drawn by the suite:
1. roll out the current policy, `trajectories` paths per task, and fit each task's baseline (the support set);
2. take the learner's inner steps (REINFORCE, the suite's loss) on those paths, and roll out the adapted policies;
3. one TRPO step on the likelihood-ratio surrogate of the adapted policies' paths, with the mean KL of the adapted
   policies bounded by `max_kl`; both are functions of the initial parameters through the inner steps (second
   order, or first order when the learner says so), so TRPO's Hessian-vector products differentiate through them.
Without inner steps (the pretrain and oracle baselines) this is plain TRPO on the policy over randomly drawn tasks.
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol

import torch
from torch import Tensor
from torch.func import vmap

from harness.errors import UsageError
from harness.functional import inner_loop
from harness.models import FunctionalModel
from harness.protocols import Forward, Params, TrainContext
from harness.training import Adaptation
from plugins.rl.policy_gradient import Paths, advantages, gaussian_kl, gaussian_log_prob, pack_targets
from plugins.rl.trpo import TRPOConfig, trpo_step


class RLSuite(Protocol):
    """What the RL trainer and evaluator need of a suite besides the `Suite` protocol."""

    name: str

    def sample_tasks(self, n: int, generator: torch.Generator) -> Tensor:
        """n task parameters [n, k] (e.g. goals), drawn from `generator`."""

    def rollout(self, policy: Forward, params: Params, tasks: Tensor, trajectories: int,
                generator: torch.Generator) -> Paths:
        """`trajectories` paths of each task under its own policy (`params` with a leading task dimension)."""


def batched(params: Params, n: int) -> Params:
    """Shared parameters repeated for n tasks (a view)."""
    return {k: v.expand(n, *v.shape) for k, v in params.items()}


def support_of(paths: Paths, gamma: float) -> tuple[Tensor, Tensor]:
    """Paths as a support set of the suite's REINFORCE loss: (observations, actions + advantage + mask)."""
    return paths.observations, pack_targets(paths, advantages(paths, gamma))


class TRPOTrainer:
    """`MetaTrainer` of an `RLSuite`: config keys meta_iterations, meta_batch, trajectories, gamma and TRPO's
    max_kl, cg_iters, cg_damping, backtrack_ratio, max_backtracks; fine-tuning step size `inner_lr` (not tuned)."""

    def __init__(self, suite: RLSuite, config: Mapping[str, Any]) -> None:
        self.suite, self.config = suite, config
        self.trpo = TRPOConfig(max_kl=config["max_kl"], cg_iters=config["cg_iters"], damping=config["cg_damping"],
                               backtrack_ratio=config["backtrack_ratio"], max_backtracks=config["max_backtracks"])

    def meta_train(self, net: FunctionalModel, adaptation: Adaptation, ctx: TrainContext) -> None:
        self._train(net, adaptation, ctx, features=False)

    def train(self, net: FunctionalModel, ctx: TrainContext, features: bool = False) -> None:
        self._train(net, Adaptation(step_sizes=[]), ctx, features)

    def step_sizes(self, net: FunctionalModel, ctx: TrainContext, features: bool = False) -> Tensor:
        """`inner_lr` for the evaluation's trajectory count (as the released code fine-tuned its baselines)."""
        return torch.tensor([[self.config["eval_trajectories"], self.config["inner_lr"]]], dtype=torch.float64)

    def _train(self, net: FunctionalModel, adaptation: Adaptation, ctx: TrainContext, features: bool) -> None:
        cfg = self.config
        if ctx.device.type != "cpu":
            raise UsageError(f"{self.suite.name} runs on the CPU (its rollouts are step-by-step and its policy small); "
                             "drop --device or use --device cpu")
        start = 0
        if (checkpoint := ctx.load_checkpoint()) is not None:
            net.load_state_dict(checkpoint["model"])
            start = checkpoint["iteration"] + 1
        for it in ctx.iterations(start, cfg["meta_iterations"]):
            params = {k: p.detach() for k, p in net.params.items()}
            loss, kl, returns = self.objective(net, params, adaptation, ctx.generator(it), features)
            new, info = trpo_step(params, loss, kl, self.trpo)
            with torch.no_grad():
                for name, p in net.params.items():
                    p.copy_(new[name])
            ctx.log(it, -returns)
            if ctx.checkpoint_due(it):
                ctx.save_checkpoint({"iteration": it, "model": net.state_dict()})

    def objective(self, net: FunctionalModel, params: Params, adaptation: Adaptation, generator: torch.Generator,
                  features: bool) -> tuple[Any, Any, float]:
        """Sample one meta-batch and return TRPO's (surrogate loss, mean KL) as functions of the shared parameters,
        and the mean return of the adapted policies' paths."""
        cfg = self.config
        tasks = self.suite.sample_tasks(cfg["meta_batch"], generator)
        extra = {"task_features": tasks} if features else {}
        lrs, n = list(adaptation.step_sizes), len(tasks)

        def adapted(p: Params, data: tuple[Tensor, Tensor] | None, first_order: bool) -> Params:
            shared = batched(p, n) | extra
            if data is None:
                return shared
            return vmap(lambda q, x, y: inner_loop(net.loss, q, x, y, lrs, adaptation.adapt, first_order))(
                shared, *data)

        support = None
        paths = self.suite.rollout(net.forward, batched(params, n) | extra, tasks, cfg["trajectories"], generator)
        if lrs:
            support = support_of(paths, cfg["gamma"])
            with torch.no_grad():
                sampling = adapted(params, support, True)  # the same values as second order, no graph
            paths = self.suite.rollout(net.forward, sampling, tasks, cfg["trajectories"], generator)
        else:
            sampling = adapted(params, None, True)
        adv, mask = advantages(paths, cfg["gamma"]), paths.mask
        outputs = vmap(net.forward)
        with torch.no_grad():
            old = outputs(sampling, paths.observations)
        old_log_prob = gaussian_log_prob(old, paths.actions)
        steps = mask.sum((-2, -1))

        def loss(p: Params) -> Tensor:
            new = outputs(adapted(p, support, adaptation.first_order), paths.observations)
            ratio = torch.exp(gaussian_log_prob(new, paths.actions) - old_log_prob)
            return -((ratio * adv * mask).sum((-2, -1)) / steps).mean()

        def kl(p: Params) -> Tensor:
            new = outputs(adapted(p, support, adaptation.first_order), paths.observations)
            return ((gaussian_kl(old, new) * mask).sum((-2, -1)) / steps).mean()

        return loss, kl, paths.undiscounted_return().mean().item()

