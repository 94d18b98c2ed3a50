"""Sinusoid regression (paper section 5.1): y = A sin(x - phase), A ~ U[0.1, 5], phase ~ U[0, pi], x ~ U[-5, 5];
an MLP 1-40-40-1 with ReLU; MSE. Meta-training uses K = 10 support and 10 query points per task; the test protocol
scores 600 frozen tasks at K = 5, 10, 20 after 0..10 steps, on 100 held-out points each."""
from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor, nn

from harness import hookimpl
from harness.evaluation import FewShotEvaluator
from harness.protocols import SupervisedSuite, TaskBatch

PAPER = {
    "meta_iterations": 70_000, "meta_batch": 25, "train_shots": 10, "train_query": 10,
    "inner_lr": 0.01, "inner_steps": 1, "meta_lr": 1e-3,
    "eval_tasks": 600, "eval_shots": [5, 10, 20], "eval_steps": 10, "eval_query": 100, "val_tasks": 100,
    "compile": True,
}


class Sinusoid(SupervisedSuite):
    """Sinusoid regression of the paper (section 5.1): amplitude and phase vary, MLP 1-40-40-1, MSE."""

    name = "sinusoid"
    kind = "supervised"
    problem = "regression"
    metric = "mse"
    lower_is_better = True
    pooled_classes = 0
    feature_names = ("amplitude", "phase")
    profiles = {
        "smoke": {**PAPER, "meta_iterations": 20, "eval_tasks": 20, "eval_steps": 2, "val_tasks": 10, "compile": False},
        "quick": {**PAPER, "meta_iterations": 8_000, "compile": False},
        "paper": PAPER,
    }
    amplitude = (0.1, 5.0)
    phase = (0.0, math.pi)
    x_range = (-5.0, 5.0)

    def __init__(self, config: Mapping[str, Any]) -> None:
        self.config = config

    def make_model(self, extra_inputs: int = 0, outputs: int | None = None) -> nn.Module:
        return nn.Sequential(nn.Linear(1 + extra_inputs, 40), nn.ReLU(), nn.Linear(40, 40), nn.ReLU(),
                             nn.Linear(40, outputs or 1))

    def append_inputs(self, x: Tensor, extra: Tensor) -> Tensor:
        return torch.cat([x, extra.expand(*x.shape[:-1], extra.shape[-1])], dim=-1)

    def loss(self, outputs: Tensor, targets: Tensor) -> Tensor:
        return nn.functional.mse_loss(outputs, targets)

    def score(self, outputs: Tensor, targets: Tensor) -> Tensor:
        return ((outputs - targets) ** 2).flatten(1).mean(1)

    def sample(self, split: str, n_tasks: int, generator: torch.Generator, shots: int, query: int) -> TaskBatch:
        """The splits share one task distribution (it is continuous); they differ only in their generators."""
        uniform = lambda lo_hi, *shape: torch.rand(*shape, generator=generator) * (lo_hi[1] - lo_hi[0]) + lo_hi[0]
        amplitude = uniform(self.amplitude, n_tasks, 1, 1)
        phase = uniform(self.phase, n_tasks, 1, 1)
        x = uniform(self.x_range, n_tasks, shots + query, 1)
        y = amplitude * torch.sin(x - phase)
        features = torch.cat([amplitude, phase], dim=2).squeeze(1)
        return TaskBatch(x[:, :shots], y[:, :shots], x[:, shots:], y[:, shots:], features)

    def evaluator(self, device: torch.device) -> FewShotEvaluator:
        return FewShotEvaluator.from_config(self.config, device)


@hookimpl
def harness_suites() -> list[type]:
    return [Sinusoid]
