"""The outer loop of the RL suites (MAML's meta-RL, after cbfinn/maml_rl's MAML-TRPO): a `harness.training.MetaTrainer`.

One meta-iteration, for a batch of `meta_batch` tasks drawn by the suite:
1. roll out the current policy, `trajectories` paths per task, and fit each task's baseline (the support set);
2. take the learner's inner steps (REINFORCE, the suite's loss) on those paths, and roll out the adapted policies;
3. one TRPO step on the likelihood-ratio surrogate of the adapted policies' paths, with the mean KL of the adapted
   policies bounded by `max_kl`; both are functions of the initial parameters through the inner steps (second
   order, or first order when the learner says so), so TRPO's Hessian-vector products differentiate through them.
Without inner steps (the pretrain and oracle baselines) this is plain TRPO on the policy over randomly drawn tasks.
The model kept is the iterate whose training paths had the best mean return (`keep_best`, paper appendix A.2).
"""
from __future__ import annotations

import copy
import math
from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import Tensor
from torch.func import vmap

from harness.errors import UsageError
from harness.functional import inner_loop
from harness.models import FunctionalModel
from harness.protocols import Key, Params, TrainContext
from harness.training import Adaptation
from plugins.rl.evaluation import STEP_SIZES, validation_returns
from plugins.rl.policy_gradient import RLSuite, advantages, gaussian_kl, gaussian_log_prob, split, support_of
from plugins.rl.trpo import TRPOConfig, flatten_params, trpo_step, unflatten_params

CURVE = ("iteration", "return", "backtracks", "kl")
"""The columns of the detail `training_curve`, one entry per meta-iteration: the mean return of the (adapted)
policies' training paths before the step, and TRPO's step: backtracks (-1: rejected) and mean KL after (None when
rejected)."""


KEYS: Mapping[str, Key] = {
    "trajectories": Key(int, "paths per task and step in meta-training", low=1),
    "eval_trajectories": Key(int, "paths per task and step at test time and in step-size tuning", low=1),
    "gamma": Key(float, "discount of returns", above=0, high=1),
    "max_kl": Key(float, "TRPO's bound on the mean KL of a step", above=0),
    "cg_iters": Key(int, "conjugate-gradient iterations of a TRPO step", low=1),
    "cg_damping": Key(float, "damping added to the KL's curvature", above=0),
    "cg_subsample": Key(float, "fraction of the meta-batch's tasks the KL's curvature is measured on", above=0, high=1),
    "backtrack_ratio": Key(float, "factor of each backtracking step of the line search", above=0, below=1),
    "max_backtracks": Key(int, "backtracking steps of the line search before a step is rejected", low=1),
    "keep_best": Key(bool, "keep the iterate with the best training return instead of the last"),
}
"""The config keys of an RL suite that `TRPOTrainer` and the RL evaluation read (a suite's `keys` include them)."""


def batched(params: Params, n: int) -> Params:
    """Shared parameters repeated for n tasks (a view)."""
    return {k: v.expand(n, *v.shape) for k, v in params.items()}


