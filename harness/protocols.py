"""The contract between the core, suites and learners: the protocols and the data that flows between them.

A suite owns the task distribution, the model and the loss; a learner owns meta-training and adaptation; an
evaluator owns the frozen test protocol. They meet only here: no learner imports a suite, and the core imports
neither.
"""
from __future__ import annotations

import functools
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, ClassVar, Protocol

import torch
from torch import Tensor, nn

from harness.errors import UsageError
from harness.keys import Key

Params = dict[str, Tensor]
"""Parameters by name, as `nn.Module.named_parameters` gives them; a leading task dimension where batched."""

Forward = Callable[[Params, Tensor], Tensor]
"""A functional model: (one task's parameters, inputs) -> outputs."""


@dataclass(frozen=True)
class TaskBatch:
    """Supervised tasks stacked along dimension 0: support (the examples to adapt on) and query (to score on).

    The support set is ordered shot by shot: `ways` examples per shot (one per class for N-way classification, one
    for regression), so the first k shots are a prefix. `features` holds each task's true parameters (e.g. sinusoid
    amplitude and phase) for learners that may see them; `support_classes` / `query_classes` hold, for
    classification, each example's class among all classes of its split (what a pretrained classifier learns).
    """

    support_x: Tensor
    support_y: Tensor
    query_x: Tensor
    query_y: Tensor
    features: Tensor | None = None
    support_classes: Tensor | None = None
    query_classes: Tensor | None = None
    ways: int = 1
    renew: Callable[[Forward, Params], tuple[Tensor, Tensor]] | None = None
    """For tasks whose support depends on the model being adapted (RL: trajectories sampled by the adapted policy):
    (forward, per-task params) -> that model's support (x, y), called before each adaptation step; `support_x` then
    only fixes the number of tasks and of shots."""

    TENSORS: ClassVar[tuple[str, ...]] = ("support_x", "support_y", "query_x", "query_y", "features",
                                          "support_classes", "query_classes")

    def __len__(self) -> int:
        return self.support_x.shape[0]

    @property
    def n_shots(self) -> int:
        """Support examples per class (per task for regression)."""
        return self.support_x.shape[1] // self.ways

    def shots(self, k: int) -> TaskBatch:
        """The same tasks with only the first `k` shots of support (test tasks nest: 5-shot is a prefix of 20-shot)."""
        n = k * self.ways
        cut = lambda t: None if t is None else t[:, :n]
        return replace(self, support_x=self.support_x[:, :n], support_y=self.support_y[:, :n],
                       support_classes=cut(self.support_classes))

    def renewer(self, forward: Forward) -> Callable[[Params], tuple[Tensor, Tensor]] | None:
        """`renew` bound to the model `forward` (what `adapt_batch` takes), or None for a fixed support set."""
        return None if self.renew is None else functools.partial(self.renew, forward)

    def map(self, fn: Callable[[Tensor], Tensor]) -> TaskBatch:
        """`fn` applied to every tensor field."""
        return replace(self, **{f: fn(t) for f in self.TENSORS if (t := getattr(self, f)) is not None})

    def to(self, device: torch.device | str) -> TaskBatch:
        return self.map(lambda t: t.to(device))

    @staticmethod
    def cat(batches: Sequence[TaskBatch]) -> TaskBatch:
        """Batches of the same suite and sizes joined along the task dimension."""
        first = batches[0]
        joined = {f: torch.cat([getattr(b, f) for b in batches]) for f in TaskBatch.TENSORS
                  if getattr(first, f) is not None}
        return replace(first, **joined)


@dataclass(frozen=True)
class Adapted:
    """What a learner hands the evaluator after k adaptation steps: a functional model and per-task parameters."""

    forward: Forward
    params: Params  # every tensor has a leading task dimension


@dataclass
class Score:
    """One long-form result: a metric of one test task at a number of shots and adaptation steps."""

    task: int
    shots: int
    step: int
    metric: str
    value: float


