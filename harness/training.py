"""The outer loop shared by gradient-trained learners: Adam on a `FunctionalModel`, resumable from checkpoints."""
from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from harness.models import FunctionalModel
from harness.protocols import Params, TrainContext


def train_adam(net: FunctionalModel, ctx: TrainContext, iterations: int, lr: float,
               gradient: Callable[[Params, int], tuple[Tensor, Params]]) -> None:
    """`iterations` Adam steps on `net.params`; `gradient(params, iteration)` gives (loss, gradient by name) at the
    current parameters (plain tensors). Resumes from the context's last checkpoint and saves one when due."""
    optimizer = torch.optim.Adam(net.params.values(), lr=lr)
    start = 0
    if (checkpoint := ctx.load_checkpoint()) is not None:
        net.load_state_dict(checkpoint["model"])
        optimizer.load_state_dict(checkpoint["optimizer"])
        start = checkpoint["iteration"] + 1
    for it in ctx.iterations(start, iterations):
        loss, grads = gradient({k: p.detach() for k, p in net.params.items()}, it)
        for name, p in net.params.items():
            p.grad = grads[name]
        optimizer.step()
        ctx.log(it, loss.item())
        if ctx.checkpoint_due(it):
            ctx.save_checkpoint({"iteration": it, "model": net.state_dict(), "optimizer": optimizer.state_dict()})
