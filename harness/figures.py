"""Figures as views over the results store, written as PNG (matplotlib, Agg canvas, no pyplot state).

A plugin provides `FigureSpec`s from the hook `harness_figures`. The generic one here, `CurvesFigure`, draws learning
curves: a metric against adaptation steps, one panel per shot count, one line per learner with its 95% interval band.
`Trained` rebuilds a finished run's learner for figures that show what an adapted model predicts.
"""
from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import pandas as pd
import torch
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator
from torch import Tensor
from torch.func import vmap

from harness import checkpoints
from harness.errors import UsageError
from harness.files import write_atomic
from harness.plugins import Registry
from harness.protocols import Learner, Suite, TaskBatch
from harness.stats import summarize
from harness.store import Store
from harness.tables import chosen_runs, per_task

DPI = 120
CURVE_COLUMNS = ["learner", "shots", "step", "mean", "ci95", "n", "profile", "seeds"]


class FigureSpec(Protocol):
    """A figure of one suite, drawn from the results store into `<directory>/<name>.png`."""

    name: str  # the file name's stem; unique among the installed figures
    title: str
    suite: str

    def make(self, store: Store, runs_dir: Path, registry: Registry, directory: Path,
             profile: str | None) -> Path | None:
        """Draw from the runs of `store` of `profile` (None: the most thorough available; the paper's figures take
        those `harness.tables.chosen_runs` picks; the runs' folders, with `model.pt`, `config.json` and an unfinished
        run's checkpoint, lie in `runs_dir`), write `directory/<name>.png` and return its path; None, writing nothing,
        when the store has no run it can draw."""