class Suite(Protocol):
    """What every suite is: a task distribution with its model, loss and test protocol. A suite class subclasses
    `SupervisedSuite` or `RLSuite` (by its `kind`), and so inherits the defaults of the optional members.

    `profiles` maps "smoke" | "quick" | "paper" to the hyperparameters of that profile (training and evaluation);
    every key there may be overridden with `--set key=value`, within its declaration (`keys`).
    """

    name: ClassVar[str]
    kind: ClassVar[str]  # "supervised" (`SupervisedSuite`) | "rl" (`RLSuite`)
    problem: ClassVar[str]  # supervised suites: "regression" | "classification"; RL: "control"
    metric: ClassVar[str]  # the name of what the evaluator measures, e.g. "mse", "accuracy" or "return"
    lower_is_better: ClassVar[bool]  # the direction of `metric`
    feature_names: ClassVar[tuple[str, ...]]  # names of the columns of `TaskBatch.features`; () when there are none
    profiles: ClassVar[Mapping[str, Mapping[str, Any]]]

    # optional, with these defaults:
    settings: ClassVar[Mapping[str, Mapping[str, Any]]] = {}
    """Named variants of the problem (e.g. 5-way 1-shot), each a config layer applied before the profile; the first
    is the default."""
    keys: ClassVar[Mapping[str, Key]] = {}
    """The declaration of every key of `profiles` and `settings` that `harness.config.CORE_KEYS` does not declare;
    the runner checks defaults and `--set` values against it at plan time. A key declared twice (by the core, a
    suite or a learner) must be declared alike; an undeclared one is a plugin bug (checked by its default's type)."""

    def __init__(self, config: Mapping[str, Any]) -> None: ...

    @property
    def pooled_classes(self) -> int:
        """Classification: the number of distinct classes of the "train" split (the output size of a classifier
        trained on all of them, as `TaskBatch.support_classes` numbers them); 0 otherwise."""

    def make_model(self, extra_inputs: int = 0, outputs: int | None = None) -> nn.Module:
        """A freshly initialised model (from the global RNG: the runner seeds it); `extra_inputs` widens the input;
        `outputs` replaces the output size of a task (e.g. `pooled_classes` for a classifier over all classes)."""

    def context_shape(self, size: int) -> tuple[int, ...]:
        """Optional. The shape of a learned context of `size` extra inputs (default: a vector; an image suite makes it
        `size` free image channels, which batch norm cannot cancel)."""
        return (size,)

    def append_inputs(self, x: Tensor, extra: Tensor) -> Tensor:
        """One task's inputs `x` with `extra` appended to each: a vector (as features, or as constant channels of an
        image) or a tensor of `context_shape` (e.g. free image channels)."""

    def loss(self, outputs: Tensor, targets: Tensor) -> Tensor:
        """The training loss of one task (a scalar)."""

    def evaluator(self, device: torch.device) -> Evaluator:
        """The frozen test protocol of this suite under its config."""


class SupervisedSuite(Suite, Protocol):
    """A suite of fixed examples (kind "supervised"): learners train on `sample`d tasks with the core's trainer."""

    def sample(self, split: str, n_tasks: int, generator: torch.Generator, shots: int, query: int) -> TaskBatch:
        """`n_tasks` tasks of `split` ("train" | "val" | "test") with `shots` support and `query` query examples
        each (per class, for classification), every random draw taken from `generator`."""

    def score(self, outputs: Tensor, targets: Tensor) -> Tensor:
        """The test metric of each task of a batch (task dimension 0) -> one value per task."""


class RLSuite(Suite, Protocol):
    """A suite whose examples come from acting (kind "rl"): it brings its own outer loop (`trainer`), an evaluator
    that rolls out the adapted policies, and tasks whose support comes from `TaskBatch.renew` (`plugins.rl`)."""

    def trainer(self, config: Mapping[str, Any]) -> Any:
        """The suite's outer loop, a `harness.training.MetaTrainer` (RL: rollouts and a TRPO step)."""


class Learner(Protocol):
    """A meta-learner. Constructed once per run with the merged config (suite profile, learner defaults, --set). A
    learner class subclasses this, and so inherits the defaults of the optional members."""

    name: ClassVar[str]
    description: ClassVar[str]
    defaults: ClassVar[Mapping[str, Any]]  # the learner's own config keys and their default values

    # optional, with these defaults:
    profile_defaults: ClassVar[Mapping[str, Mapping[str, Any]]] = {}
    """Per-profile values of the learner's keys."""
    keys: ClassVar[Mapping[str, Key]] = {}
    """The declaration of each of the learner's keys, as `Suite.keys`."""

    def __init__(self, config: Mapping[str, Any]) -> None: ...

    @classmethod
    def applies_to(cls, suite: type[Suite]) -> bool:
        """Whether this learner can run on suites of class `suite` (an inapplicable pair is a usage error)."""

    def meta_train(self, suite: Suite, ctx: TrainContext) -> dict[str, Tensor]:
        """Meta-train and return the trained state: plain tensors, loadable with `torch.load(weights_only=True)`."""

    def adapt(self, suite: Suite, state: Mapping[str, Tensor], tasks: TaskBatch, steps: int) -> Iterator[Adapted]:
        """Yield the model adapted to every task of `tasks` after 0, 1, ..., `steps` gradient steps on its support."""


