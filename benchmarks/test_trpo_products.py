"""Seconds per Hessian-vector product of TRPO's mean-KL in MAML's meta-step (`kl_fisher_product`) at the paper
settings of cheetah-direction (40 tasks x 20 paths x 200 steps, a quarter of the tasks for the products, one
thread), against the same product with J v computed by forward mode (`torch.func.jvp`, which reruns the adapted
policies' outputs, inner step included, for every product), interleaved in one run:

    python -m pytest benchmarks/test_trpo_products.py --benchmark-only -s
"""
from __future__ import annotations

import time

import pytest
import torch
from torch.func import jvp

import plugins.rl.trainer as trainer
from harness.functional import step_sizes
from harness.models import FunctionalModel
from harness.training import Adaptation
from plugins.locomotion import PAPER, CheetahDirection
from plugins.rl.policy_gradient import split
from plugins.rl.trpo import flatten_params, unflatten_params


def forward_mode_product(outputs_of, params, old, mask):
    """The product as `kl_fisher_product` computed it before: J v by `torch.func.jvp`."""
    flat = flatten_params(params).requires_grad_()
    outputs = outputs_of(unflatten_params(flat, params))
    weight = (mask / mask.sum((-2, -1), keepdim=True) / mask.shape[0])[..., None]
    log_std = split(old)[1]
    curvature = torch.cat([torch.exp(-2 * log_std), torch.full_like(log_std, 2.0)], dim=-1) * weight

    def fvp(v):
        _, jv = jvp(lambda f: outputs_of(unflatten_params(f, params)), (flat.detach(),), (v,))
        return torch.autograd.grad(outputs, flat, grad_outputs=curvature * jv, retain_graph=True)[0]

    return fvp


@pytest.mark.benchmark(group="trpo")
def test_double_backward_products_against_forward_mode(benchmark, monkeypatch):
    torch.set_num_threads(1)
    config = {**PAPER, "sampler_threads": 1}
    suite = CheetahDirection(config)
    net = FunctionalModel(suite, "cpu")
    params = {k: p.detach() for k, p in net.params.items()}
    made, product = {}, trainer.kl_fisher_product

    def both(outputs_of, params, old, mask):
        made["reference"] = forward_mode_product(outputs_of, params, old, mask)
        return product(outputs_of, params, old, mask)

    monkeypatch.setattr(trainer, "kl_fisher_product", both)
    adaptation = Adaptation(step_sizes(config["inner_lr"], 1), None, False)
    _, _, fvp, _ = suite.trainer(config).objective(net, params, adaptation, torch.Generator().manual_seed(0), False)
    reference, seconds = made["reference"], {"double backward": 0.0, "forward mode": 0.0}
    for seed in range(3):
        v = torch.randn(flatten_params(params).shape, generator=torch.Generator().manual_seed(seed))
        start = time.perf_counter()
        hv = fvp(v)
        seconds["double backward"] += time.perf_counter() - start
        start = time.perf_counter()
        expected = reference(v)
        seconds["forward mode"] += time.perf_counter() - start
        assert torch.allclose(hv, expected, rtol=1e-4, atol=1e-6 * expected.norm().item())
    benchmark.pedantic(fvp, args=(v,), rounds=1, iterations=1)
    print(f"\ns per product: double backward {seconds['double backward'] / 3:.2f}, forward mode "
          f"{seconds['forward mode'] / 3:.2f} ({seconds['forward mode'] / seconds['double backward']:.2f}x)")