def new_figure(width: float, height: float) -> Figure:
    """An empty figure with constrained layout, drawn by the Agg canvas."""
    fig = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def save(fig: Figure, directory: Path, name: str) -> Path:
    """Write `fig` as `directory/<name>.png` and return the path."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{name}.png"
    return write_atomic(path, lambda f: fig.savefig(f, dpi=DPI, format="png"))


def curves(store: Store, suite: str, metric: str, lower_is_better: bool, profile: str | None = None,
           where: Mapping[str, Any] | None = None) -> pd.DataFrame:
    """Per learner, shots and step of `suite`'s chosen runs (with the config values `where`): `metric` summarised
    over test tasks (seeds pooled per task; a diverged (NaN) score counts as the worst value, so the mean of a cell
    with a diverged task is infinite). Columns: `CURVE_COLUMNS`."""
    rows = []
    for learner, runs in chosen_runs(store.runs(), suite, profile, where).items():
        scores = store.scores(runs.run_id)
        seeds = ",".join(str(s) for s in sorted(runs.seed))
        for shots, step in scores[scores.metric == metric][["shots", "step"]].drop_duplicates().itertuples(index=False):
            values = per_task(scores, runs, shots, step, metric, lower_is_better).to_numpy()
            summary = summarize(values, lower_is_better)
            rows.append({"learner": learner, "shots": shots, "step": step, "mean": summary.mean,
                         "ci95": summary.ci95, "n": summary.n, "profile": runs.profile.iloc[0], "seeds": seeds})
    return pd.DataFrame(rows, columns=CURVE_COLUMNS)


def diverged_label(learner: str, steps: Sequence[int], last_step: int, below: Sequence[int] = ()) -> str:
    """The legend label of `learner`, naming the steps whose mean is infinite (left out of the plot) and those
    whose mean lies below the plotted range."""
    notes = [f"{what} at {_steps(where, last_step)}" for what, where in (("diverged", steps), ("below the axis", below))
             if where]
    return f"{learner} ({'; '.join(notes)})" if notes else learner


def _steps(steps: Sequence[int], last_step: int) -> str:
    first = steps[0]
    if len(steps) == 1:
        return f"step {first}"
    if list(steps) == list(range(first, last_step + 1)):
        return f"steps ≥ {first}"
    return "steps " + ", ".join(str(s) for s in steps)


@dataclass(frozen=True)
class CurvesFigure:
    """Learning curves of one suite (the paper's Figures 3 and 6): mean `metric` over test tasks against adaptation
    steps 0..max, one panel per stored shot count, one line per learner with finished runs, shaded 95% interval.
    A step whose mean is infinite (a diverged task) is left out and named in the learner's legend label."""

    name: str
    title: str
    suite: str
    metric: str
    log_y: bool = True
    reference: Mapping[str, Sequence[float]] = field(default_factory=dict)
    """Published curves to draw dashed beside ours: learner name -> mean at steps 0, 1, ... (NaN where absent)."""
    reference_label: str = "published"
    where: Mapping[str, Any] = field(default_factory=dict)  # the config values of the runs to draw

    def make(self, store: Store, runs_dir: Path, registry: Registry, directory: Path,
             profile: str | None) -> Path | None:
        lower_is_better = registry.suite(self.suite).lower_is_better
        frame = curves(store, self.suite, self.metric, lower_is_better, profile, self.where)
        return None if frame.empty else save(self.draw(frame, lower_is_better), directory, self.name)

    def _floor(self, frame: pd.DataFrame, lower_is_better: bool) -> float:
        """The bottom of a linear axis of a higher-is-better metric: a quarter below the worst value before
        adaptation (ours or the reference), so that a learner that collapses after a step does not flatten the
        other curves; -inf otherwise."""
        before = [*frame["mean"][(frame.step == 0) & np.isfinite(frame["mean"])],
                  *(values[0] for values in self.reference.values() if np.isfinite(values[0]))]
        worst = -np.inf if lower_is_better else min(before, default=-np.inf)
        return worst - 0.25 * abs(worst) if np.isfinite(worst) else -np.inf

    def draw(self, frame: pd.DataFrame, lower_is_better: bool) -> Figure:
        """The figure of `frame` (rows as `curves` gives them) of a metric better when lower by `lower_is_better`."""
        shots = sorted(frame.shots.unique())
        learners = sorted(set(frame.learner) | set(self.reference))
        floor = -np.inf if self.log_y else self._floor(frame, lower_is_better)
        fig = new_figure(3.5 + 3.6 * len(shots), 4.2)
        axes = fig.subplots(1, len(shots), sharey=True, squeeze=False)[0]
        for ax, k in zip(axes, shots):
            for i, learner in enumerate(learners):
                ours = frame[(frame.shots == k) & (frame.learner == learner)].sort_values("step")
                if not ours.empty:
                    _curve(ax, ours, learner, f"C{i}", k, floor)
                if learner in self.reference:
                    values = np.asarray(self.reference[learner], dtype=float)
                    ax.plot(np.arange(len(values)), values, "x--", color=f"C{i}", markersize=5,
                            label=f"{learner}, {self.reference_label}")
            ax.set_title(f"K = {k}")
            ax.set_yscale("log" if self.log_y else "linear")
            ax.set_xlabel("gradient steps at test time")
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
            ax.grid(alpha=0.3)
        axes[0].set_ylabel(f"{self.metric} (mean over test tasks)")
        if np.isfinite(floor):
            axes[0].set_ylim(bottom=floor)
        if self.log_y:  # keep every learner readable when one explodes: up to 10x the worst pre-update error
            finite = frame["mean"][np.isfinite(frame["mean"]) & (frame["mean"] > 0)]
            axes[0].set_ylim(0.5 * finite.min(), 10 * frame["mean"][frame.step == 0].max())
        labels: dict[str, tuple] = {}  # one legend entry per learner, naming every panel where it diverged
        for ax in axes:
            for handle, label in zip(*ax.get_legend_handles_labels()):
                learner, _, note = label.partition(" (")
                old = labels.get(learner, (handle, []))
                labels[learner] = (old[0], old[1] + ([note.rstrip(")")] if note else []))
        fig.legend([h for h, _ in labels.values()],
                   [f"{name} ({'; '.join(notes)})" if notes else name for name, (_, notes) in labels.items()],
                   loc="outside right center", fontsize="small")
        fig.suptitle(self.title)
        fig.text(0.5, 0, _footnote(frame), ha="center", va="bottom", fontsize="x-small", wrap=True)
        fig.get_layout_engine().set(rect=(0, 0.05, 1, 0.95))
        return fig


def _curve(ax: Axes, rows: pd.DataFrame, learner: str, color: str, shots: int, floor: float = -np.inf) -> None:
    """One learner's line and band in `ax`; infinite means are left out, and they and means below `floor` (the
    bottom of the axis) are named in the label."""
    finite = rows[np.isfinite(rows["mean"])]
    diverged = [int(s) for s in rows.step[~np.isfinite(rows["mean"])]]
    below = [int(s) for s in finite.step[finite["mean"] < floor]]
    steps = finite.step.to_numpy()
    label = diverged_label(learner, diverged, int(rows.step.max()), below).replace(")", f", K = {shots})")
    ax.plot(steps, finite["mean"], "o-", color=color, markersize=3, label=label)
    ax.fill_between(steps, finite["mean"] - finite.ci95, finite["mean"] + finite.ci95, color=color, alpha=0.2,
                    linewidth=0)


def _footnote(frame: pd.DataFrame) -> str:
    """What the figure is drawn from: test tasks, profiles and seeds, learners sharing them named together."""
    runs = frame.drop_duplicates("learner").sort_values("learner")
    groups = runs.groupby(["profile", "seeds", "n"], sort=False).learner.apply(", ".join)
    made = "; ".join(f"{names}: {profile} profile, seeds {seeds}, {n} test tasks"
                     for (profile, seeds, n), names in groups.items())
    return f"Line: mean over test tasks (seeds pooled per task); band: 95% interval. {made}."


@dataclass(frozen=True)
class Trained:
    """A finished run rebuilt from the store: its suite and learner under the run's config, and its trained state."""

    suite: Suite
    learner: Learner
    state: dict[str, Tensor]
    run: pd.Series  # the run's row of `Store.runs()`

    @classmethod
    def load(cls, run: pd.Series, registry: Registry, runs_dir: Path) -> Trained | str | None:
        """`run` (a row of `Store.runs()`) with its state from `runs_dir/<run_id>/model.pt` on the CPU; None when that
        file is missing, "unreadable model: <path>" when it cannot be read (`checkpoints.load_tensors`), for the
        figure to show in its place. The run's suite and learner must be installed (else a UsageError)."""
        path = runs_dir / run.run_id / checkpoints.MODEL
        try:
            state = checkpoints.load_tensors(path)
        except UsageError:
            return f"unreadable model: {path}"
        if state is None:
            return None
        config = json.loads(run.config)
        return cls(registry.suite(run.suite)(config), registry.learner(run.learner)(config), state, run)

    def predict(self, tasks: TaskBatch, steps: Sequence[int]) -> dict[int, Tensor]:
        """The outputs on `tasks.query_x` of the model adapted to each task's support set, after each of `steps`
        gradient steps: {step: tensor with a leading task dimension}. Computed with the run's own `threads` (intra-op
        threads change the rounding), so that a figure is the same bytes whoever draws it."""
        out = {}
        threads = torch.get_num_threads()
        torch.set_num_threads(json.loads(self.run.config).get("threads", 1))
        try:
            for step, adapted in enumerate(self.learner.adapt(self.suite, self.state, tasks, max(steps))):
                if step in steps:
                    with torch.no_grad():
                        out[step] = vmap(adapted.forward)(adapted.params, tasks.query_x)
        finally:
            torch.set_num_threads(threads)
        return out