class Dataset(Protocol):
    """A dataset a plugin can prepare (`python -m harness data prepare NAME`): an instance of a subclass of this."""

    name: ClassVar[str]
    description: ClassVar[str]

    def prepare(self, data: Path, cache: Path) -> Path:
        """Read the raw archives from `data`, write the prepared dataset under `cache` and return its folder; bad or
        missing input is a `harness.errors.UsageError` saying what to put where."""

    def download(self, data: Path) -> Path:
        """Optional. Fetch the official archives into `data`, checking their published checksums (default: none to
        fetch, a UsageError)."""
        raise UsageError(f"dataset {self.name} cannot be downloaded; put its archives in {data}")


SUITE_KINDS: Mapping[str, type] = {"supervised": SupervisedSuite, "rl": RLSuite}
OPTIONAL = frozenset({"settings", "keys", "context_shape", "profile_defaults", "download"})
"""Members a plugin class may leave to its protocol's default."""


def violations(plugin: type, protocol: type) -> list[str]:
    """How the class `plugin` breaks the contract of `protocol` (`Learner`, `Dataset`, or `Suite` with the protocol of
    its `kind`): not a subclass of it, or a required member neither defined nor inherited from another class. Empty
    when it conforms."""
    if protocol is Suite:
        kind = getattr(plugin, "kind", None)
        if kind not in SUITE_KINDS:
            return [f"kind {kind!r} is not one of {', '.join(SUITE_KINDS)}"]
        protocol = SUITE_KINDS[kind]
    if protocol not in plugin.__mro__:
        return [f"not a subclass of harness.protocols.{protocol.__name__}"]
    return [f"missing {name}" for name in sorted(_members(protocol) - OPTIONAL)
            if _owner(plugin, name) in (None, *_protocols(protocol))]


def _protocols(protocol: type) -> list[type]:
    return [c for c in protocol.__mro__ if getattr(c, "_is_protocol", False) and c is not Protocol]


def _members(protocol: type) -> set[str]:
    """What `protocol` and the protocols it extends declare: annotated attributes, methods and properties."""
    names: set[str] = set()
    for cls in _protocols(protocol):
        names |= set(cls.__dict__.get("__annotations__", {}))
        names |= {n for n, v in vars(cls).items() if callable(v) or isinstance(v, (property, classmethod))}
    return {n for n in names if not n.startswith("_")}


def _owner(plugin: type, name: str) -> type | None:
    """The first class of `plugin`'s MRO that defines `name`."""
    return next((cls for cls in plugin.__mro__ if name in vars(cls)), None)


class Evaluator(Protocol):
    """The fixed test protocol of a suite: identical test tasks for every learner and run."""

    def tasks(self, suite: Suite) -> TaskBatch:
        """The frozen test tasks (a pure function of the suite and its config)."""

    def evaluate(
        self, suite: Suite, learner: Learner, state: Mapping[str, Tensor], progress: Progress
    ) -> Iterator[Score]:
        """Score `learner` (with trained `state`) on every frozen test task, shot count and step."""


class Progress(Protocol):
    """A progress bar factory: `progress(total, desc, initial)` gives an object with `update(n)` and `close()`, standing
    at `initial` of `total` (work done before, e.g. by the run a checkpoint resumes: not counted in its rate)."""

    def __call__(self, total: int, desc: str, initial: int = 0) -> Any: ...


class TrainContext(Protocol):
    """What the runner gives a learner for training: config, device, seeded randomness, progress and checkpoints."""

    config: Mapping[str, Any]
    device: torch.device
    seed: int

    def generator(self, iteration: int, stream: str = "batch") -> torch.Generator:
        """A generator for `iteration`'s draws, seeded by (suite, seed, stream, iteration) only: resuming changes
        nothing, and every learner run with the same seed sees the same training tasks."""

    def iterations(self, start: int, total: int, desc: str = "meta-train") -> Iterator[int]:
        """Iterations `start..total-1` with a progress bar; checkpoints become due on the runner's schedule. After a
        Ctrl-C the current iteration finishes (its checkpoint due) and the loop stops with KeyboardInterrupt."""

    def log(self, iteration: int, loss: float) -> None:
        """Record the training loss of `iteration`; a non-finite loss stops the run as diverged."""

    def record(self, key: str, value: Any) -> None:
        """Keep a JSON-serialisable fact about this run in the results store (e.g. a tuned step size and why)."""

    def checkpoint_due(self, iteration: int) -> bool:
        """Whether a training checkpoint should be saved after `iteration`: every `checkpoint_every` iterations, once
        `checkpoint_seconds` of training have passed since the last one, or to stop after Ctrl-C."""

    def save_checkpoint(self, state: Mapping[str, Any]) -> None:
        """Atomically save a resumable training checkpoint (tensors, ints, floats, strings, nested dicts)."""

    def load_checkpoint(self) -> dict[str, Any] | None:
        """The last training checkpoint of this run, or None when starting fresh."""
