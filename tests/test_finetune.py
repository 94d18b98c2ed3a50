"""Fine-tuning's step-size tuning scores validation tasks a chunk at a time: the same score as all tasks at once."""
import math
from types import SimpleNamespace

import pytest
import torch
from torch.func import functional_call

from harness import finetune
from harness.functional import task_loss


def regression(tasks: int = 7):
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(3, 8), torch.nn.ReLU(), torch.nn.Linear(8, 1))
    params = {k: p.detach() for k, p in model.named_parameters()}
    loss = task_loss(model, torch.nn.functional.mse_loss)
    forward = lambda p, x: functional_call(model, p, (x,))
    suite = SimpleNamespace(lower_is_better=True, score=lambda out, y: ((out - y) ** 2).mean((-2, -1)))
    data = [torch.randn(tasks, 5, 3), torch.randn(tasks, 5, 1), torch.randn(tasks, 9, 3), torch.randn(tasks, 9, 1)]
    return suite, loss, forward, params, data


@pytest.mark.parametrize("chunk_values", [1, 3 * (5 * 3 + 9 * 3), 10**6])  # 1 task, 3 tasks (7 = 3 + 3 + 1), all
def test_chunked_validation_scores_every_task_once_as_one_batch_does(monkeypatch, chunk_values):
    suite, loss, forward, params, (sx, sy, qx, qy) = regression()
    whole = []
    for step, adapted in enumerate(finetune.adapt_batch(loss, params, sx, sy, [0.1] * 3)):
        if step:
            whole.append(suite.score(torch.vmap(forward)(adapted, qx), qy).mean().item())
    monkeypatch.setattr(finetune, "CHUNK_INPUT_VALUES", chunk_values)
    assert finetune.validation_error(suite, loss, forward, params, sx, sy, qx, qy, 0.1, 3) == pytest.approx(
        sum(whole) / 3, rel=1e-6)


def test_a_diverging_step_size_scores_the_worst_value():
    suite, loss, forward, params, (sx, sy, qx, qy) = regression()
    assert finetune.validation_error(suite, loss, forward, params, sx, sy, qx, qy, 1e6, 5) == math.inf
