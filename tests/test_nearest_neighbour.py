"""The nearest-neighbour baseline: its rule on hand-made features, its plumbing through `adapt` and the evaluator's
vmap, its entry point, and a smoke run on the real Omniglot (HARNESS_DATA, as in CI)."""
import sqlite3

import pytest
import torch
from torch import nn
from torch.func import vmap

from harness.cli import main
from harness.plugins import registry
from harness.protocols import TaskBatch
from plugins.navigation2d import Navigation2D
from plugins.nearest_neighbour import NearestNeighbour, class_scores, penultimate
from plugins.omniglot import Omniglot
from plugins.sinusoid import Sinusoid

ONEHOT = torch.eye(3)  # support example i is of class i


def nearest(query: list[list[float]], support: list[list[float]], onehot: torch.Tensor, distance: str) -> list[int]:
    return class_scores(torch.tensor(query), torch.tensor(support), onehot, distance).argmax(-1).tolist()


@pytest.mark.parametrize("distance", ["cosine", "euclidean"])
def test_a_query_gets_the_class_of_its_nearest_support_example(distance):
    support = [[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]]
    assert nearest([[0.9, 0.1], [0.1, 2.0], [-3.0, 0.5], [0.2, 0.8]], support, ONEHOT, distance) == [0, 1, 2, 1]


def test_the_distances_differ_in_scale_only_cosine_ignores_it():
    support = [[1.0, 0.0], [4.0, 4.0], [-1.0, 0.0]]
    assert nearest([[1.0, 1.2]], support, ONEHOT, "cosine") == [1]  # same direction as class 1
    assert nearest([[1.0, 1.2]], support, ONEHOT, "euclidean") == [0]  # closer to class 0's point


def test_the_rule_is_the_nearest_example_not_the_nearest_class_mean():
    support = [[2.0, 0.0], [-2.0, 0.0], [0.0, 0.5]]  # class 0 twice (mean at the origin), class 1 once
    onehot = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    assert nearest([[1.8, 0.0], [0.0, 0.3]], support, onehot, "euclidean") == [0, 1]
    assert nearest([[0.1, 0.0]], support, onehot, "euclidean") == [1]  # nearer class 0's mean, but 1's example


@pytest.mark.parametrize("distance", ["cosine", "euclidean"])
def test_a_tie_goes_to_the_lowest_label(distance):
    support = [[0.0, 1.0], [1.0, 0.0], [-1.0, 0.0]]
    assert nearest([[1.0, 1.0], [-1.0, 1.0]], support, ONEHOT, distance) == [0, 0]


class Flat:
    """A stand-in classification suite whose model's penultimate features are its inputs, flattened."""

    kind, problem, pooled_classes = "supervised", "classification", 7

    def make_model(self, extra_inputs: int = 0, outputs: int | None = None) -> nn.Module:
        return nn.Sequential(nn.Flatten(), nn.Linear(2, outputs or 3))


def test_adapt_yields_one_classifier_per_step_that_the_evaluator_can_vmap():
    support_x = torch.tensor([[[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]], [[0.0, 1.0], [1.0, 0.0], [-1.0, 0.0]]])
    query_x = torch.tensor([[[0.9, 0.1], [-2.0, 0.1]], [[0.9, 0.1], [0.1, 3.0]]])
    tasks = TaskBatch(support_x, torch.arange(3).expand(2, 3), query_x, torch.zeros(2, 2, dtype=torch.long), ways=3)
    learner = NearestNeighbour({"distance": "cosine"})
    state = Flat().make_model(outputs=Flat.pooled_classes).state_dict()
    adapted = list(learner.adapt(Flat(), state, tasks, steps=3))
    assert len(adapted) == 4 and all(a.forward is adapted[0].forward and a.params is adapted[0].params for a in adapted)
    with torch.no_grad():
        predicted = vmap(adapted[0].forward)(adapted[0].params, query_x).argmax(-1)
    assert predicted.tolist() == [[0, 2], [1, 0]]


def test_the_embedding_needs_a_sequential_model_ending_in_a_linear_head():
    assert isinstance(penultimate(nn.Sequential(nn.Linear(2, 4), nn.ReLU(), nn.Linear(4, 3)))[-1], nn.ReLU)
    with pytest.raises(TypeError, match="nn.Sequential"):
        penultimate(nn.Linear(2, 3))


def test_it_loads_through_its_entry_point_and_applies_to_classification_only():
    provided = registry().learners["nearest-neighbour"]
    assert provided.obj is NearestNeighbour and provided.dist == "maml-harness"
    assert NearestNeighbour.applies_to(Omniglot)
    assert not NearestNeighbour.applies_to(Sinusoid) and not NearestNeighbour.applies_to(Navigation2D)


def test_smoke_run_on_omniglot_scores_the_same_classifier_at_every_step(omniglot, tmp_path):
    out = tmp_path / "out"
    assert main(["run", "--suite", "omniglot", "--setting", "5way-1shot", "--learners", "nearest-neighbour",
                 "--profile", "smoke", "--out", str(out), "--quiet"]) == 0
    config = {**Omniglot.settings["5way-1shot"], **Omniglot.profiles["smoke"]}
    rows = sqlite3.connect(out / "results.sqlite").execute("SELECT task, step, value FROM scores").fetchall()
    assert len(rows) == config["eval_tasks"] * (config["eval_steps"] + 1)
    by_task: dict[int, set[float]] = {}
    for task, _, value in rows:
        by_task.setdefault(task, set()).add(value)
    assert all(len(values) == 1 for values in by_task.values())
    assert all(0 <= value <= 100 for _, _, value in rows)
