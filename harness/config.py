"""Run configuration: runtime defaults, then the suite's profile, then the learner's defaults, then `--set`.

Every config key has one declaration (`Key`): its type, range, allowed values and whether None is allowed. The core
declares the keys it reads itself and the shared vocabulary between suites and learners (`CORE_KEYS`); a suite or
learner declares the keys only it uses as its class attribute `keys`. `runner.configure` checks the merged config
against them at plan time, before anything is written.
"""
from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from harness.errors import UsageError
from harness.functional import VECTORIZE

INT_MAX = 2**31 - 1
"""The largest int any key takes, whatever its declaration: what torch and a C int (`torch.set_num_threads`) hold."""

TRUE_WORDS, FALSE_WORDS = ("true", "yes", "on", "1"), ("false", "no", "off", "0")
TYPES = (bool, int, float, str, list)


@dataclass(frozen=True)
class Key:
    """The one declaration of a config key.

    `type` is bool, int, float, str or list (a list of ints, written `--set key=5,10,20`). A number, or each entry
    of a list, must be >= `low`, > `above`, <= `high` and < `below` where these are given; a float must be finite
    and an int at most `INT_MAX`. A str must be one of `choices` where these are given. A list must be non-empty,
    with no entry twice where `distinct`, in ascending order where `ascending`. None is allowed only where
    `optional` (`--set key=none`). `doc` says what the key means; two declarations agree when all else is equal.
    """

    type: type
    doc: str = field(default="", compare=False)
    low: float | None = None
    above: float | None = None
    high: float | None = None
    below: float | None = None
    choices: tuple[str, ...] = ()
    distinct: bool = False
    ascending: bool = False
    optional: bool = False

    def __post_init__(self) -> None:
        if self.type not in TYPES:
            raise TypeError(f"Key type must be one of {', '.join(t.__name__ for t in TYPES)}, not {self.type!r}")

    def parse(self, key: str, raw: str) -> Any:
        """`raw`, a `--set` value, read as this key's type; a malformed one is a UsageError (`check` the range)."""
        text = raw.strip()
        if self.optional and text.lower() == "none":
            return None
        try:
            return self._read(text)
        except ValueError:
            raise self._refuse(key, raw, f"is not {self._noun()}") from None

    def _read(self, text: str) -> Any:
        if self.type is bool:
            if text.lower() not in TRUE_WORDS + FALSE_WORDS:
                raise ValueError(text)
            return text.lower() in TRUE_WORDS
        if self.type is list:
            return [int(v) for v in text.split(",")]
        return self.type(text)

    def check(self, key: str, value: Any) -> None:
        """Raise a one-line UsageError naming `key`, `value`, what is allowed and the fix, unless `value` fits."""
        if value is None:
            if not self.optional:
                raise self._refuse(key, value, "is not allowed")
            return
        if not self._has_type(value):
            raise self._refuse(key, value, f"is not {self._noun()}")
        numbers = value if self.type is list else [value] if self.type in (int, float) else []
        for number in numbers:
            if isinstance(number, float) and not math.isfinite(number):
                raise self._refuse(key, value, "is not finite")
            if not self._in_range(number):
                raise self._refuse(key, value, "is out of range")
        if self.choices and value not in self.choices:
            raise self._refuse(key, value, "is not one of the choices")
        if self.type is list:
            self._check_list(key, value)

    def _has_type(self, value: Any) -> bool:
        if self.type is list:
            return isinstance(value, (list, tuple)) and all(_is_int(v) for v in value)
        if self.type is int:
            return _is_int(value)
        if self.type is float:
            return isinstance(value, (int, float)) and not isinstance(value, bool)
        return isinstance(value, self.type)

    def _in_range(self, number: float) -> bool:
        return ((self.low is None or number >= self.low) and (self.above is None or number > self.above)
                and (self.high is None or number <= self.high) and (self.below is None or number < self.below)
                and (self.type is float or number <= INT_MAX))

    def _check_list(self, key: str, value: Sequence[int]) -> None:
        if not value:
            raise self._refuse(key, value, "is empty")
        if self.distinct and len(set(value)) != len(value):
            raise self._refuse(key, value, "repeats an entry")
        if self.ascending and list(value) != sorted(value):
            raise self._refuse(key, value, "is not in ascending order")

    def _noun(self) -> str:
        return {bool: "a bool", int: "an int", float: "a float", str: "text",
                list: "a comma-separated list of ints"}[self.type]

    def allowed(self) -> str:
        """What this key takes, in words, e.g. "int in [1, 2147483647]" or "one of conv, fc"."""
        if self.choices:
            text = f"one of {', '.join(self.choices)}"
        elif self.type is bool:
            text = "bool (true or false)"
        elif self.type is list:
            order = ("distinct " if self.distinct else "") + ("ascending " if self.ascending else "")
            text = f"comma-separated list of {order}ints {self._interval()}"
        elif self.type is str:
            text = "text"
        else:
            text = f"{'finite float' if self.type is float else 'int'} {self._interval()}".rstrip()
        return text + (" or none" if self.optional else "")

    def _interval(self) -> str:
        lower = ("[", self.low) if self.low is not None else ("(", self.above) if self.above is not None else None
        upper = (self.high, "]") if self.high is not None else (self.below, ")") if self.below is not None else None
        if self.type is not float and (upper is None or upper[0] > INT_MAX):
            upper = (INT_MAX, "]")
        if lower and upper:
            return f"in {lower[0]}{lower[1]}, {upper[0]}{upper[1]}"
        if lower:
            return f"{'>=' if lower[0] == '[' else '>'} {lower[1]}"
        return f"{'<=' if upper[1] == ']' else '<'} {upper[0]}" if upper else ""

    def _refuse(self, key: str, value: Any, reason: str) -> UsageError:
        """The one-line error for `value` of `key`: what is wrong, what is allowed, and the fix."""
        shown = repr(value)
        shown = shown if len(shown) <= 60 else shown[:57] + "..."
        return UsageError(f"{key}={shown} {reason}: {key} takes {self.allowed()}; set it with --set {key}=VALUE")


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


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
    return [RUNTIME_DEFAULTS, *getattr(suite, "settings", {}).values(), *suite.profiles.values(), learner.defaults,
            *getattr(learner, "profile_defaults", {}).values()]


def declared(suite: type, learner: type) -> dict[str, Key]:
    """The declarations of the core, `suite` and `learner` (their `keys`); one key declared differently by two of
    them is a plugin bug, reported as a UsageError."""
    out: dict[str, Key] = dict(CORE_KEYS)
    owner = dict.fromkeys(CORE_KEYS, "the core")
    for name, keys in ((f"suite {suite.name}", getattr(suite, "keys", {})),
                       (f"learner {learner.name}", getattr(learner, "keys", {}))):
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
    if kind not in TYPES or (kind is list and not all(_is_int(v) for v in default)):
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
