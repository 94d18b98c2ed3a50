"""The declaration of a config key (`Key`): what a suite or learner writes to say what one of its options takes.
Part of the plugin contract (`harness.protocols` exports it); `harness.config` merges and checks configs with it."""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from harness.errors import UsageError

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
            return isinstance(value, (list, tuple)) and all(is_int(v) for v in value)
        if self.type is int:
            return is_int(value)
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


def is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)
