"""Omniglot few-shot classification (paper section 5.2): N-way K-shot episodes of handwritten characters.

Characters are split by the committed manifest (1,100 train / 100 val / 423 test, irrespective of alphabet); each
class drawn into an episode gets a random rotation of 0/90/180/270 degrees (a new class, as in the paper); K support
and K query drawings per class (as the reference code drew them). Models: the 4-block strided conv net or the
256-128-64-64 fully connected net (`model=conv|fc`), batch norm on batch statistics. Metric: accuracy in percent on
the query drawings of 600 frozen test episodes per setting.
"""
from __future__ import annotations

import hashlib
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from harness import hookimpl
from harness.data import cache_dir, data_dir
from harness.errors import UsageError
from harness.evaluation import FewShotEvaluator
from harness.protocols import Key, SupervisedSuite, TaskBatch
from plugins.omniglot_data import SIZE, OmniglotData, load_split
from plugins.vision import ImageClassification, conv_net, fc_net

ROTATIONS = 4
EPISODES = Path(__file__).parent / "reference" / "omniglot-test-episodes.json"
"""sha256 of the 600 frozen test episodes of each setting (`Omniglot.test_episodes_digest`)."""


def _setting(ways: int, shots: int) -> dict[str, Any]:
    """The paper's hyperparameters (appendix A.1) of N-way K-shot: 5-way takes 1 inner step of 0.4 in training and
    3 at test, meta-batch 32; 20-way takes 5 steps of 0.1 in training and at test, meta-batch 16."""
    five = ways == 5
    return {"ways": ways, "train_shots": shots, "train_query": shots, "eval_shots": [shots], "eval_query": shots,
            "inner_lr": 0.4 if five else 0.1, "inner_steps": 1 if five else 5, "eval_steps": 3 if five else 5,
            "meta_batch": 32 if five else 16}


PAPER = {"meta_iterations": 60_000, "meta_lr": 1e-3, "eval_tasks": 600, "val_tasks": 100, "model": "conv",
         "rotate": True, "threads": 2, "compile": False}


class Omniglot(ImageClassification, SupervisedSuite):
    """Omniglot N-way K-shot classification (paper section 5.2), conv or fully connected model, accuracy (%)."""

    name = "omniglot"
    kind = "supervised"
    problem = "classification"
    size = SIZE
    feature_names = ()
    settings = {f"{n}way-{k}shot": _setting(n, k) for n in (5, 20) for k in (1, 5)}
    profiles = {
        # smoke: vmap directly (timing both strategies would cost more than its 2 iterations)
        "smoke": {**PAPER, "meta_iterations": 2, "meta_batch": 2, "eval_tasks": 4, "eval_steps": 2, "val_tasks": 2,
                  "threads": 1, "vectorize": "vmap"},
        "quick": {**PAPER, "meta_iterations": 2_000},  # 5-way 1-shot conv MAML: 96.5% in 12 min on 2 CPU cores
        "paper": PAPER,
    }
    models = ("conv", "fc")
    keys: Mapping[str, Key] = {
        "ways": Key(int, "classes per episode (at most the 100 characters of the smallest split, val)", low=2,
                    high=100),
        "model": Key(str, "the 4-block conv net or the 256-128-64-64 fully connected net", choices=models),
        "rotate": Key(bool, "each class drawn at a random rotation by a multiple of 90 degrees (a new class)"),
    }

    def __init__(self, config: Mapping[str, Any]) -> None:
        if config["model"] not in self.models:
            raise UsageError(f"model={config['model']!r} is not a model of omniglot; set --set model=conv or model=fc")
        self.config = config
        self.ways: int = config["ways"]
        self._images: dict[str, Tensor] | None = None
        if not (cache_dir() / "omniglot").exists():
            OmniglotData.archives(data_dir())  # missing data: a UsageError now, before any run starts

    @property
    def pooled_classes(self) -> int:
        return len(load_split()["train"]) * (ROTATIONS if self.config["rotate"] else 1)

    def images(self, split: str) -> Tensor:
        """uint8 [characters of `split`, 20, 28, 28], 1 = ink; prepared into the cache on first use."""
        if self._images is None:
            data = OmniglotData()
            target = cache_dir() / "omniglot"
            if not target.exists():
                print(f"preparing Omniglot into {target} (once)", file=sys.stderr)
            pixels, names = data.load(data.prepare(data_dir(), cache_dir()))
            index = {name: i for i, name in enumerate(names)}
            self._images = {s: pixels[[index[c] for c in chars]] for s, chars in load_split().items()}
        return self._images[split]

    def make_model(self, extra_inputs: int = 0, outputs: int | None = None) -> nn.Module:
        channels, outputs = 1 + extra_inputs, outputs or self.ways
        if self.config["model"] == "conv":
            return conv_net(channels, outputs)
        return fc_net(channels * SIZE * SIZE, outputs)

    def sample(self, split: str, n_tasks: int, generator: torch.Generator, shots: int, query: int) -> TaskBatch:
        """Episodes: `ways` distinct characters of `split`, each rotated by a random multiple of 90 degrees, with
        `shots` support and `query` query drawings each (distinct drawings), labelled 0..ways-1 in the order drawn."""
        images = self.images(split)
        n, per_class = self.ways, shots + query
        classes = torch.rand(n_tasks, images.shape[0], generator=generator).argsort(1)[:, :n]
        drawings = torch.rand(n_tasks, n, images.shape[1], generator=generator).argsort(2)[..., :per_class]
        pictures = images[classes.unsqueeze(-1), drawings].float()  # [tasks, ways, shots + query, 28, 28]
        rotations = torch.zeros_like(classes)
        if self.config["rotate"]:
            rotations = torch.randint(ROTATIONS, classes.shape, generator=generator)
            for r in range(1, ROTATIONS):
                chosen = rotations == r
                pictures[chosen] = torch.rot90(pictures[chosen], r, dims=(-2, -1))
        ids = classes * (ROTATIONS if self.config["rotate"] else 1) + rotations
        labels = torch.arange(n).expand(n_tasks, n)

        def shot_major(part: Tensor, k: int) -> tuple[Tensor, Tensor, Tensor]:
            x = part.transpose(1, 2).reshape(n_tasks, k * n, 1, SIZE, SIZE)
            return x, labels.repeat(1, k), ids.repeat(1, k)

        sx, sy, sc = shot_major(pictures[:, :, :shots], shots)
        qx, qy, qc = shot_major(pictures[:, :, shots:], query)
        return TaskBatch(sx, sy, qx, qy, support_classes=sc, query_classes=qc, ways=n)

    def evaluator(self, device: torch.device) -> FewShotEvaluator:
        return FewShotEvaluator.from_config(self.config, device)

    def test_episodes_digest(self) -> str:
        """sha256 of this setting's frozen test episodes (pixels, labels, classes): compared in the tests with the
        committed `EPISODES` manifest, so a change to sampling cannot silently change the test set."""
        tasks = self.evaluator(torch.device("cpu")).tasks(self)
        digest = hashlib.sha256()
        for field in TaskBatch.TENSORS:
            if (tensor := getattr(tasks, field)) is not None:
                digest.update(tensor.to(torch.uint8 if field.endswith("_x") else torch.int64).numpy().tobytes())
        return digest.hexdigest()


@hookimpl
def harness_suites() -> list[type]:
    return [Omniglot]


@hookimpl
def harness_datasets() -> list[object]:
    return [OmniglotData()]
