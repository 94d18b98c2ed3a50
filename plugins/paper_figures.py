"""The MAML paper's figures: Figure 3 (with Figure 6's shot counts), MSE against gradient steps at test time;
Figure 2, what MAML and pretraining fit to one frozen test task after 0, 1 and 10 gradient steps; Figures 4 and 5,
return against steps on 2D navigation and the four locomotion suites; and each RL suite's training curves."""
from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import torch
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from harness import hookimpl
from harness.evaluation import frozen_tasks
from harness.figures import CurvesFigure, FigureSpec, Trained, new_figure, save
from harness.plugins import Registry
from harness.protocols import TaskBatch
from harness.store import Store
from harness.tables import chosen_runs
from plugins.paper_tables import RELEASED, RL_ROWS
from plugins.rl.training_figure import TrainingCurvesFigure

X_RANGE = (-5.0, 5.0)  # the sinusoid's input range (paper, section 5.1)
GRID = 200  # points of the dense grid the true function and the fits are drawn on
LOCOMOTION = ("cheetah-velocity", "cheetah-direction", "ant-velocity", "ant-direction")


def _step_label(step: int) -> str:
    return "pre-update" if step == 0 else f"{step} grad step" + ("s" if step > 1 else "")


@dataclass(frozen=True)
class SinusoidFits:
    """The paper's Figure 2: rows K in `shots`, columns `learners`. Every panel shows the same frozen test task
    (test task 0, as the evaluator draws it): its true sinusoid `amplitude * sin(x - phase)`, its first K support
    points, and the fit of the learner's chosen run (lowest seed) after each of `steps` gradient steps on them.
    A learner without a finished run gets panels that say so."""

    name: str
    title: str
    suite: str = "sinusoid"
    learners: tuple[str, ...] = ("maml", "pretrain")
    shots: tuple[int, ...] = (5, 10)
    steps: tuple[int, ...] = (0, 1, 10)

    def make(self, store: Store, runs_dir: Path, registry: Registry, directory: Path,
             profile: str | None) -> Path | None:
        chosen = chosen_runs(store.runs(), self.suite, profile)
        runs = {learner: chosen[learner].sort_values("seed").iloc[0] for learner in self.learners if learner in chosen}
        return save(self.draw(runs, registry, runs_dir), directory, self.name) if runs else None

    def draw(self, runs: Mapping[str, pd.Series], registry: Registry, runs_dir: Path) -> Figure:
        """The figure for the chosen run of each learner in `runs` (at least one)."""
        task = self._task(next(iter(runs.values())), registry)
        grid = torch.linspace(*X_RANGE, GRID).reshape(1, GRID, 1)
        amplitude, phase = task.features[0].tolist()
        truth = amplitude * torch.sin(grid - phase)
        models = {learner: self._trained(learner, runs, registry, runs_dir) for learner in self.learners}
        fig = new_figure(4.2 * len(self.learners), 3.2 * len(self.shots) + 0.8)
        axes = fig.subplots(len(self.shots), len(self.learners), sharex=True, sharey=True, squeeze=False)
        for row, k in enumerate(self.shots):
            support = task.shots(k)
            tasks = TaskBatch(support.support_x, support.support_y, grid, truth, task.features)
            for col, learner in enumerate(self.learners):
                ax = axes[row, col]
                ax.plot(grid.flatten(), truth.flatten(), color="red", linewidth=2, label="ground truth")
                ax.scatter(tasks.support_x.flatten(), tasks.support_y.flatten(), marker="^", color="purple", s=40,
                           zorder=3, label="points used for gradient")
                self._fits(ax, models[learner], tasks)
                ax.set_title(f"{learner}, K = {k}" + _run_label(runs.get(learner)), fontsize="medium")
                ax.set_xlabel("x")
                ax.set_ylabel("y")
                ax.label_outer()
        limit = 1.5 * amplitude + 1
        axes[0, 0].set_ylim(-limit, limit)
        handles = {label: h for ax in axes.flat for h, label in zip(*ax.get_legend_handles_labels())}
        fig.legend(handles.values(), handles.keys(), loc="outside lower center", ncols=len(handles), fontsize="small")
        fig.suptitle(f"{self.title}\ntest task 0: amplitude {amplitude:.2f}, phase {phase:.2f}")
        return fig

    def _task(self, run: pd.Series, registry: Registry) -> TaskBatch:
        """Test task 0 exactly as the evaluator of `run`'s config draws it (all its support points)."""
        config = json.loads(run.config)
        suite = registry.suite(self.suite)(config)
        return frozen_tasks(suite, "test", 1, max(config["eval_shots"]), config["eval_query"])

    @staticmethod
    def _trained(learner: str, runs: Mapping[str, pd.Series], registry: Registry, runs_dir: Path) -> Trained | str:
        """The learner's trained model, or why there is none (written in its panels)."""
        if learner not in runs:
            return "not run"
        if learner not in registry.learners:
            return "not installed"
        run = runs[learner]
        return Trained.load(run, registry, runs_dir) or f"no model at {runs_dir / run.run_id}"

    def _fits(self, ax: Axes, model: Trained | str, tasks: TaskBatch) -> None:
        """The model's fits after each of `self.steps`, or the reason there are none."""
        if isinstance(model, str):
            ax.text(0.5, 0.5, model, transform=ax.transAxes, ha="center", va="center", fontsize="large",
                    color="gray", bbox={"facecolor": "white", "edgecolor": "gray"})
            return
        for i, (step, y) in enumerate(model.predict(tasks, self.steps).items()):
            ax.plot(tasks.query_x.flatten(), y.flatten(), linestyle=("--", "-.", ":")[i % 3], color=f"C{i}",
                    label=_step_label(step))


def _run_label(run: pd.Series | None) -> str:
    return "" if run is None else f" ({run.profile}, seed {run.seed})"


def released_curves(suite: str) -> dict[str, list[float]]:
    """The authors' released mean returns of `suite` at steps 0-3, by our learner names (NaN where absent)."""
    released = pd.read_csv(RELEASED)
    return {RL_ROWS[row.learner]: [row.step0, row.step1, row.step2, row.step3]
            for row in released[released.suite == suite].itertuples()}


@hookimpl
def harness_figures() -> list[FigureSpec]:
    return [
        CurvesFigure(name="figure3", title="Figure 3 (and 6): sinusoid regression, MSE against gradient steps at "
                     "test time", suite="sinusoid", metric="mse"),
        CurvesFigure(name="figure4", title="Figure 4: 2D navigation, return against steps (alpha 0.1, then 0.05)",
                     suite="navigation2d", metric="return", log_y=False, reference=released_curves("navigation2d"),
                     reference_label="released (cbfinn/maml_rl, alpha 0.5)",
                     where={"inner_lr": 0.1}),
        *(CurvesFigure(name=f"figure5-{suite}", title=f"Figure 5: {suite}, return against steps (alpha 0.1, then 0.05)",
                       suite=suite, metric="return", log_y=False, reference=released_curves(suite),
                       reference_label="released (cbfinn/maml_rl)",
                       where={"variant": "rllab"})
          for suite in LOCOMOTION),
        *(TrainingCurvesFigure(name=f"training-{suite}", title=f"{suite}: return of the training paths against "
                               "meta-iterations", suite=suite, where=where)
          for suite, where in (("navigation2d", {}), *((s, {"variant": "rllab"}) for s in LOCOMOTION))),
        SinusoidFits(name="figure2", title="Figure 2: sinusoid fits of MAML and pretraining after 0, 1, 10 steps"),
    ]
