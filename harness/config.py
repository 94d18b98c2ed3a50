"""Run configuration: runtime defaults, then the suite's profile, then the learner's defaults, then `--set`.

Every config key has one declaration (`Key`): its type, range, allowed values and whether None is allowed. The core
declares the keys it reads itself and the shared vocabulary between suites and learners (`CORE_KEYS`); a suite or
learner declares the keys only it uses as its class attribute `keys`. `runner.configure` checks the merged config
against them at plan time, before anything is written.
"""
from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from harness.errors import UsageError
from harness.functional import VECTORIZE
from harness.keys import TYPES, Key, is_int

RUNTIME_DEFAULTS: Mapping[str, Any] = {
    "vectorize": "auto", "compile": False, "threads": 1, "tf32": False, "checkpoint_every": 1000,
    "checkpoint_seconds": 600,
}
"""Keys every run has, whatever the suite and learner (declared, with their meaning, in `CORE_KEYS`)."""

CORE_KEYS: Mapping[str, Key] = {
    # runtime: every run has them
    "vectorize": Key(str, "the inner loop over tasks (harness.functional)", choices=VECTORIZE),
    "compile": Key(bool, "torch.compile the meta-gradient (faster per step on small models, slow to start)"),
    "threads": Key(int, "torch intra-op threads; 1 is fastest for small models and immune to busy neighbours",
                   low=1, high=1024),
    "tf32": Key(bool, "TF32 matmuls and convolutions on CUDA (faster, about 1e-3 relative error; none on CPU)"),
    "checkpoint_every": Key(int, "meta-iterations between resumable training checkpoints", low=1),
    "checkpoint_seconds": Key(int, "also checkpoint an iteration ending this many seconds of training after the last "
                                   "checkpoint (0: every iteration)", low=0),
    # the protocol: read by the core's trainers and evaluators, or set by suites and read by learners
    "meta_iterations": Key(int, "iterations of the outer loop", low=1),
    "meta_batch": Key(int, "tasks per meta-iteration", low=1),
    "meta_lr": Key(float, "step size of the outer optimiser (Adam)", above=0),
    "train_shots": Key(int, "support examples per task (per class) in training", low=1),
    "train_query": Key(int, "query examples per task (per class) in training", low=1),
    "inner_lr": Key(float, "step size of the first adaptation step", above=0),
    "later_inner_lr": Key(float, "step size of the later adaptation steps at test time", above=0),
    "inner_steps": Key(int, "adaptation steps per task in meta-training", low=1),
    "eval_tasks": Key(int, "frozen test tasks", low=1),
    "eval_shots": Key(list, "support examples per test task (per class), one evaluation each", low=1, distinct=True,
                      ascending=True),
    "eval_steps": Key(int, "adaptation steps at test time (0: none)", low=0),
    "eval_query": Key(int, "held-out examples per test task (per class)", low=1),
    "val_tasks": Key(int, "frozen validation tasks that tune fine-tuning step sizes", low=1),
}
"""The declarations of the core: the runtime keys and the keys the core or more than one kind of plugin reads. A
plugin uses these without declaring them again (if it does, its declaration must agree)."""

UNHASHED = frozenset({"checkpoint_every", "checkpoint_seconds"})
"""Keys that cannot change a run's results, so they do not enter its identity. Nor does a key set to None: a suite
or learner adds an option with the default None (its behaviour before the option) without changing the identity of
the runs stored before it."""


def layers(suite: type, learner: type) -> list[Mapping[str, Any]]:
    """Every config layer the pair (`suite`, `learner`) can merge: the runtime defaults, the suite's settings and
    profiles, the learner's defaults and per-profile defaults."""
    return [RUNTIME_DEFAULTS, *suite.settings.values(), *suite.profiles.values(), learner.defaults,
            *learner.profile_defaults.values()]


def declared(suite: type, learner: type) -> dict[str, Key]:
    """The declarations of the core, `suite` and `learner` (their `keys`); one key declared differently by two of
    them is a plugin bug, reported as a UsageError."""
    out: dict[str, Key] = dict(CORE_KEYS)
    owner = dict.fromkeys(CORE_KEYS, "the core")
    for name, keys in ((f"suite {suite.name}", suite.keys), (f"learner {learner.name}", learner.keys)):
        for key, spec in keys.items():
            if out.setdefault(key, spec) != spec:
                raise UsageError(f"config key {key} is declared as {out[key].allowed()} by {owner[key]} but as "
                                 f"{spec.allowed()} by {name}: a plugin bug; report it to the plugin's authors")
            owner.setdefault(key, name)
    return out


def declarations(suite: type, learner: type) -> dict[str, Key]:
    """The declaration of every key of the pair's config (`layers`). A key that no plugin declares (a plugin bug)
    is checked by the type of its default only, and is left out where that default is None (no type to read)."""
    known = declared(suite, learner)
    out: dict[str, Key] = {}
    for layer in layers(suite, learner):
        for key, value in layer.items():
            spec = known.get(key) or out.get(key) or inferred(value)
            if spec is not None:
                out[key] = spec
    return out


def inferred(default: Any) -> Key | None:
    """The declaration an undeclared key gets from its default: its type alone (None where there is none to infer:
    a None default, or anything but a bool, int, float, str or list of ints)."""
    kind = list if isinstance(default, (list, tuple)) else type(default)
    if kind not in TYPES or (kind is list and not all(is_int(v) for v in default)):
        return None
    return Key(kind, "undeclared: checked by the type of its default")


def parse_assignments(items: Iterable[str]) -> dict[str, str]:
    """`["k=v", ...]` -> {k: v}; a malformed item is a UsageError."""
    out: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise UsageError(f"--set {item!r} is not KEY=VALUE; write e.g. --set meta_iterations=1000")
        out[key.strip()] = value.strip()
    return out


def merge(*layers: Mapping[str, Any], overrides: Mapping[str, str], keys: Mapping[str, Key]) -> dict[str, Any]:
    """The layers merged left to right, then `overrides` (raw strings) read by their keys' declarations in `keys`;
    an unknown or undeclared key is a UsageError."""
    config: dict[str, Any] = {}
    for layer in layers:
        config.update(layer)
    for key, raw in overrides.items():
        if key not in config:
            raise UsageError(f"--set {key}: unknown key; known keys are {', '.join(sorted(config))}")
        if key not in keys:
            raise UsageError(f"--set {key}: no plugin declares what {key} takes, nor does its default "
                             f"{config[key]!r} tell (a plugin bug: it belongs in the plugin's `keys`); "
                             f"leave --set {key} out")
        config[key] = keys[key].parse(key, raw)
    return config


def validate(config: Mapping[str, Any], keys: Mapping[str, Key]) -> None:
    """Every value of `config` fits its declaration in `keys`; the first that does not is a one-line UsageError."""
    for key, value in config.items():
        if key in keys:
            keys[key].check(key, value)
