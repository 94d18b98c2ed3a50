"""Fine-tuning at test time with a step size tuned on validation tasks: what the non-meta-learned baselines do.

Tuning is part of meta-training: for each shot count of the test protocol, every step size of a grid fine-tunes the
trained model on frozen validation tasks (split "val", never the test tasks), and the one with the best validation
score (the suite's metric, averaged over steps 1..`eval_steps`) is kept with the trained state.
"""
from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import torch
from torch import Tensor
from torch.func import vmap

from harness.evaluation import frozen_tasks
from harness.functional import LossFn, adapt_batch
from harness.protocols import Forward, Params, Suite

CHUNK_INPUT_VALUES = 2**23
"""Validation tasks are fine-tuned a chunk at a time, as many as hold at most this many input values (support and
query): 4 MiniImagenet 5-way 1-shot tasks (about 1 GB of activations), every Omniglot or sinusoid task at once."""

STEP_SIZES = (0.0, 1e-5, 3e-5, 1e-4, 3e-4, 1e-3, 2e-3, 5e-3, 1e-2, 2e-2, 5e-2, 0.1, 0.2, 0.5)
"""The default grid of step sizes to tune over; 0 (no fine-tuning) wins where every step only hurts."""


def validation_error(
    suite: Suite, loss_fn: LossFn, forward: Forward, params: Params, support_x: Tensor, support_y: Tensor,
    query_x: Tensor, query_y: Tensor, lr: float, steps: int, adapt: Sequence[str] | None = None,
    per_task: Params | None = None,
) -> float:
    """Mean score over tasks and steps 1..`steps` of fine-tuning with step size `lr` (the worst value, +inf or -inf by
    the suite's direction, if it diverges). Tasks are fine-tuned a chunk at a time (`CHUNK_INPUT_VALUES`)."""
    tasks = len(query_x)
    chunk = max(1, CHUNK_INPUT_VALUES // (support_x[0].numel() + query_x[0].numel()))
    totals = [0.0] * steps
    for start in range(0, tasks, chunk):
        part = slice(start, start + chunk)
        for step, adapted in enumerate(adapt_batch(
                loss_fn, params, support_x[part], support_y[part], [lr] * steps, adapt=adapt,
                per_task=None if per_task is None else {k: v[part] for k, v in per_task.items()})):
            if step:
                with torch.no_grad():
                    totals[step - 1] += suite.score(vmap(forward)(adapted, query_x[part]), query_y[part]).sum().item()
    mean = sum(totals) / (tasks * steps)
    return mean if math.isfinite(mean) else (math.inf if suite.lower_is_better else -math.inf)


def tune_step_sizes(
    suite: Suite, config: Mapping, loss_fn: LossFn, forward: Forward, params: Params,
    adapt: Sequence[str] | None = None, features: bool = False, grid: Sequence[float] = STEP_SIZES,
) -> dict[int, dict[float, float]]:
    """For each shot count of `config["eval_shots"]`: the validation score of every step size of `grid`.

    With `features`, each task's features are passed to the model as the per-task parameter "task_features"."""
    shots = list(config["eval_shots"])
    device = next(iter(params.values())).device
    tasks = frozen_tasks(suite, "val", config["val_tasks"], max(shots), config["eval_query"]).to(device)
    per_task = {"task_features": tasks.features} if features else None
    return {k: {lr: validation_error(suite, loss_fn, forward, params, (support := tasks.shots(k)).support_x,
                                     support.support_y, tasks.query_x, tasks.query_y, lr, config["eval_steps"], adapt,
                                     per_task)
                for lr in grid}
            for k in shots}


def best_step_sizes(scores: Mapping[int, Mapping[float, float]], lower_is_better: bool) -> Tensor:
    """[[shots, step size], ...] of the best validation score per shot count: a plain tensor for a state_dict."""
    best = min if lower_is_better else max
    return torch.tensor([[k, best(by_lr, key=by_lr.get)] for k, by_lr in scores.items()], dtype=torch.float64)


def step_size_for(table: Tensor, shots: int) -> float:
    """The tuned step size for `shots` from a `best_step_sizes` table."""
    for k, lr in table.tolist():
        if int(k) == shots:
            return lr
    raise ValueError(f"no step size tuned for {shots} shots (tuned for {[int(k) for k in table[:, 0].tolist()]})")
