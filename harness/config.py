"""Run configuration: runtime defaults, then the suite's profile, then the learner's defaults, then `--set`."""
from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from harness.errors import UsageError

RUNTIME_DEFAULTS: Mapping[str, Any] = {
    "vectorize": "auto",  # the inner loop over tasks: auto | vmap | loop (see harness.functional)
    "compile": False,  # torch.compile the meta-gradient (faster per step on small models, slow to start)
    "threads": 1,  # torch intra-op threads; 1 is fastest for small models and immune to busy neighbours
    "tf32": False,  # TF32 matmuls and convolutions on CUDA (faster, about 1e-3 relative error; no effect on CPU)
    "checkpoint_every": 1000,  # meta-iterations between resumable training checkpoints
}
"""Keys every run has, whatever the suite and learner."""

UNHASHED = frozenset({"checkpoint_every"})
"""Keys that cannot change a run's results, so they do not enter its identity. Nor does a key set to None: a suite
or learner adds an option with the default None (its behaviour before the option) without changing the identity of
the runs stored before it."""


def parse_assignments(items: Iterable[str]) -> dict[str, str]:
    """`["k=v", ...]` -> {k: v}; a malformed item is a UsageError."""
    out: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise UsageError(f"--set {item!r} is not KEY=VALUE; write e.g. --set meta_iterations=1000")
        out[key.strip()] = value.strip()
    return out


TRUE_WORDS, FALSE_WORDS = ("true", "yes", "on"), ("false", "no", "off")


def coerce(key: str, raw: str, default: Any) -> Any:
    """Parse `raw` to the type of `default` (bool, int, float, str, or a list of ints); a None default (an option
    added after the runs stored without it) takes `raw` as what it reads as: a bool word, an int, a float, else str."""
    if default is None:
        if raw.lower() in TRUE_WORDS + FALSE_WORDS:
            return raw.lower() in TRUE_WORDS
        for kind in (int, float):
            try:
                return kind(raw)
            except ValueError:
                pass
        return raw
    try:
        if isinstance(default, bool):
            if raw.lower() in ("1", *TRUE_WORDS):
                return True
            if raw.lower() in ("0", *FALSE_WORDS):
                return False
            raise ValueError
        if isinstance(default, int):
            return int(raw)
        if isinstance(default, float):
            return float(raw)
        if isinstance(default, (list, tuple)):
            return [int(v) for v in raw.split(",")]
        return raw
    except ValueError:
        kind = "a comma-separated list of integers" if isinstance(default, (list, tuple)) else type(default).__name__
        raise UsageError(f"--set {key}={raw!r}: {key} takes {kind} (default {default!r})") from None


def merge(*layers: Mapping[str, Any], overrides: Mapping[str, str] = {}) -> dict[str, Any]:
    """The layers merged left to right, then `overrides` (raw strings) coerced to the type of the key they replace."""
    config: dict[str, Any] = {}
    for layer in layers:
        config.update(layer)
    for key, raw in overrides.items():
        if key not in config:
            raise UsageError(f"--set {key}: unknown key; known keys are {', '.join(sorted(config))}")
        config[key] = coerce(key, raw, config[key])
    return config


def validate_positive(config: Mapping[str, Any]) -> None:
    """Sizes and counts must be positive: a zero or negative one is a UsageError naming the key."""
    for key, value in config.items():
        if isinstance(value, bool):
            continue
        if isinstance(value, (int, float)) and value <= 0 and key not in ("eval_steps",):
            raise UsageError(f"{key}={value} must be positive; set it with --set {key}=VALUE")
        if isinstance(value, list) and any(v <= 0 for v in value):
            raise UsageError(f"{key}={value} must hold positive integers; set it with --set {key}=5,10")
