"""The inner loop's meta-gradients against a plain per-task torch.autograd.grad loop, in float64, for every model
of the built-in suites: the sinusoid MLP, and the Omniglot conv and fully connected nets with batch-statistics norm."""
import pytest
import torch
from torch import nn

from harness.decisions import fastest_meta_gradient
from harness.functional import (
    adapt_batch,
    meta_gradient,
    resolve_vectorize,
    sgd_step,
    step_sizes,
    task_loss,
)
from plugins.vision import conv_net, fc_net

TASKS, K = 6, 10


@pytest.fixture(params=["mlp", "conv", "fc"])
def problem(request):
    return make_problem(request.param)


def make_problem(kind, dtype=torch.double):
    """(loss function, parameters, (support x, support y, query x, query y)) of TASKS tasks for a `kind` model."""
    torch.manual_seed(0)
    if kind == "mlp":
        model = nn.Sequential(nn.Linear(1, 40), nn.ReLU(), nn.Linear(40, 40), nn.ReLU(), nn.Linear(40, 1)).to(dtype)
        x = torch.rand(TASKS, 2 * K, 1, dtype=dtype) * 10 - 5
        amplitude, phase = (torch.rand(TASKS, 1, 1, dtype=dtype) for _ in range(2))
        y, loss = 5 * amplitude * torch.sin(x - phase), nn.functional.mse_loss
    else:  # 5-way, 2 shots of 8x8 images
        model = (conv_net(1, 5, filters=8) if kind == "conv" else fc_net(64, 5, (16, 8))).to(dtype)
        x = torch.rand(TASKS, 2 * K, 1, 8, 8, dtype=dtype)
        y, loss = torch.arange(5).repeat(4).expand(TASKS, -1), nn.functional.cross_entropy
    params = {k: v.detach().clone() for k, v in model.named_parameters()}
    data = (x[:, :K], y[:, :K], x[:, K:], y[:, K:])
    return task_loss(model, loss), params, data


def reference(loss_fn, params, data, lrs, adapt=None, first_order=False):
    """Per task: inner steps with torch.autograd.grad(create_graph=not first_order), then the mean query loss."""
    leaves = {k: v.clone().requires_grad_() for k, v in params.items()}
    total = 0.0
    for sx, sy, qx, qy in zip(*data):
        p = dict(leaves)
        for lr in lrs:
            keys = list(p if adapt is None else adapt)
            grads = torch.autograd.grad(loss_fn(p, sx, sy), [p[k] for k in keys], create_graph=not first_order)
            p = {**p, **{k: p[k] - lr * g for k, g in zip(keys, grads)}}
        total = total + loss_fn(p, qx, qy)
    loss = total / len(data[0])
    return loss, dict(zip(leaves, torch.autograd.grad(loss, list(leaves.values()))))


def max_error(a, b):
    return max((a[k] - b[k]).abs().max().item() for k in a)


@pytest.mark.parametrize("vectorize", ["vmap", "loop"])
@pytest.mark.parametrize("steps", [1, 3])
def test_second_order_meta_gradient_equals_autograd_loop(problem, vectorize, steps):
    loss_fn, params, data = problem
    lrs = step_sizes(0.01, steps)
    loss, grads = meta_gradient(loss_fn, lrs, vectorize=vectorize)(params, *data)
    ref_loss, ref_grads = reference(loss_fn, params, data, lrs)
    assert torch.allclose(loss, ref_loss, atol=1e-10)
    assert max_error(grads, ref_grads) < 1e-5
    first_order = reference(loss_fn, params, data, lrs, first_order=True)[1]
    assert max_error(first_order, ref_grads) > 1e-4, "second-order terms must matter for this check to mean anything"


@pytest.mark.parametrize("vectorize", ["vmap", "loop"])
def test_first_order_gradient_is_the_query_gradient_at_adapted_parameters(problem, vectorize):
    loss_fn, params, data = problem
    _, grads = meta_gradient(loss_fn, [0.01], first_order=True, vectorize=vectorize)(params, *data)
    expected = {k: torch.zeros_like(v) for k, v in params.items()}
    for sx, sy, qx, qy in zip(*data):
        leaves = {k: v.clone().requires_grad_() for k, v in params.items()}
        g = torch.autograd.grad(loss_fn(leaves, sx, sy), list(leaves.values()))
        adapted = {k: (v - 0.01 * gk).detach().requires_grad_() for (k, v), gk in zip(leaves.items(), g)}
        for k, gq in zip(adapted, torch.autograd.grad(loss_fn(adapted, qx, qy), list(adapted.values()))):
            expected[k] += gq / TASKS
    assert max_error(grads, expected) < 1e-10


