"""How far one inner step moves a context-vector policy on an RL suite: for a context run (finished, or its training
checkpoint), the change of the context z and of the policy's mean action that the first inner step makes, per task,
and whether the step tells the tasks apart (the share of tasks on the side of their group where the tasks split in
two by sign, as forward/backward, left out one at a time). A diagnostic that reads the run and writes nothing.

    python benchmarks/diagnostics/context_step.py results/store/ant-direction-context-paper-s0-69cd516ffb [tasks]

Each task's paths are `trajectories` rollouts of the shared policy, as in meta-training; the step is the learner's
(`inner_lr`, REINFORCE with the suite's baseline). The mean-action change is the root mean square over those paths'
steps and the action dimensions, in units of the policy's standard deviation.
"""
from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from pathlib import Path

import torch
from torch.func import vmap

from harness.checkpoints import MODEL, TRAIN, load_tensors
from harness.errors import UsageError
from harness.functional import inner_loop
from harness.plugins import registry
from harness.store import DB_NAME, Store
from plugins.rl.policy_gradient import split, support_of
from plugins.rl.trainer import batched


def stored_config(run_dir: Path) -> dict:
    """The run's config with its suite and learner, from the store beside it (a UsageError where there is none)."""
    if not (run_dir.parent / DB_NAME).is_file():
        raise UsageError(f"no results store beside {run_dir}; give the folder of a run in a store's --out")
    store = Store(run_dir.parent)
    try:
        runs = store.runs(status=None).set_index("run_id")
    finally:
        store.close()
    if run_dir.name not in runs.index:
        raise UsageError(f"{run_dir.parent / DB_NAME} has no run {run_dir.name}; give the folder of a run in it")
    run = runs.loc[run_dir.name]
    return {**json.loads(run.config), "suite": run.suite, "learner": run.learner, "profile": run.profile,
            "seed": int(run.seed)}


def context_step(run_dir: Path, n_tasks: int) -> None:
    config = stored_config(run_dir)
    reg = registry()
    suite, learner = reg.suite(config["suite"])(config), reg.learner(config["learner"])(config)
    torch.set_num_threads(config["threads"])
    net = learner.network(suite, "cpu")
    if (model := load_tensors(run_dir / MODEL)) is not None:
        state, source = model, "trained model"
    elif (checkpoint := load_tensors(run_dir / TRAIN)) is not None:
        state, source = checkpoint["model"], f"training checkpoint after iteration {checkpoint['iteration']}"
    else:
        raise UsageError(f"{run_dir} holds neither {MODEL} nor {TRAIN}; give a run that has trained")
    net.load_state_dict(state)
    generator = torch.Generator().manual_seed(12345)
    tasks = suite.sample_tasks(n_tasks, generator)
    params = {k: p.detach() for k, p in net.params.items()}
    shared = batched(params, n_tasks)
    paths = suite.rollout(net.forward, shared, tasks, config["trajectories"], generator)
    support = support_of(paths, config["gamma"])
    names = learner.adapted_names(net)
    adapted = vmap(lambda q, x, y: inner_loop(net.loss, q, x, y, [config["inner_lr"]], names))(shared, *support)
    with torch.no_grad():
        before, after = (split(vmap(net.forward)(p, paths.observations)) for p in (shared, adapted))
    std = before[1].exp()
    mask = paths.mask.bool()
    change = ((after[0] - before[0]) / std).pow(2).mean(-1)  # per step, over the action dimensions
    rms = torch.stack([change[t][mask[t]].mean().sqrt() for t in range(n_tasks)])
    returns = paths.undiscounted_return()
    print(f"{run_dir.name} ({source}); {n_tasks} tasks x {config['trajectories']} paths, inner_lr "
          f"{config['inner_lr']}, adapting {', '.join(names)}; mean return of the shared policy's paths "
          f"{returns.mean():.1f}")
    step = torch.cat([(adapted[k] - shared[k]).flatten(1) for k in names], dim=1)
    for t in range(n_tasks):
        print(f"  task {tasks[t].tolist()}: |step| {step[t].norm():.2g}, mean action moved {rms[t]:.2g} std")
    print(f"mean |step| {step.norm(dim=1).mean():.2g}; mean action moved {rms.mean():.2g} std (median "
          f"{rms.median():.2g})")
    if "context" in names:
        z = params["context"]
        first = next(params[k] for k in net.weights if params[k].dim() == 2)  # z is appended to its input
        norms = first.norm(dim=0)
        reading_z = [round(v, 3) for v in norms[-z.numel():].tolist()]
        print(f"z before the step: norm {z.norm():.4f}; the first layer's columns reading z have norms {reading_z}, "
              f"its other columns {norms[:-z.numel()].mean():.3f} on average")
    sign = torch.sign(tasks.flatten(1)[:, 0])
    if tasks.flatten(1).shape[1] == 1 and (sign > 0).sum() > 1 and (sign < 0).sum() > 1:
        print(f"tasks whose step lies on their own group's side, the groups' mean steps taken without the task "
              f"(leave-one-out; 50% is chance): {tell_apart(step, sign):.0%}")


def tell_apart(step: torch.Tensor, sign: torch.Tensor) -> float:
    """Leave-one-out share of tasks whose step [T, d] is nearer the other tasks' mean step of their own sign [T]."""
    right = 0
    for t in range(len(step)):
        others = torch.arange(len(step)) != t
        plus, minus = step[others & (sign > 0)].mean(0), step[others & (sign < 0)].mean(0)
        right += int(torch.sign((step[t] - (plus + minus) / 2) @ (plus - minus)) == sign[t])
    return right / len(step)


def main(argv: Sequence[str]) -> int:
    """`context_step` of the run folder and task count in `argv`; a bad run is one line on stderr, exit status 2."""
    try:
        context_step(Path(argv[0]), int(argv[1]) if len(argv) > 1 else 20)
    except UsageError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
