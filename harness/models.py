"""A suite's model as functions of one parameter dict, with optional extra inputs taken from that dict.

Extra inputs are per-task vectors that the suite appends to each input (`Suite.append_inputs`: as features for
vectors, as channels for images): a learned context vector `context` (adapted in the inner loop), or each task's true
parameters `task_features` (an oracle's side information, never adapted).
"""
from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import Tensor, nn
from torch.func import functional_call

from harness.protocols import Params, Suite

EXTRA_INPUTS = ("context", "task_features")
"""Parameter names that are appended to the model's input, in this order, when present."""


class FunctionalModel:
    """`suite.make_model(extra_inputs=...)` plus an optional learned context vector, as pure functions of params.

    `params` are the trainable tensors (the model's parameters and, with `context_size`, "context" initialised to
    zeros, of the shape `suite.context_shape(context_size)` where the suite defines it, else a vector); `weights`
    names the model's own parameters (what fine-tuning adapts); `outputs` is passed to `Suite.make_model` (e.g. a
    classifier over all training classes)."""

    def __init__(self, suite: Suite, device: torch.device | str, context_size: int = 0, features: int = 0,
                 outputs: int | None = None) -> None:
        self.suite = suite
        self.module: nn.Module = suite.make_model(extra_inputs=context_size + features, outputs=outputs).to(device)
        self.weights = [name for name, _ in self.module.named_parameters()]
        self.params: Params = dict(self.module.named_parameters())
        if context_size:
            self.params["context"] = torch.zeros(suite.context_shape(context_size), device=device, requires_grad=True)

    def forward(self, params: Params, x: Tensor) -> Tensor:
        """One task's outputs for inputs `x`, with any extra inputs of `params` appended."""
        for name in EXTRA_INPUTS:
            if name in params:
                x = self.suite.append_inputs(x, params[name])
        return functional_call(self.module, {k: params[k] for k in self.weights}, (x,))

    def loss(self, params: Params, x: Tensor, y: Tensor) -> Tensor:
        """One task's training loss."""
        return self.suite.loss(self.forward(params, x), y)

    def state_dict(self) -> dict[str, Tensor]:
        """The module's state_dict plus the context vector, if any: plain tensors."""
        extra = {"context": self.params["context"].detach().clone()} if "context" in self.params else {}
        return {**self.module.state_dict(), **extra}

    def load_state_dict(self, state: Mapping[str, Tensor]) -> None:
        """Load what `state_dict` gave (other entries of `state` are ignored)."""
        self.module.load_state_dict({k: v for k, v in state.items() if k in self.module.state_dict()})
        if "context" in self.params:
            with torch.no_grad():
                self.params["context"].copy_(state["context"])

    def load_body(self, source: FunctionalModel) -> list[str]:
        """Copy every weight of `source` whose shape matches; zero the others (the output layer, where `source` was
        built with other `outputs`: a fresh head). Returns the names of the zeroed weights."""
        fresh = []
        with torch.no_grad():
            for name, param in self.module.named_parameters():
                theirs = source.params.get(name)
                if theirs is not None and theirs.shape == param.shape:
                    param.copy_(theirs)
                else:
                    param.zero_()
                    fresh.append(name)
        return fresh
