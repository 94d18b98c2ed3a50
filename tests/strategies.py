"""Hypothesis strategies shared by the property tests: `--set` values a key's declaration allows, and junk."""
import math

from hypothesis import strategies as st

from harness import keys
from harness.keys import INT_MAX, Key


def valid(spec: Key) -> st.SearchStrategy[str]:
    """`--set` values that `spec` allows."""
    if spec.type is bool:
        values = st.sampled_from(keys.TRUE_WORDS + keys.FALSE_WORDS).flatmap(
            lambda w: st.sampled_from([w, w.upper(), w.title()]))
    elif spec.choices:
        values = st.sampled_from(spec.choices)
    elif spec.type is float:
        lo, hi = (spec.low if spec.low is not None else spec.above), spec.high if spec.high is not None else spec.below
        values = st.floats(lo, hi, exclude_min=spec.low is None and lo is not None,
                           exclude_max=spec.high is None and hi is not None, allow_nan=False,
                           allow_infinity=False).map(repr)
    else:
        lo = spec.low if spec.low is not None else None if spec.above is None else math.floor(spec.above) + 1
        hi = min(INT_MAX, spec.high if spec.high is not None else INT_MAX)
        ints = st.integers(lo, hi)
        lists = st.lists(ints, min_size=1, max_size=4, unique=spec.distinct)
        values = ints.map(str) if spec.type is int else lists.map(
            lambda v: ",".join(map(str, sorted(v) if spec.ascending else v)))
    return st.one_of(values, st.just("none")) if spec.optional else values


JUNK = st.one_of(
    st.text(max_size=12), st.integers().map(str), st.floats().map(repr),
    st.lists(st.integers(-3, 30), max_size=4).map(lambda v: ",".join(map(str, v))),
    st.sampled_from(["nan", "-inf", "1e999", "none", "", "true", "0", "-1", str(2**63), str(INT_MAX + 1), "9" * 5000]),
)
