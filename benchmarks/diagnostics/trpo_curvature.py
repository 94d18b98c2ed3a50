"""How well TRPO's quadratic model of the mean KL sizes the meta-step of a finished RL run's model when the KL's
curvature is taken on a fraction of the meta-batch's tasks (`cg_subsample`): a diagnostic, the store untouched.

    python benchmarks/diagnostics/trpo_curvature.py results/store/cheetah-direction-maml-paper-s0-ce9005644f 0.25 1

For one meta-batch of the run's config (drawn from seed 123) and each fraction, prints the norm of the full step
(sized so that the quadratic model's KL is `max_kl`), the mean KL of that step over all tasks, the surrogate loss
after it (0 before), and then TRPO's step from the same curvature: backtracks, loss and KL after. Learners of the
MAML family only (their meta-step goes through the inner step; `first_order` as the run had it).
"""
from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import torch

from harness.checkpoints import CONFIG, MODEL, load_tensors
from harness.functional import step_sizes
from harness.plugins import registry
from harness.training import Adaptation
from plugins.rl.trpo import conjugate_gradient, flatten_params, trpo_step, unflatten_params

SEED = 123


def curvature_report(run_dir: Path, fractions: list[float]) -> list[str]:
    """One line per fraction (see the module docstring)."""
    config = json.loads((run_dir / CONFIG).read_text())
    reg = registry()
    learner = reg.learner(config["learner"])(config)
    if not hasattr(learner, "adapted_names"):
        raise SystemExit(f"error: {config['learner']} has no inner step; this diagnostic is for the MAML family")
    torch.set_num_threads(config["threads"])
    lines = []
    for fraction in fractions:
        run_config = {**config, "cg_subsample": fraction}
        suite = reg.suite(config["suite"])(run_config)
        net = learner.network(suite, "cpu")
        net.load_state_dict(load_tensors(run_dir / MODEL))
        adaptation = Adaptation(step_sizes(config["inner_lr"], config["inner_steps"]), learner.adapted_names(net),
                                config["first_order"])
        params = {k: p.detach() for k, p in net.params.items()}
        trainer = suite.trainer(run_config)
        loss, kl, product, _ = trainer.objective(net, params, adaptation, torch.Generator().manual_seed(SEED), False)
        flat = flatten_params(params)
        leaf = flat.clone().requires_grad_()
        (gradient,) = torch.autograd.grad(loss(unflatten_params(leaf, params)), leaf)
        damped = lambda v, product=product: product(v) + config["cg_damping"] * v  # noqa: E731
        direction = conjugate_gradient(damped, -gradient, config["cg_iters"])
        step = math.sqrt(2 * config["max_kl"] / direction.dot(damped(direction)).item()) * direction
        with torch.no_grad():
            full = unflatten_params(flat + step, params)
            full_kl, full_loss = kl(full).item(), loss(full).item()
        _, info = trpo_step(params, loss, kl, trainer.trpo, product)
        lines.append(f"cg_subsample {fraction:g}: full step norm {step.norm():.4g}, its KL on all tasks {full_kl:.4g} "
                     f"(sized for {config['max_kl']:g}), loss {full_loss:.4g}; TRPO: {info['backtracks']} backtracks, "
                     f"loss {info['loss_after']:.4g}, KL {info['kl_after']:.4g}")
    return lines


if __name__ == "__main__":
    run, *fractions = sys.argv[1:]
    for line in curvature_report(Path(run), [float(f) for f in fractions] or [0.25, 1.0]):
        print(line, flush=True)
