"""The diagnostics the README quotes run on today's code: `benchmarks/diagnostics/context_step.py` on smoke runs."""
import importlib.util
import re
from pathlib import Path

import torch

from harness.cli import main

DIAGNOSTICS = Path(__file__).parents[1] / "benchmarks" / "diagnostics"


def load(name: str):
    spec = importlib.util.spec_from_file_location(name, DIAGNOSTICS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_tell_apart_is_a_leave_one_out_nearest_group_mean():
    tell_apart = load("context_step").tell_apart
    sign = torch.tensor([1.0, 1.0, 1.0, -1.0, -1.0, -1.0])
    apart = torch.tensor([[1.0, 0.1], [1.2, -0.1], [0.9, 0.0], [-1.0, 0.2], [-1.1, 0.0], [-0.8, -0.1]])
    assert tell_apart(apart, sign) == 1.0
    # the last task's step sits among the other group: it alone is misplaced
    assert tell_apart(torch.cat([apart[:5], torch.tensor([[1.0, 0.0]])]), sign) == 5 / 6


def test_context_step_measures_the_first_inner_step_of_a_finished_run(tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["run", "--suite", "cheetah-direction", "--learners", "maml,context", "--profile", "smoke",
                 "--out", str(out), "--quiet"]) == 0
    capsys.readouterr()
    context_step = load("context_step").context_step
    for learner, adapting in (("context", "adapting context;"), ("maml", "adapting log_std, mean.0.weight")):
        (run_dir,) = out.glob(f"cheetah-direction-{learner}-smoke-*")
        context_step(run_dir, 6)
        printed = capsys.readouterr().out
        assert "(trained model); 6 tasks x 2 paths, inner_lr 0.1, " + adapting in printed
        assert len(re.findall(r"^  task \[-?1\.0\]: \|step\| \S+, mean action moved \S+ std$", printed, re.M)) == 6
        moved = float(re.search(r"^mean \|step\| \S+; mean action moved (\S+) std", printed, re.M).group(1))
        assert moved > 0
        assert ("the first layer's columns reading z" in printed) == (learner == "context")
