"""Which test tasks dominate a mean: the worst tasks of a learner at one (shots, step), with their true task
parameters where the suite has them, and whether further steps helped or hurt them. "Worst" follows the suite's
metric: the highest errors, or the lowest accuracies."""
from __future__ import annotations

import json
import math
from collections.abc import Mapping
from typing import Any

import pandas as pd
import torch

from harness.errors import UsageError
from harness.plugins import Registry
from harness.store import Store
from harness.tables import chosen_runs


def worst_tasks(store: Store, reg: Registry, suite: str, learner: str, shots: int, step: int, worst: int,
                profile: str | None = None, where: Mapping[str, Any] | None = None,
                ) -> tuple[pd.DataFrame, dict[str, float]]:
    """The `worst` tasks by metric at (`shots`, `step`) with their values at step 1 and `step`, their task features,
    and a summary: (for errors) tasks above 10 x the median and their share of the total, and tasks worse at `step`
    than at step 1. `where`: config values the run must have (e.g. {"ways": 20})."""
    lower = reg.suite(suite).lower_is_better
    runs = chosen_runs(store.runs(), suite, profile, where).get(learner)
    if runs is None:
        raise UsageError(f"no finished run of {learner} on {suite}{' with ' + str(where) if where else ''}; "
                         "run it first (`python -m harness run`)")
    run = runs.iloc[-1]
    scores = store.scores([run.run_id])
    worst_value = math.inf if lower else -math.inf
    scores = scores[scores.shots == shots].assign(value=lambda f: f.value.fillna(worst_value))  # NaN: diverged
    if step not in set(scores.step) or 1 not in set(scores.step):
        raise UsageError(f"no scores at {shots} shots and step {step}; "
                         f"stored shots: {sorted(set(store.scores([run.run_id]).shots))}")
    wide = scores.pivot(index="task", columns="step", values="value")
    at = wide[step]
    over = at > 10 * at.median() if lower else pd.Series(False, index=at.index)
    summary = {"median": float(at.median()), "mean": float(at.mean())}
    if lower:
        summary |= {"over_10x_median": int(over.sum()), "share_of_total": float(at[over].sum() / at.sum())}
    summary |= {"worse_than_step_1": int(((at > wide[1]) if lower else (at < wide[1])).sum()),
                "diverged": int((~at.map(math.isfinite)).sum())}
    table = pd.DataFrame({"step 1": wide[1], f"step {step}": at})
    suite_obj = reg.suite(suite)(json.loads(run.config))
    # only a suite with task features needs its test tasks built (600 MiniImagenet episodes would be 4 GB)
    tasks = suite_obj.evaluator(torch.device("cpu")).tasks(suite_obj) if suite_obj.feature_names else None
    if tasks is not None and tasks.features is not None:
        for name, column in zip(suite_obj.feature_names, tasks.features.T):
            table[name] = column.numpy()
            if lower:
                summary[f"mean {name}: tasks over 10 x median / the rest"] = (float(table.loc[over, name].mean()),
                                                                            float(table.loc[~over, name].mean()))
    return table.sort_values(f"step {step}", ascending=not lower).head(worst), summary
