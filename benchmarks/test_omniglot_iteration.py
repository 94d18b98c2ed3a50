"""Speed of one second-order MAML meta-iteration in the paper's Omniglot 5-way 1-shot configuration (conv net,
meta-batch 32, 1 support + 1 query drawing per class, 1 inner step of 0.4), Adam step included, on random binary
28x28 images (the speed does not depend on the pixels), with the threads of the quick/paper profiles (2):

- harness vmap and harness loop: `meta_gradient` with vectorize=vmap / loop (what vectorize=auto times and picks);
- learn2learn style: per task, clone the parameters, adapt with create_graph=True, backward the query loss;
- with HARNESS_BENCH_COMPILE=1 also harness vmap through torch.compile (tens of seconds to compile).

    python -m pytest benchmarks/test_omniglot_iteration.py -o addopts= -s
    HARNESS_BENCH_DEVICE=cuda python -m pytest benchmarks/test_omniglot_iteration.py -o addopts= -s   # on a GPU
"""
import os
import time

import pytest
import torch
from torch.func import functional_call

from harness.decisions import fastest_meta_gradient
from harness.functional import meta_gradient, task_loss
from plugins.vision import conv_net

WAYS, META_BATCH, ALPHA, THREADS = 5, 32, 0.4, 2
DEVICE = torch.device(os.environ.get("HARNESS_BENCH_DEVICE", "cpu"))
COMPILE = os.environ.get("HARNESS_BENCH_COMPILE") == "1"


@pytest.fixture(scope="module")
def setup():
    torch.set_num_threads(THREADS)
    torch.manual_seed(0)
    model = conv_net(1, WAYS).to(DEVICE)
    images = lambda: (torch.rand(META_BATCH, WAYS, 1, 28, 28, device=DEVICE) < 0.1).float()
    labels = torch.arange(WAYS, device=DEVICE).expand(META_BATCH, WAYS)
    return model, (images(), labels, images(), labels)


def harness(model, vectorize, compile=False):
    loss_fn = task_loss(model, torch.nn.functional.cross_entropy)
    step = meta_gradient(loss_fn, [ALPHA], vectorize=vectorize, compile=compile)
    params = dict(model.named_parameters())
    optimizer = torch.optim.Adam(params.values(), lr=1e-3)

    def iteration(data):
        _, grads = step({k: p.detach() for k, p in params.items()}, *data)
        for name, p in params.items():
            p.grad = grads[name]
        optimizer.step()
    return iteration


def learn2learn_style(model):
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    loss = torch.nn.functional.cross_entropy

    def iteration(data):
        optimizer.zero_grad()
        for sx, sy, qx, qy in zip(*data):
            clone = {k: p.clone() for k, p in model.named_parameters()}  # learn2learn's clone_module
            grads = torch.autograd.grad(loss(functional_call(model, clone, (sx,)), sy), list(clone.values()),
                                        create_graph=True)
            adapted = {k: p - ALPHA * g for (k, p), g in zip(clone.items(), grads)}
            (loss(functional_call(model, adapted, (qx,)), qy) / META_BATCH).backward()
        optimizer.step()
    return iteration


def median_ms(fn, data, repeat=7):
    sync = torch.cuda.synchronize if DEVICE.type == "cuda" else lambda: None
    fn(data)
    times = []
    for _ in range(repeat):
        sync()
        start = time.perf_counter()
        fn(data)
        sync()
        times.append(time.perf_counter() - start)
    return sorted(times)[repeat // 2] * 1e3


def test_omniglot_meta_iteration_vmap_loop_and_learn2learn_style(setup, capsys, tmp_path, monkeypatch):
    monkeypatch.setenv("HARNESS_CACHE", str(tmp_path))  # time auto's candidates afresh, not a remembered choice
    model, data = setup
    ms = {"harness vmap": median_ms(harness(model, "vmap"), data),
          "harness loop": median_ms(harness(model, "loop"), data),
          "learn2learn style": median_ms(learn2learn_style(model), data)}
    if COMPILE:
        ms["harness vmap compiled"] = median_ms(harness(model, "vmap", compile=True), data)
    choice = []
    fastest_meta_gradient(task_loss(model, torch.nn.functional.cross_entropy), [ALPHA],
                          on_choice=lambda mode, timed: choice.append(mode))(
        {k: p.detach() for k, p in model.named_parameters()}, *data)
    with capsys.disabled():
        print(f"\nOmniglot 5-way 1-shot conv meta-iteration ({DEVICE}, {THREADS} threads), median ms: "
              + ", ".join(f"{name} {value:.0f}" for name, value in ms.items())
              + f"; vectorize=auto chose {choice[0]}")
    assert choice[0] in ("vmap", "loop")
