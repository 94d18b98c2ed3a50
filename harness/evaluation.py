"""The few-shot test protocol of supervised suites: frozen test tasks, several shot counts, 0..N adaptation steps."""
from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor
from torch.func import vmap

from harness.protocols import Learner, Progress, Score, Suite, TaskBatch
from harness.seeding import generator


def frozen_tasks(suite: Suite, split: str, n_tasks: int, shots: int, query: int) -> TaskBatch:
    """Tasks 0..n_tasks-1 of `split`, task i drawn from a generator seeded by (suite, split, i) alone: the same for
    every learner, run and seed, and task i does not depend on `n_tasks`."""
    return TaskBatch.cat([suite.sample(split, 1, generator(suite.name, split, i), shots, query)
                          for i in range(n_tasks)])


@dataclass(frozen=True)
class FewShotEvaluator:
    """Score every test task after 0..`steps` gradient steps on its first K support examples, for each K in `shots`,
    on `query` held-out examples of the same task."""

    n_tasks: int
    shots: Sequence[int]
    steps: int
    query: int
    device: torch.device = torch.device("cpu")

    @classmethod
    def from_config(cls, config: Mapping, device: torch.device) -> FewShotEvaluator:
        shots = tuple(config["eval_shots"])
        return cls(config["eval_tasks"], shots, config["eval_steps"], config["eval_query"], device)

    def tasks(self, suite: Suite) -> TaskBatch:
        return frozen_tasks(suite, "test", self.n_tasks, max(self.shots), self.query).to(self.device)

    def evaluate(
        self, suite: Suite, learner: Learner, state: Mapping[str, Tensor], progress: Progress
    ) -> Iterator[Score]:
        tasks = self.tasks(suite)
        bar = progress(len(self.shots) * (self.steps + 1), "evaluate")
        for k in self.shots:
            for step, adapted in enumerate(learner.adapt(suite, state, tasks.shots(k), self.steps)):
                with torch.no_grad():
                    outputs = vmap(adapted.forward)(adapted.params, tasks.query_x)
                    values = suite.score(outputs, tasks.query_y).tolist()
                yield from (Score(i, k, step, suite.metric, v) for i, v in enumerate(values))
                bar.update(1)
        bar.close()
