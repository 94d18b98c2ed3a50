"""MiniImagenet few-shot classification (paper section 5.2): 5-way 1-shot and 5-shot episodes of 84x84 photos.

Classes come from the Ravi & Larochelle split (64 train / 16 val / 20 test, `plugins.miniimagenet_data`). An episode
draws `ways` distinct classes of its split and `shots` support and `query` query images of each (all distinct),
labelled 0..ways-1 in the order drawn. Inputs are the RGB pixels scaled to [0, 1] floats and nothing else: that is
what the paper's reference code fed its net (`/ 255`), and the batch norm after every convolution normalises the
features anyway (a per-channel mean/std normalisation of the input would only rescale the first convolution's
gradient, so it would change the meaning of the paper's step sizes, not what the net can represent). Model: 4 x
[3x3 conv, 32 filters, batch norm on batch statistics, ReLU, 2x2 max-pool] and a linear head
(`plugins.vision.pooled_conv_net`). Metric: accuracy in percent on the 15 query images per class of 600 frozen test
episodes per setting, scored a chunk of episodes at a time (`ChunkedFewShotEvaluator`).
"""
from __future__ import annotations

import hashlib
import sys
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from torch.func import vmap

from harness import hookimpl
from harness.data import cache_dir, data_dir
from harness.evaluation import FewShotEvaluator
from harness.protocols import Key, Learner, Progress, Score, Suite, SupervisedSuite, TaskBatch
from harness.seeding import generator
from plugins.miniimagenet_data import FOLDER, SIZE, MiniImagenetData, load_split
from plugins.vision import ImageClassification, pooled_conv_net

EPISODES = Path(__file__).parent / "reference" / "miniimagenet-test-episodes.json"
"""sha256 of the 600 frozen test episodes of each setting (`MiniImagenet.test_episodes_digest`)."""


def _setting(shots: int) -> dict[str, Any]:
    """The paper's hyperparameters (section 5.2, appendix A.1) of 5-way K-shot: inner step 0.01, 5 steps in training
    and 10 at test, 15 query images per class, meta-batch 4 (1-shot) or 2 (5-shot)."""
    return {"ways": 5, "train_shots": shots, "train_query": 15, "eval_shots": [shots], "eval_query": 15,
            "inner_lr": 0.01, "inner_steps": 5, "eval_steps": 10, "meta_batch": 4 if shots == 1 else 2}


PAPER = {"meta_iterations": 60_000, "meta_lr": 1e-3, "eval_tasks": 600, "val_tasks": 50, "threads": 1,
         "compile": False}
"""The paper's budget. One intra-op thread: two are faster on an idle CPU but many times slower beside other jobs
(OpenMP threads waiting on each other; measured in docs/results.md, "Results: MiniImagenet"). 50 validation tasks
tune the fine-tuning step (`harness.finetune`, a chunk of tasks at a time)."""


def float_images(pixels: Tensor) -> Tensor:
    """uint8 [..., 84, 84, 3] (RGB) -> float [..., 3, 84, 84] in [0, 1], each image stored channels-last (NHWC), as
    the model's weights are: faster meta-iterations on the CPU than contiguous NCHW, the same numbers to rounding
    (benchmarks/test_miniimagenet_iteration.py)."""
    return pixels.float().div_(255).movedim(-1, -3)


def channels_last(x: Tensor) -> Tensor:
    """`x` [..., C, H, W] with each image stored channels-last (what `float_images` gives; `torch.cat` does not keep
    it for more than 4 dimensions); other tensors as they are."""
    return x.movedim(-3, -1).contiguous().movedim(-1, -3) if x.is_floating_point() and x.dim() >= 4 else x