class TRPOTrainer:
    """`MetaTrainer` of an `RLSuite`: config keys meta_iterations, meta_batch, trajectories, gamma and TRPO's
    max_kl, cg_iters, cg_damping, cg_subsample, backtrack_ratio, max_backtracks; fine-tuning step sizes tuned on
    validation tasks. With `keep_best` the trained model is the iterate with the best mean return of its (adapted)
    policies' training paths, as the paper's appendix A.2 ("the model with the best average return during training
    was used for evaluation"); otherwise the last one. Either way the best iterate is recorded
    (`best_training_return`), and so is every iteration's return and TRPO step (`training_curve`, see `CURVE`)."""

    def __init__(self, suite: RLSuite, config: Mapping[str, Any]) -> None:
        self.suite, self.config = suite, config
        self.trpo = TRPOConfig(max_kl=config["max_kl"], cg_iters=config["cg_iters"], damping=config["cg_damping"],
                               backtrack_ratio=config["backtrack_ratio"], max_backtracks=config["max_backtracks"])

    def meta_train(self, net: FunctionalModel, adaptation: Adaptation, ctx: TrainContext) -> None:
        self._train(net, adaptation, ctx, features=False)

    def train(self, net: FunctionalModel, ctx: TrainContext, features: bool = False) -> None:
        self._train(net, Adaptation(step_sizes=[]), ctx, features)

    def step_sizes(self, net: FunctionalModel, ctx: TrainContext, features: bool = False) -> Tensor:
        """The step size of `STEP_SIZES` with the best mean return on validation tasks after the test's steps
        (every candidate's return recorded as `step_size_validation`), for the test's number of paths; a progress
        bar ("tune step size") counts the candidates."""
        paths = self.config["eval_trajectories"]
        grid = (STEP_SIZES[i] for i in ctx.iterations(0, len(STEP_SIZES), "tune step size"))
        returns = validation_returns(self.suite, net, self.config, features, grid)
        ctx.record("step_size_validation", {str(paths): {str(lr): r for lr, r in returns.items()}})
        return torch.tensor([[paths, max(returns, key=returns.__getitem__)]], dtype=torch.float64)

    def _train(self, net: FunctionalModel, adaptation: Adaptation, ctx: TrainContext, features: bool) -> None:
        cfg = self.config
        if ctx.device.type != "cpu":
            raise UsageError(f"{self.suite.name} runs on the CPU (its rollouts are step-by-step and its policy small); "
                             "drop --device or use --device cpu")
        start, best = 0, {"return": -math.inf, "iteration": -1, "model": copy.deepcopy(net.state_dict())}
        curve: dict[str, list] = {key: [] for key in CURVE}
        if (checkpoint := ctx.load_checkpoint()) is not None:
            net.load_state_dict(checkpoint["model"])
            start, best = checkpoint["iteration"] + 1, checkpoint.get("best", best)
            curve = checkpoint.get("curve", curve)  # a checkpoint from before the curve: it starts here
        for it in ctx.iterations(start, cfg["meta_iterations"]):
            params = {k: p.detach() for k, p in net.params.items()}
            loss, kl, fvp, returns = self.objective(net, params, adaptation, ctx.generator(it), features)
            if returns > best["return"]:  # `returns` is the return of `params`, the policy before this step
                best = {"return": returns, "iteration": it, "model": copy.deepcopy(net.state_dict())}
            new, info = trpo_step(params, loss, kl, self.trpo, fvp)
            with torch.no_grad():
                for name, p in net.params.items():
                    p.copy_(new[name])
            ctx.log(it, -returns)
            for key, value in zip(CURVE, (it, returns, info["backtracks"], info["kl_after"])):
                curve[key].append(None if isinstance(value, float) and math.isnan(value) else value)
            if ctx.checkpoint_due(it):
                ctx.save_checkpoint({"iteration": it, "model": net.state_dict(), "best": best, "curve": curve})
        if cfg["keep_best"] and best["iteration"] >= 0:
            net.load_state_dict(best["model"])
        ctx.record("best_training_return", {"iteration": best["iteration"], "return": best["return"],
                                            "kept": bool(cfg["keep_best"])})
        ctx.record("training_curve", curve)

    def objective(self, net: FunctionalModel, params: Params, adaptation: Adaptation, generator: torch.Generator,
                  features: bool) -> tuple[Any, Any, Callable[[Tensor], Tensor], float]:
        """Sample one meta-batch and return TRPO's surrogate loss and mean KL as functions of the shared parameters,
        the KL's Hessian-vector product at them (`kl_fisher_product`) on the paths of the first `cg_subsample`
        fraction of the tasks (the tasks are i.i.d.: a random subset, as TRPO's subsampled Fisher products), and the
        mean return of the adapted policies' paths."""
        cfg = self.config
        tasks = self.suite.sample_tasks(cfg["meta_batch"], generator)
        extra = {"task_features": tasks} if features else {}
        lrs, n = list(adaptation.step_sizes), len(tasks)

        def adapted(p: Params, first_order: bool, k: int = n) -> Params:
            """The policies of the first k tasks after the inner steps (none: the shared policy)."""
            shared = batched(p, k) | {name: t[:k] for name, t in extra.items()}
            if support is None:
                return shared
            return vmap(lambda q, x, y: inner_loop(net.loss, q, x, y, lrs, adaptation.adapt, first_order))(
                shared, *(t[:k] for t in support))

        support = None
        sampling = adapted(params, True)
        paths = self.suite.rollout(net.forward, sampling, tasks, cfg["trajectories"], generator)
        if lrs:
            support = support_of(paths, cfg["gamma"])
            with torch.no_grad():
                sampling = adapted(params, True)  # the same values as second order, no graph
            paths = self.suite.rollout(net.forward, sampling, tasks, cfg["trajectories"], generator)
        adv, mask = advantages(paths, cfg["gamma"]), paths.mask
        steps = mask.sum((-2, -1))

        last: dict[str, Any] = {}

        def outputs_of(p: Params, k: int = n) -> Tensor:
            """The adapted policies' outputs on their paths, first k tasks; without grad, the last result is reused
            for the same `p` (TRPO's line search evaluates the loss and then the KL of one candidate)."""
            if k == n and not torch.is_grad_enabled() and last.get("params") is p:
                return last["outputs"]
            out = vmap(net.forward)(adapted(p, adaptation.first_order, k), paths.observations[:k])
            if k == n and not torch.is_grad_enabled():
                last.update(params=p, outputs=out)
            return out

        with torch.no_grad():
            old = vmap(net.forward)(sampling, paths.observations)
        old_log_prob = gaussian_log_prob(old, paths.actions)

        def loss(p: Params) -> Tensor:
            ratio = torch.exp(gaussian_log_prob(outputs_of(p), paths.actions) - old_log_prob)
            return -((ratio * adv * mask).sum((-2, -1)) / steps).mean()

        def kl(p: Params) -> Tensor:
            return ((gaussian_kl(old, outputs_of(p)) * mask).sum((-2, -1)) / steps).mean()

        k = max(1, round(cfg["cg_subsample"] * n))
        curvature = kl_fisher_product(lambda p: outputs_of(p, k), params, old[:k], mask[:k])
        return loss, kl, curvature, paths.undiscounted_return().mean().item()


