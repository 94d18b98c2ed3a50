"""Seconds per meta-iteration on the CPU in the paper's MiniImagenet configuration (4 x [3x3 conv 32, batch-statistics
norm, ReLU, 2x2 max-pool], linear head; 5-way, 15 query images per class, 5 inner steps of 0.01, meta-batch 4 at
1-shot and 2 at 5-shot), second-order and first-order MAML, one intra-op thread (the quick and paper profiles'), on
random images (the speed does not depend on the pixels). Adam's step is left out: it is 0.1 ms of the seconds.

Variants, all through `harness.functional.meta_gradient`:
- "relu, pool": the paper's block order (the harness before d31b2bf);
- "pool, relu": the harness's net (`plugins.vision.pooled_conv_net`): the same function and gradient on a quarter
  of the ReLU's pixels (asserted here to the last bit);
- each with vectorize=loop (per task) and vectorize=vmap, and "pool, relu" with channels-last memory (the suite's
  default: `plugins.miniimagenet.float_images`);
- with HARNESS_BENCH_COMPILE=1 also "pool, relu" vmapped through torch.compile (minutes to compile).
Every path is timed in float32 and checked in float64 against the float64 loop.

    python -m pytest benchmarks/test_miniimagenet_iteration.py -o addopts= -s
    HARNESS_BENCH_DEVICE=cuda python -m pytest benchmarks/test_miniimagenet_iteration.py -o addopts= -s   # on a GPU
"""
import copy
import os
import time
from collections.abc import Callable

import pytest
import torch
from torch import nn

from harness.functional import meta_gradient, task_loss
from plugins.vision import BatchStatNorm, pooled_conv_net

WAYS, QUERY, ALPHA, STEPS, THREADS = 5, 15, 0.01, 5, 1
META_BATCH = {1: 4, 5: 2}
COMPILE = os.environ.get("HARNESS_BENCH_COMPILE") == "1"
DEVICE = torch.device(os.environ.get("HARNESS_BENCH_DEVICE", "cpu"))


def paper_order_net() -> nn.Sequential:
    """pooled_conv_net with the paper's order in each block: ReLU, then max-pool."""
    layers: list[nn.Module] = []
    for i in range(4):
        layers += [nn.Conv2d(3 if i == 0 else 32, 32, 3, padding=1, bias=False), BatchStatNorm(32), nn.ReLU(),
                   nn.MaxPool2d(2)]
    return nn.Sequential(*layers, nn.Flatten(), nn.Linear(32 * 5 * 5, WAYS))


def episodes(shot: int) -> tuple[torch.Tensor, ...]:
    batch = META_BATCH[shot]
    images = lambda per_class: torch.rand(batch, WAYS * per_class, 3, 84, 84, device=DEVICE)
    labels = lambda per_class: (torch.arange(WAYS, device=DEVICE).repeat_interleave(per_class)
                                .expand(batch, WAYS * per_class))
    return images(shot), labels(shot), images(QUERY), labels(QUERY)


def channels_last(data: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...]:
    """The same episodes with each image stored channels-last ([tasks, images, 3, 84, 84] viewed over NHWC)."""
    cl = lambda x: x.flatten(0, 1).contiguous(memory_format=torch.channels_last).view(x.shape)
    return tuple(cl(d) if d.dim() == 5 else d for d in data)


def seconds(model: nn.Module, data: tuple[torch.Tensor, ...], first_order: bool, vectorize: str,
            compile: bool = False, repeat: int = 3) -> tuple[float, torch.Tensor, dict[str, torch.Tensor]]:
    """The fastest of `repeat` timed meta-gradients after a warm-up (nan for none), and the last (loss, gradient)."""
    step = meta_gradient(task_loss(model, nn.functional.cross_entropy), [ALPHA] * STEPS, first_order=first_order,
                         vectorize=vectorize, compile=compile)
    params = {k: p.detach() for k, p in model.named_parameters()}
    sync = torch.cuda.synchronize if DEVICE.type == "cuda" else lambda: None
    loss, grads = step(params, *data)
    times = [float("nan")] if repeat == 0 else []
    for _ in range(repeat):
        sync()
        start = time.perf_counter()
        loss, grads = step(params, *data)
        sync()
        times.append(time.perf_counter() - start)
    return min(times), loss, grads


