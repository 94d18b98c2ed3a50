"""Speed of one second-order MAML meta-iteration on the sinusoid (meta-batch 25, K = 10 support + 10 query, 1 step):
the harness's vectorised inner loop (eager and compiled) against a plain per-task torch.autograd.grad loop.

    python -m pytest benchmarks --benchmark-only --benchmark-group-by=group
"""
import time

import pytest
import torch
from torch import nn

from harness.functional import meta_gradient, task_loss
from harness.seeding import generator
from plugins.sinusoid import Sinusoid

META_BATCH, K, ALPHA = 25, 10, 0.01


@pytest.fixture(scope="module")
def setup():
    torch.set_num_threads(1)
    torch.manual_seed(0)
    suite = Sinusoid(Sinusoid.profiles["paper"])
    model = suite.make_model()
    tasks = suite.sample("train", META_BATCH, generator("bench"), K, K)
    data = (tasks.support_x, tasks.support_y, tasks.query_x, tasks.query_y)
    return model, task_loss(model, suite.loss), data


def autograd_loop(model: nn.Module, loss_fn, data) -> list[torch.Tensor]:
    """The textbook implementation: one task at a time, inner gradient with create_graph=True, then backward."""
    params = dict(model.named_parameters())
    total = 0.0
    for sx, sy, qx, qy in zip(*data):
        grads = torch.autograd.grad(loss_fn(params, sx, sy), list(params.values()), create_graph=True)
        adapted = {k: p - ALPHA * g for (k, p), g in zip(params.items(), grads)}
        total = total + loss_fn(adapted, qx, qy)
    return torch.autograd.grad(total / META_BATCH, list(params.values()))


def harness_step(model: nn.Module, loss_fn, compile: bool):
    """The harness's path: `meta_gradient` over all tasks under vmap (optionally compiled)."""
    step = meta_gradient(loss_fn, [ALPHA], vectorize="vmap", compile=compile)
    params = {k: p.detach() for k, p in model.named_parameters()}
    return lambda data: step(params, *data)


@pytest.mark.benchmark(group="sinusoid meta-iteration")
def test_autograd_loop(benchmark, setup):
    model, loss_fn, data = setup
    benchmark(autograd_loop, model, loss_fn, data)


@pytest.mark.benchmark(group="sinusoid meta-iteration")
def test_harness_vmap(benchmark, setup):
    model, loss_fn, data = setup
    benchmark(harness_step(model, loss_fn, compile=False), data)


@pytest.mark.benchmark(group="sinusoid meta-iteration")
def test_harness_vmap_compiled(benchmark, setup):
    model, loss_fn, data = setup
    step = harness_step(model, loss_fn, compile=True)
    step(data)  # compile outside the timing
    benchmark(step, data)


def median_ms(fn, *args, repeat: int = 200) -> float:
    for _ in range(10):
        fn(*args)
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn(*args)
        times.append(time.perf_counter() - start)
    return sorted(times)[repeat // 2] * 1e3


def test_vectorised_is_at_least_5x_faster_than_the_autograd_loop(setup, capsys):
    model, loss_fn, data = setup
    loop = median_ms(autograd_loop, model, loss_fn, data)
    eager = median_ms(harness_step(model, loss_fn, compile=False), data)
    compiled = median_ms(harness_step(model, loss_fn, compile=True), data)
    with capsys.disabled():
        print(f"\nsinusoid meta-iteration, median ms: autograd loop {loop:.2f}, harness vmap {eager:.2f} "
              f"({loop / eager:.1f}x), harness vmap compiled {compiled:.2f} ({loop / compiled:.1f}x)")
    assert loop / eager >= 5 and loop / compiled >= 5
