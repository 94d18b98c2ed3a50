"""Training curves of the RL learners: the mean return of the training paths against meta-iterations, one line per
learner, finished runs from their detail `training_curve` and unfinished ones from their last training checkpoint -
so a run that trains for a day can be watched (`python -m harness report`), and a finished one shows whether it had
stopped improving."""
from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from harness import checkpoints
from harness.errors import UsageError
from harness.figures import new_figure, save
from harness.plugins import Registry
from harness.store import Store
from harness.sweeps import unit_state
from harness.tables import matches, most_thorough

SMOOTH = 25  # meta-iterations of the moving average drawn over each raw curve


def training_curves(store: Store, runs_dir: Path, suite: str, profile: str | None = None,
                    where: Mapping[str, Any] | None = None) -> dict[str, tuple[str, np.ndarray]]:
    """Per learner, its latest run of `suite` (of `profile`, else of the most thorough profile with a run; with the
    config values `where`) that has a training curve: (its label, e.g. "maml (paper, running, 208/500)", the mean
    return of the training paths at each meta-iteration so far). A run without one (a learner that does not train by
    RL iterations, or before its first checkpoint) is left out."""
    runs = store.runs(status=None)
    runs = runs[(runs.suite == suite) & runs.config.map(lambda c: matches(c, where or {})).astype(bool)]
    if profile is not None:
        runs = runs[runs.profile == profile]
    out = {}
    for learner, group in runs.groupby("learner"):
        for run in most_thorough(group).iloc[::-1].itertuples():  # latest first
            returns = _returns(store, runs_dir, run)
            if returns is not None:
                total = json.loads(run.config)["meta_iterations"]
                state = unit_state(run.status, run.host, run.pid)
                out[learner] = (f"{learner} ({run.profile}, {state}, {len(returns)}/{total})", returns)
                break
    return out


def _returns(store: Store, runs_dir: Path, run: Any) -> np.ndarray | None:
    """The training return per meta-iteration of `run` (a row of `Store.runs`): its detail if done, else its
    checkpoint's curve; None when it has neither, or its checkpoint cannot be read (`status` names that file)."""
    if run.status == "done":
        curve = store.details(run.run_id).get("training_curve")
    else:
        try:
            curve = (checkpoints.load_tensors(runs_dir / run.run_id / checkpoints.TRAIN) or {}).get("curve")
        except UsageError:
            curve = None
    if not curve or not curve.get("return"):
        return None
    return np.array([np.nan if r is None else float(r) for r in curve["return"]])


@dataclass(frozen=True)
class TrainingCurvesFigure:
    """`training_curves` of one suite: each learner's raw curve (thin) and its `SMOOTH`-iteration moving average."""

    name: str
    title: str
    suite: str
    where: Mapping[str, Any] = field(default_factory=dict)  # the config values of the runs to draw

    def make(self, store: Store, runs_dir: Path, registry: Registry, directory: Path,
             profile: str | None) -> Path | None:
        curves = training_curves(store, runs_dir, self.suite, profile, self.where)
        if not curves:
            return None
        fig = new_figure(8.5, 4.2)
        ax = fig.subplots()
        for i, (_, (label, returns)) in enumerate(sorted(curves.items())):
            x = np.arange(len(returns))
            ax.plot(x, returns, color=f"C{i}", alpha=0.25, linewidth=0.8)
            window = min(SMOOTH, len(returns))
            smooth = pd.Series(returns).rolling(window, min_periods=1).mean()
            ax.plot(x, smooth, color=f"C{i}", linewidth=1.8, label=label)
        ax.set_xlabel("meta-iteration")
        ax.set_ylabel("mean return of the training paths")
        ax.grid(alpha=0.3)
        fig.legend(loc="outside right center", fontsize="small")
        fig.suptitle(self.title)
        fig.text(0.5, 0, f"Thin: each meta-iteration; thick: mean of the last {SMOOTH}. MAML, first-order MAML and "
                 "context: the adapted policies' paths; pretrain and oracle: the shared policy's; unfinished runs "
                 "up to their last checkpoint.", ha="center", va="bottom", fontsize="x-small", wrap=True)
        fig.get_layout_engine().set(rect=(0, 0.06, 1, 0.94))
        return save(fig, directory, self.name)
