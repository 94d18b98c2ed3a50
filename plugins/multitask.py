"""Parameter-averaged multi-task baselines (paper Appendix C.1): many regressors, each trained from its own random
initialisation on plenty of data from one task, averaged in parameter space, then fine-tuned with a tuned step size.

Three variants differ in how each regressor is regularised while it trains:
- `multitask-noreg`: not at all;
- `multitask-l2`: l2 weight decay, lam * |theta|^2;
- `multitask-mean`: l2 towards the mean of the regressors trained so far, lam * |theta - mean|^2 (the first chunk,
  having no predecessors, is unregularised).

Regressors train vectorised (one vmap'd model, Adam on stacked parameters: the per-regressor losses are summed, so
each regressor follows its own gradient). The running mean needs an order, as the paper's sequential training had:
there the regressors train in chunks of doubling size (1, 2, 4, ...), each chunk pulled towards the mean of all the
chunks before it, so the first regressor's basin anchors the rest as it did in the paper's sequence. The strength lam
is "as high as possible without hurting each regressor's own fit": a pilot of `multitask_pilot` regressors per
candidate picks the largest lam whose median own-task error stays within `multitask_fit_tolerance` x the
unregularised pilot's (or below `multitask_fit`); the pilot's errors are recorded with the run.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor
from torch.func import functional_call, stack_module_state, vmap

from harness import hookimpl
from harness.models import FunctionalModel
from harness.protocols import Key, Params, Suite, TrainContext
from plugins.pretrain import Pretrain

STRENGTHS = (1e-6, 1e-5, 1e-4, 1e-3, 1e-2, 1e-1)
"""Candidate regularisation strengths for the pilot."""


class MultiTaskNoReg(Pretrain):
    name = "multitask-noreg"
    description = "parameter averaging of separately trained regressors, no regularisation (paper C.1)"
    regulariser = "none"
    # 3,000 Adam steps (cosine-decayed from 3e-3) on minibatches of 25 of 1,000 points fit 86% of the regressors
    # below the paper's 0.02 (mean 0.009, measured on 100 regressors)
    defaults: Mapping[str, Any] = {
        "multitask_models": 500, "multitask_iterations": 3000, "multitask_data": 1000,
        "multitask_batch": 25, "multitask_lr": 3e-3, "multitask_pilot": 10, "multitask_fit": 0.02,
        "multitask_fit_tolerance": 1.25,
    }
    profile_defaults: Mapping[str, Mapping[str, Any]] = {
        "smoke": {"multitask_models": 4, "multitask_iterations": 5, "multitask_data": 20, "multitask_batch": 10,
                  "multitask_pilot": 2},
        "quick": {"multitask_models": 100, "multitask_iterations": 1000, "multitask_pilot": 5},
    }
    keys: Mapping[str, Key] = {
        "multitask_models": Key(int, "regressors trained and averaged", low=1),
        "multitask_iterations": Key(int, "Adam steps of each regressor", low=1),
        "multitask_data": Key(int, "training points of each regressor's task", low=1),
        "multitask_batch": Key(int, "points per Adam step", low=1),
        "multitask_lr": Key(float, "initial Adam step size of the regressors (cosine-decayed)", above=0),
        "multitask_pilot": Key(int, "pilot regressors per candidate regularisation strength", low=1),
        "multitask_fit": Key(float, "a pilot's median own-task error always accepted", above=0),
        "multitask_fit_tolerance": Key(float, "factor over the unregularised pilot's median error still accepted",
                                       low=1),
    }

    @classmethod
    def applies_to(cls, suite: type[Suite]) -> bool:
        # regression only: averaging the parameters of per-task classifiers mixes unrelated label assignments
        # (the paper ran this baseline on the sinusoid alone)
        return suite.kind == "supervised" and suite.problem == "regression"

    def train(self, suite: Suite, net: FunctionalModel, ctx: TrainContext) -> None:
        cfg = self.config
        checkpoint = ctx.load_checkpoint() or {}
        strength = checkpoint.get("strength")
        if strength is None:
            strength = self.choose_strength(suite, ctx)
        ctx.record("regularisation_strength", strength)
        total: Params = checkpoint.get("sum", {k: torch.zeros_like(v) for k, v in net.module.state_dict().items()})
        fits: list[float] = checkpoint.get("fits", [])
        sizes = self.chunk_sizes(cfg["multitask_models"])
        for chunk in ctx.iterations(len(fits), len(sizes), desc="regressor chunks"):
            trained_so_far = sum(sizes[:chunk])
            mean = {k: v / trained_so_far for k, v in total.items()} if trained_so_far else None
            lam = 0.0 if (self.regulariser == "mean" and mean is None) else strength
            trained, fit = self.fit_regressors(suite, ctx, ("chunk", chunk), sizes[chunk], [lam] * sizes[chunk],
                                               mean if self.regulariser == "mean" else None)
            total = {k: total[k] + trained[k].sum(0) for k in total}
            fits.append(fit.median().item())
            ctx.log(chunk, fits[-1])
            ctx.save_checkpoint({"strength": strength, "sum": total, "fits": fits})
        ctx.record("regressor_median_fit_by_chunk", [{"regressors": n, "median_fit": f} for n, f in zip(sizes, fits)])
        net.load_state_dict({k: v / cfg["multitask_models"] for k, v in total.items()})

    def chunk_sizes(self, models: int) -> list[int]:
        """All regressors at once, except for the running mean: chunks of 1, 2, 4, ... (the last one cut to fit)."""
        if self.regulariser != "mean":
            return [models]
        sizes: list[int] = []
        while sum(sizes) < models:
            sizes.append(min(2 ** len(sizes), models - sum(sizes)))
        return sizes

    def choose_strength(self, suite: Suite, ctx: TrainContext) -> float:
        """The largest candidate strength whose pilot regressors still fit their own tasks; 0 without regulariser."""
        if self.regulariser == "none":
            return 0.0
        n = self.config["multitask_pilot"]
        free, free_fit = self.fit_regressors(suite, ctx, ("pilot", "free"), n, [0.0] * n, None)
        target = {k: v[0] for k, v in free.items()} if self.regulariser == "mean" else None  # as for the 2nd regressor
        lams = [lam for lam in STRENGTHS for _ in range(n)]
        _, fit = self.fit_regressors(suite, ctx, ("pilot", "grid"), len(lams), lams, target)
        fits = dict(zip(STRENGTHS, fit.view(len(STRENGTHS), n).median(1).values.tolist()))
        limit = max(self.config["multitask_fit"], self.config["multitask_fit_tolerance"] * free_fit.median().item())
        ok = [lam for lam, f in fits.items() if f <= limit]
        chosen = max(ok) if ok else 0.0
        ctx.record("regularisation_pilot", {"unregularised_median_fit": free_fit.median().item(), "limit": limit,
                                            "median_fit_by_strength": {str(k): v for k, v in fits.items()},
                                            "chosen": chosen})
        return chosen

    def fit_regressors(self, suite: Suite, ctx: TrainContext, identity: tuple, n: int, lams: Sequence[float],
                       target: Params | None) -> tuple[Params, Tensor]:
        """Train `n` fresh regressors on `n` fresh tasks (one each) with per-regressor strengths `lams`, towards
        `target` (zero when None); returns their stacked state and each one's error on held-out data of its task."""
        cfg = self.config
        torch.manual_seed(ctx.generator(0, f"init-{identity}").initial_seed())
        modules = [suite.make_model().to(ctx.device) for _ in range(n)]
        params, buffers = stack_module_state(modules)
        template = modules[0]
        tasks = suite.sample("train", n, ctx.generator(0, f"tasks-{identity}"), cfg["multitask_data"],
                             cfg["eval_query"]).to(ctx.device)
        lam = torch.tensor(lams, device=ctx.device)
        optimizer = torch.optim.Adam(params.values(), lr=cfg["multitask_lr"])
        schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, cfg["multitask_iterations"])
        draws = ctx.generator(0, f"batches-{identity}")

        def task_loss(p: Params, b: Params, x: Tensor, y: Tensor) -> Tensor:
            return suite.loss(functional_call(template, (p, b), (x,)), y)

        losses = vmap(task_loss)
        for _ in range(cfg["multitask_iterations"]):
            idx = torch.randint(cfg["multitask_data"], (n, cfg["multitask_batch"]), generator=draws).to(ctx.device)
            x = tasks.support_x.gather(1, idx.unsqueeze(-1).expand(-1, -1, tasks.support_x.shape[-1]))
            y = tasks.support_y.gather(1, idx.unsqueeze(-1).expand(-1, -1, tasks.support_y.shape[-1]))
            centre = target or {k: 0.0 for k in params}
            penalty = sum(((p - centre[k]) ** 2).flatten(1).sum(1) for k, p in params.items())
            loss = (losses(params, buffers, x, y) + lam * penalty).sum()
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            schedule.step()
        with torch.no_grad():
            fit = suite.score(vmap(lambda p, b, x: functional_call(template, (p, b), (x,)))(params, buffers,
                                                                                            tasks.query_x),
                              tasks.query_y)
        return {k: v.detach() for k, v in params.items()}, fit


class MultiTaskL2(MultiTaskNoReg):
    name = "multitask-l2"
    description = "parameter averaging of regressors trained with l2 weight decay (paper C.1)"
    regulariser = "l2"


class MultiTaskMean(MultiTaskNoReg):
    name = "multitask-mean"
    description = "parameter averaging of regressors regularised towards the running mean (paper C.1)"
    regulariser = "mean"


@hookimpl
def harness_learners() -> list[type]:
    return [MultiTaskNoReg, MultiTaskL2, MultiTaskMean]