def kl_fisher_product(outputs_of: Callable[[Params], Tensor], params: Params, old: Tensor,
                      mask: Tensor) -> Callable[[Tensor], Tensor]:
    """v -> H v on flat vectors, H the Hessian at `params` of the mean over tasks of the masked mean KL(old || new)
    of diagonal Gaussian policies whose outputs [T, N, H, 2 act] are `outputs_of(p)` (`old` = those at `params`).

    Computed as J^T M J v, exact at `params`: there the KL's gradient in the outputs vanishes, so its Hessian is the
    outputs' Jacobian J (through the inner steps) around M, the KL's Hessian in the outputs (1 / sigma^2 for a mean,
    2 for a log-std, weighted as the average weighs each step). J v is the gradient in u of (J^T u) . v, with J^T u
    built once with its graph (the "double backward" trick): each product is then two backward passes through
    stored graphs, second order through the inner steps, where differentiating the KL's gradient would be third
    order. 1.4-2x faster per product than recomputing the outputs in forward mode (`torch.func.jvp`), same values:
    `benchmarks/test_trpo_products.py` (cheetah-direction, paper settings, one thread).
    """
    flat = flatten_params(params).requires_grad_()
    outputs = outputs_of(unflatten_params(flat, params))
    log_std = split(old)[1]
    weight = (mask / mask.sum((-2, -1), keepdim=True) / mask.shape[0])[..., None]
    curvature = torch.cat([torch.exp(-2 * log_std), torch.full_like(log_std, 2.0)], dim=-1) * weight
    u = torch.zeros_like(outputs, requires_grad=True)
    (transposed,) = torch.autograd.grad(outputs, flat, grad_outputs=u, create_graph=True)  # J^T u, linear in u

    def fvp(v: Tensor) -> Tensor:
        (jv,) = torch.autograd.grad(transposed, u, grad_outputs=v, retain_graph=True)
        (hv,) = torch.autograd.grad(outputs, flat, grad_outputs=curvature * jv, retain_graph=True)
        return hv

    return fvp