Variant = tuple[nn.Module, Callable[[tuple[torch.Tensor, ...]], tuple[torch.Tensor, ...]], str, bool]
"""A path to time: (net, episodes' layout, vectorize, compile)."""


def variants(paper: nn.Module, ours: nn.Module) -> dict[str, Variant]:
    """Every path of the module docstring, by name; the first is the baseline of the speed-ups."""
    same = lambda data: data
    last = copy.deepcopy(ours).to(memory_format=torch.channels_last)
    paths = {}
    for vectorize in ("loop", "vmap"):
        paths[f"relu, pool, {vectorize}"] = (paper, same, vectorize, False)
        paths[f"pool, relu, {vectorize}"] = (ours, same, vectorize, False)
    if COMPILE:
        paths["pool, relu, vmap, compiled"] = (ours, same, "vmap", True)
    paths["pool, relu, loop, channels-last"] = (last, channels_last, "loop", False)
    return paths


def float64(data: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...]:
    return tuple(d.double() if d.is_floating_point() else d for d in data)


@pytest.mark.parametrize("shot", [1, 5])
@pytest.mark.parametrize("first_order", [False, True], ids=["second-order", "first-order"])
def test_miniimagenet_meta_iteration(shot, first_order, capsys):
    torch.set_num_threads(THREADS)
    torch.manual_seed(0)
    paper = paper_order_net().to(DEVICE)
    ours = pooled_conv_net(3, WAYS).to(DEVICE)
    ours.load_state_dict(paper.state_dict())
    data = episodes(shot)
    paths = variants(paper, ours)
    results = {name: seconds(net, layout(data), first_order, vectorize, compile)
               for name, (net, layout, vectorize, compile) in paths.items()}
    _, loss_paper, grads_paper = results["relu, pool, loop"]
    _, loss_ours, grads_ours = results["pool, relu, loop"]
    if DEVICE.type == "cpu":  # the same function: the same bits (CUDA's convolutions need not be deterministic)
        assert torch.equal(loss_paper, loss_ours)
        assert all(torch.equal(grads_paper[k], grads_ours[k]) for k in grads_paper)
    # Correctness in float64, path by path: in float32, through 5 inner steps, the meta-gradient is a non-smooth
    # function of the rounding (max-pool picks and ReLU gates switch), and any float32 path differs from a float64 loop
    # by 0.1-12% (relative norm of a parameter's gradient). In float64 every correct path agrees with the float64 loop
    # to rounding; a wrong one (a transposed layout, a missing term) is off by far more than the tolerance.
    exact = seconds(copy.deepcopy(ours).double(), float64(data), first_order, "loop", repeat=0)[2]
    error = {}
    for name, (net, layout, vectorize, compile) in paths.items():
        _, _, grads = seconds(copy.deepcopy(net).double(), layout(float64(data)), first_order, vectorize, compile,
                              repeat=0)
        error[name] = max(float((grads[k] - exact[k]).norm() / exact[k].norm()) for k in exact)
    assert all(e <= 1e-6 for e in error.values()), error
    base = results["relu, pool, loop"][0]
    with capsys.disabled():
        print(f"\nMiniImagenet 5-way {shot}-shot {'first' if first_order else 'second'}-order MAML meta-iteration "
              f"(meta-batch {META_BATCH[shot]}, {DEVICE}, {THREADS} thread), s (speed-up over 'relu, pool, loop'): "
              + "; ".join(f"{name} {s:.2f} ({base / s:.2f}x)" for name, (s, _, _) in results.items())
              + "; largest relative error of a parameter's float64 gradient against a float64 loop: "
              + ", ".join(f"{name} {e:.0e}" for name, e in error.items()))