class MiniImagenet(ImageClassification, SupervisedSuite):
    """MiniImagenet 5-way K-shot classification (paper section 5.2), 4-block conv net with max-pooling, accuracy (%)."""

    name = "miniimagenet"
    kind = "supervised"
    problem = "classification"
    size = SIZE
    feature_names = ()
    settings = {f"5way-{k}shot": _setting(k) for k in (1, 5)}
    profiles = {
        # smoke: one inner step, 1 query image per class, vmap directly (timing both strategies costs more); one
        # validation task, as tuning the fine-tuning step (14 candidates) is most of a pretrain or scratch smoke run
        "smoke": {**PAPER, "meta_iterations": 2, "meta_batch": 2, "inner_steps": 1, "train_query": 1,
                  "eval_tasks": 2, "eval_steps": 2, "eval_query": 1, "val_tasks": 1, "vectorize": "vmap"},
        # quick: each learner under 2 hours on the 2-core CPU at one thread (the paces that set this budget are in
        # docs/results.md, "Results: MiniImagenet"); the per-task loop, faster than vmap and needing half its memory
        "quick": {**PAPER, "meta_iterations": 1_200, "eval_tasks": 200, "val_tasks": 10, "vectorize": "loop"},
        "paper": PAPER,
    }
    keys: Mapping[str, Key] = {
        "ways": Key(int, "classes per episode (at most the 16 classes of the smallest split, val)", low=2, high=16),
    }

    def __init__(self, config: Mapping[str, Any]) -> None:
        self.config = config
        self.ways: int = config["ways"]
        self._images: dict[str, Tensor] | None = None
        if not (cache_dir() / FOLDER).exists():
            MiniImagenetData.source(data_dir())  # missing data: a UsageError now, before any run starts

    @property
    def pooled_classes(self) -> int:
        return len(load_split()["train"])

    def images(self, split: str) -> Tensor:
        """uint8 [classes of `split`, 600, 84, 84, 3] (RGB), memory-mapped; prepared into the cache on first use."""
        if self._images is None:
            data = MiniImagenetData()
            if not (target := cache_dir() / FOLDER).exists():
                print(f"preparing MiniImagenet into {target} (once)", file=sys.stderr)
            self._images = data.load(data.prepare(data_dir(), cache_dir()))
        return self._images[split]

    def make_model(self, extra_inputs: int = 0, outputs: int | None = None) -> nn.Module:
        net = pooled_conv_net(3 + extra_inputs, outputs or self.ways, size=SIZE)
        return net.to(memory_format=torch.channels_last)  # as `float_images` stores the images

    def sample(self, split: str, n_tasks: int, generator: torch.Generator, shots: int, query: int) -> TaskBatch:
        """Episodes: `ways` distinct classes of `split`, `shots` support and `query` query images of each (distinct
        images), labelled 0..ways-1 in the order drawn; pixels float [0, 1], [tasks, examples, 3, 84, 84]."""
        pixels, labels, classes = self.episodes(split, n_tasks, generator, shots, query)
        n = shots * self.ways
        return TaskBatch(float_images(pixels[:, :n]), labels[:, :n], float_images(pixels[:, n:]), labels[:, n:],
                         support_classes=classes[:, :n],
                         query_classes=classes[:, n:], ways=self.ways)

    def episodes(self, split: str, n_tasks: int, generator: torch.Generator, shots: int, query: int,
                 ) -> tuple[Tensor, Tensor, Tensor]:
        """What `sample` draws, as stored: (pixels uint8 [tasks, (shots + query) * ways, 84, 84, 3], labels [tasks,
        examples], classes among the split's [tasks, examples]); support then query, each ordered shot by shot
        (`ways` images per shot)."""
        images = self.images(split)
        n, per_class = self.ways, shots + query
        classes = torch.rand(n_tasks, images.shape[0], generator=generator).argsort(1)[:, :n]
        drawn = torch.rand(n_tasks, n, images.shape[1], generator=generator).argsort(2)[..., :per_class]
        rows = (classes.unsqueeze(-1) * images.shape[1] + drawn).transpose(1, 2).flatten()  # shot by shot
        pixels = images.view(-1, SIZE * SIZE * 3).index_select(0, rows)  # whole images: memcpy, not per byte
        labels = torch.arange(n).repeat(per_class).expand(n_tasks, -1)
        return pixels.view(n_tasks, per_class * n, SIZE, SIZE, 3), labels, classes.repeat(1, per_class)

    def evaluator(self, device: torch.device) -> ChunkedFewShotEvaluator:
        return ChunkedFewShotEvaluator.from_config(self.config, device)

    def test_episodes_digest(self) -> str:
        """sha256 of this setting's frozen test episodes (pixels, labels, classes of each, as the evaluator draws
        them): compared in the tests with the committed `EPISODES` manifest, so a change to sampling cannot silently
        change the test set."""
        cfg, digest = self.config, hashlib.sha256()
        for i in range(cfg["eval_tasks"]):
            for tensor in self.episodes("test", 1, generator(self.name, "test", i), max(cfg["eval_shots"]),
                                        cfg["eval_query"]):
                digest.update(tensor.contiguous().numpy().tobytes())
        return digest.hexdigest()


@dataclass(frozen=True)
class ChunkedFewShotEvaluator(FewShotEvaluator):
    """`FewShotEvaluator` on `chunk` test episodes at a time, with the same frozen episodes and scores: 600 episodes of
    80-100 float images are 4-5 GB, and scoring the query images of one episode takes about 0.2 GB of activations."""

    chunk: int = 5

    def episodes(self, suite: Suite, start: int, stop: int) -> TaskBatch:
        """Test episodes start..stop-1, each drawn as `harness.evaluation.frozen_tasks` draws it."""
        return TaskBatch.cat([suite.sample("test", 1, generator(suite.name, "test", i), max(self.shots), self.query)
                              for i in range(start, stop)]).map(channels_last).to(self.device)

    def evaluate(self, suite: Suite, learner: Learner, state: Mapping[str, Tensor], progress: Progress,
                 ) -> Iterator[Score]:
        bar = progress(self.n_tasks * len(self.shots), "evaluate")
        for start in range(0, self.n_tasks, self.chunk):
            tasks = self.episodes(suite, start, min(start + self.chunk, self.n_tasks))
            for k in self.shots:
                for step, adapted in enumerate(learner.adapt(suite, state, tasks.shots(k), self.steps)):
                    with torch.no_grad():
                        values = suite.score(vmap(adapted.forward)(adapted.params, tasks.query_x), tasks.query_y)
                    yield from (Score(start + i, k, step, suite.metric, v) for i, v in enumerate(values.tolist()))
                bar.update(len(tasks))
        bar.close()


@hookimpl
def harness_suites() -> list[type]:
    return [MiniImagenet]


@hookimpl
def harness_datasets() -> list[object]:
    return [MiniImagenetData()]