@pytest.mark.parametrize("vectorize", ["vmap", "loop"])
def test_adapting_a_subset_changes_only_that_subset(problem, vectorize):
    loss_fn, params, data = problem
    subset = list(params)[-2:]  # the output layer
    _, grads = meta_gradient(loss_fn, [0.1, 0.1], adapt=subset, vectorize=vectorize)(params, *data)
    _, ref_grads = reference(loss_fn, params, data, [0.1, 0.1], adapt=subset)
    assert max_error(grads, ref_grads) < 1e-5
    adapted = sgd_step(loss_fn, params, data[0][0], data[1][0], 0.1, adapt=subset)
    assert all(adapted[k] is params[k] for k in params if k not in subset)
    assert all(not torch.equal(adapted[k], params[k]) for k in subset)


def test_adapt_batch_vmap_and_loop_agree_with_sequential_steps(problem):
    loss_fn, params, data = problem
    lrs = step_sizes(0.01, 4)
    vmapped = list(adapt_batch(loss_fn, params, data[0], data[1], lrs, vectorize="vmap"))
    looped = list(adapt_batch(loss_fn, params, data[0], data[1], lrs, vectorize="loop"))
    assert len(vmapped) == len(looped) == 5
    for task in range(TASKS):
        p = params
        for step, lr in enumerate([None, *lrs]):
            if lr is not None:
                p = sgd_step(loss_fn, p, data[0][task], data[1][task], lr, first_order=True)
            for batched in (vmapped[step], looped[step]):
                assert max_error({k: v[task] for k, v in batched.items()}, p) < 1e-12


def test_step_sizes_and_vectorize_resolution():
    assert step_sizes(0.1, 3, later_lr=0.05) == [0.1, 0.05, 0.05]
    assert step_sizes(0.01, 0) == []
    assert resolve_vectorize("auto") == "vmap"
    assert resolve_vectorize("loop") == "loop"
    with pytest.raises(ValueError, match="vectorize"):
        resolve_vectorize("fast")


@pytest.mark.slow
def test_compiled_meta_gradient_equals_eager():
    loss_fn, params, data = make_problem("mlp", torch.float32)
    (eager_loss, eager), (compiled_loss, compiled) = (
        meta_gradient(loss_fn, [0.01], compile=flag)(params, *data) for flag in (False, True))
    assert abs(eager_loss.item() - compiled_loss.item()) < 1e-5
    assert max_error(eager, compiled) < 1e-4


def test_auto_times_both_strategies_once_and_keeps_the_faster(problem, tmp_path, monkeypatch):
    monkeypatch.setenv("HARNESS_CACHE", str(tmp_path))
    loss_fn, params, data = problem
    choices = []
    step = fastest_meta_gradient(loss_fn, [0.01], on_choice=lambda mode, ms: choices.append((mode, ms)))
    loss, grads = step(params, *data)
    step(params, *data)
    assert len(choices) == 1
    mode, ms = choices[0]
    assert set(ms) == {"vmap", "loop"} and mode == min(ms, key=ms.get)
    expected = meta_gradient(loss_fn, [0.01], vectorize=mode)(params, *data)[1]
    assert max_error(grads, expected) == 0


def test_auto_remembers_its_choice_for_every_later_process_on_the_machine(problem, tmp_path, monkeypatch):
    monkeypatch.setenv("HARNESS_CACHE", str(tmp_path))
    loss_fn, params, data = problem
    first, later = [], []
    fastest_meta_gradient(loss_fn, [0.01], on_choice=lambda mode, ms: first.append((mode, ms)))(params, *data)
    remembered = {"vmap": "loop", "loop": "vmap"}[first[0][0]]  # as if an earlier process had timed the other
    decisions = tmp_path / "decisions.json"
    decisions.write_text(decisions.read_text().replace(f'"{first[0][0]}"', f'"{remembered}"'))
    fastest_meta_gradient(loss_fn, [0.01], on_choice=lambda mode, ms: later.append((mode, ms)))(params, *data)
    assert later == [(remembered, {})]  # not timed again
    fastest_meta_gradient(loss_fn, [0.01, 0.01], on_choice=lambda mode, ms: later.append((mode, ms)))(params, *data)
    assert set(later[1][1]) == {"vmap", "loop"}  # other settings: timed
