"""Statistical regression check: a learner's per-task scores against committed reference scores.

The reference of a suite and profile is a small long-form CSV, `<suite>-<profile>.csv` (with `-KEY=VALUE` per config
override before `.csv` where overrides shrink a profile to fit CI: `reference_stem`), with columns `COLUMNS`: the
scores at steps `REFERENCE_STEPS` and each learner's last step, to `SIGNIFICANT_DIGITS` significant digits. A task
whose adapted model diverged (NaN or infinite score) is stored as its worst value: `inf` for an error, `-inf` for a
metric where higher is better (accuracy, return). New scores go through the same reduction before they are compared,
so an unchanged deterministic run differs from its reference by exactly zero on every task.

A cell (learner, metric, shots, step) is "worse" when all of these hold: the one-sided Wilcoxon signed-rank test of
the paired per-task differences (same test task index) gives a p-value below `ALPHA` after a Bonferroni correction
over the cells compared; the mean (the median where a task diverged) is worse by more than `RELATIVE_TOLERANCE`; and,
where the reference records the spread over seeds (`<suite>-<profile>-seeds.csv`, columns `SEED_COLUMNS`: each
seed's cell centre), the new centre lies beyond the worse end of a prediction interval for one more seed's centre
(`seed_interval`). Another CPU's float rounding changes a training run as much as another seed does (seen:
first-order MAML's quick sinusoid scores 8% apart on two x86 hosts with the same wheels), so a single run can only be
held to the seed spread. "better" is the mirror image; anything else is "same". All functions here are pure.
"""
from __future__ import annotations

import io
import math
import string
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import stats

from harness.errors import UsageError
from harness.files import write_text

COLUMNS = ["learner", "metric", "shots", "step", "task", "value"]
"""The columns of a reference file, in order."""

CELL = ["learner", "metric", "shots", "step"]
"""What one verdict is about; its rows are the test tasks."""

REFERENCE_STEPS = (0, 1, 5)
"""Steps kept besides each learner's last one: before adaptation, after one step, part way."""

SIGNIFICANT_DIGITS = 6
"""Precision of stored values (and of new values before comparing): far below any change worth a verdict."""

ALPHA = 0.01
"""Family-wise significance level: a cell's one-sided p-value times the number of cells compared must lie below it."""

RELATIVE_TOLERANCE = 0.05
"""How much worse than the reference a cell's mean (median where a task diverged) must be to fail, as a fraction.

A significance test alone is too sensitive for CI: another CPU, BLAS or torch build changes the float rounding of
every task a little, often in the same direction, and over hundreds of test tasks a shift of 0.1% is significant.
Such a shift is no regression; 5% is well above that noise and well below the changes a bug or a bad default makes.
"""

SEED_COLUMNS = ["learner", "metric", "shots", "step", "seed", "centre"]
"""The columns of a reference's seed spread, in order: each seed's cell centre (mean, median where a task diverged)."""

MIN_SEEDS = 3
"""Seeds a cell's spread needs before it widens the tolerance (fewer give no usable standard deviation)."""

DTYPES = {"learner": str, "metric": str, "shots": "int64", "step": "int64", "task": "int64", "value": float}
"""The types of the columns of a reference."""

RESULT_COLUMNS = [*CELL, "n", "ref_mean", "new_mean", "mean_diff", "p_value", "seed_low", "seed_high", "verdict"]
"""What `compare` returns per cell. `p_value` is the smaller of the two one-sided p-values (worse, better),
Bonferroni-adjusted: compare it with `ALPHA`. `seed_low`, `seed_high`: the prediction interval of one more seed's
centre (NaN without a seed spread of at least `MIN_SEEDS` seeds)."""


NAME_CHARACTERS = frozenset(string.ascii_letters + string.digits + "._,+-")
"""What a config override's key and value may hold, so that they can name a reference file on any file system."""


def reference_stem(suite: str, profile: str, overrides: Mapping[str, str] | None = None) -> str:
    """`<suite>-<profile>`, then `-KEY=VALUE` per config override (raw, as given to --set), sorted by key: the
    name of a reference's files, so that a reference is only ever compared with runs of the same config. A key or
    value with a character outside `NAME_CHARACTERS`, or an empty value, is a UsageError."""
    items = sorted((overrides or {}).items())
    for key, value in items:
        if not value or not set(key + value) <= NAME_CHARACTERS:
            raise UsageError(f"--set {key}={value}: a check's overrides name its reference file; use a non-empty "
                             "value of letters, digits and . , + - _ only")
    return "-".join([suite, profile, *(f"{key}={value}" for key, value in items)])


def reference_path(directory: Path, suite: str, profile: str, overrides: Mapping[str, str] | None = None) -> Path:
    """Where the reference of `suite` at `profile` with config `overrides` lives under `directory`."""
    return Path(directory) / f"{reference_stem(suite, profile, overrides)}.csv"


def seeds_path(directory: Path, suite: str, profile: str, overrides: Mapping[str, str] | None = None) -> Path:
    """Where the seed spread of `suite` at `profile` with config `overrides` lives under `directory`."""
    return Path(directory) / f"{reference_stem(suite, profile, overrides)}-seeds.csv"


def centre(values: np.ndarray) -> float:
    """A cell's centre: the mean of its tasks, the median where one is infinite (diverged)."""
    values = np.asarray(values, dtype=float)
    return float(values.mean() if np.isfinite(values).all() else np.median(values))


def seed_centres(reduced: pd.DataFrame) -> pd.DataFrame:
    """The seed spread (columns `SEED_COLUMNS`) of reference-form scores with an extra `seed` column."""
    rows = [(*key, centre(g.value.to_numpy())) for key, g in reduced.groupby([*CELL, "seed"])]
    return pd.DataFrame(rows, columns=SEED_COLUMNS).sort_values(SEED_COLUMNS[:-1], ignore_index=True)


def load_seeds(path: Path) -> pd.DataFrame:
    """The seed spread at `path`; an absent file is an empty spread, a malformed one a UsageError."""
    path = Path(path)
    if not path.exists():
        return pd.DataFrame(columns=SEED_COLUMNS)
    try:
        frame = pd.read_csv(path)
        if missing := [c for c in SEED_COLUMNS if c not in frame.columns]:
            raise ValueError(f"missing columns {', '.join(missing)}; expected {','.join(SEED_COLUMNS)}")
        frame = frame[SEED_COLUMNS].astype({"shots": "int64", "step": "int64", "seed": "int64", "centre": float})
    except (OSError, ValueError, pd.errors.ParserError, pd.errors.EmptyDataError) as exc:
        raise UsageError(f"seed spread file {path} is malformed ({_one_line(exc)}); delete it and rerun with --update "
                         "--spread-seeds N") from None
    return frame


def write_seeds(path: Path, frame: pd.DataFrame) -> None:
    """Write a seed spread atomically (as `write_reference`)."""
    _atomic_csv(Path(path), frame.sort_values(SEED_COLUMNS[:-1]), SEED_COLUMNS)


def seed_interval(centres: np.ndarray, alpha: float) -> tuple[float, float]:
    """The two-sided (1 - 2 alpha) prediction interval of one more draw from the distribution of `centres` (normal,
    t with n-1 degrees of freedom): mean -/+ t * sd * sqrt(1 + 1/n); (-inf, inf) where a centre is infinite."""
    c = np.asarray(centres, dtype=float)
    if not np.isfinite(c).all():
        return -math.inf, math.inf
    n = len(c)
    half = float(stats.t.ppf(1 - alpha, n - 1) * c.std(ddof=1) * math.sqrt(1 + 1 / n))
    return float(c.mean()) - half, float(c.mean()) + half


def _worst(lower_is_better: bool) -> float:
    """The score a diverged task counts as."""
    return math.inf if lower_is_better else -math.inf


def reduce(scores: pd.DataFrame, lower_is_better: bool) -> pd.DataFrame:
    """The reference form of long-form `scores` (at least the columns `COLUMNS`; others are dropped): steps
    `REFERENCE_STEPS` and each learner's last step, NaN as the worst value, rounded to `SIGNIFICANT_DIGITS`, sorted."""
    last = scores.groupby("learner").step.transform("max")
    kept = scores[scores.step.isin(REFERENCE_STEPS) | (scores.step == last)]
    digits = f".{SIGNIFICANT_DIGITS}g"
    values = kept.value.astype(float).fillna(_worst(lower_is_better)).map(lambda v: float(format(v, digits)))
    out = kept.assign(value=values).reindex(columns=COLUMNS).astype(DTYPES)
    return out.sort_values(COLUMNS[:-1], ignore_index=True)


def load_reference(path: Path, missing_ok: bool = False) -> pd.DataFrame:
    """The reference at `path` in the form `reduce` gives; with `missing_ok`, an absent file is an empty reference.

    A missing (unless `missing_ok`), unreadable or malformed file is a UsageError naming the problem and the fix."""
    path = Path(path)
    if not path.exists():
        if missing_ok:
            return pd.DataFrame(columns=COLUMNS).astype(DTYPES)
        raise UsageError(f"no reference scores at {path}; run the same command with --update first to record them")

    def malformed(problem: str) -> UsageError:
        return UsageError(f"reference file {path} is malformed ({problem}); delete it and rerun with --update")

    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise malformed(_one_line(exc)) from None
    if not text.endswith("\n"):
        raise malformed("it does not end with a newline: truncated?")
    try:
        frame = pd.read_csv(io.StringIO(text))
    except (pd.errors.ParserError, pd.errors.EmptyDataError) as exc:
        raise malformed(_one_line(exc)) from None
    if missing := [c for c in COLUMNS if c not in frame.columns]:
        raise malformed(f"missing columns {', '.join(missing)}; expected {','.join(COLUMNS)}")
    frame = frame[COLUMNS]
    if frame.isna().any(axis=None):
        row = int(frame.isna().any(axis=1).to_numpy().argmax()) + 1
        raise malformed(f"data row {row} has an empty or NaN field (a diverged task is stored as inf)")
    if bad := [c for c in ("shots", "step", "task") if not pd.api.types.is_integer_dtype(frame[c])]:
        raise malformed(f"column {bad[0]} holds non-integers")
    if not pd.api.types.is_float_dtype(frame.value) and not pd.api.types.is_integer_dtype(frame.value):
        raise malformed("column value holds non-numbers")
    if frame.duplicated(COLUMNS[:-1]).any():
        raise malformed("a (learner, metric, shots, step, task) appears twice")
    return frame.astype(DTYPES)


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split())


def replace_learners(reference: pd.DataFrame, new: pd.DataFrame) -> pd.DataFrame:
    """`reference` with the rows of `new`'s learners replaced by `new`; the other learners' rows are kept."""
    return pd.concat([reference[~reference.learner.isin(new.learner)], new], ignore_index=True)


def write_reference(path: Path, frame: pd.DataFrame) -> None:
    """Write `frame` (reference form) to `path` in an existing directory, atomically: a temporary file beside it
    replaces it only once complete, so a failed write never leaves a truncated reference."""
    _atomic_csv(Path(path), frame.sort_values(COLUMNS[:-1]), COLUMNS)


def _atomic_csv(path: Path, frame: pd.DataFrame, columns: list[str]) -> None:
    text = frame.to_csv(index=False, columns=columns, lineterminator="\n", float_format=f"%.{SIGNIFICANT_DIGITS}g")
    write_text(path, text)


def one_sided_p(worsening: np.ndarray) -> tuple[float, float]:
    """(p worse, p better): one-sided Wilcoxon signed-rank p-values that the paired `worsening` (new - reference,
    sign-flipped where higher is better) lies above, resp. below, zero; (1, 1) when every difference is zero.

    An infinite difference (a task diverged on one side only) ranks above every finite one; the test uses ranks only.
    """
    d = np.asarray(worsening, dtype=float)
    if not d.any():
        return 1.0, 1.0
    finite = np.abs(d[np.isfinite(d)])
    d = np.where(np.isinf(d), np.sign(d) * (2 * finite.max(initial=0.0) + 1), d)
    return (float(stats.wilcoxon(d, alternative="greater").pvalue),
            float(stats.wilcoxon(d, alternative="less").pvalue))


def relative_worsening(reference: float, new: float, lower_is_better: bool) -> float:
    """How much worse `new` is than `reference`, as a fraction of |reference| (negative: better); infinite where
    one side is infinite or the reference is zero, and 0 where they are equal (both infinite included)."""
    if new == reference:
        return 0.0
    delta = (new - reference) if lower_is_better else (reference - new)
    if not math.isfinite(reference) or reference == 0:
        return math.copysign(math.inf, delta)
    return delta / abs(reference)


def compare(reference: pd.DataFrame, new: pd.DataFrame, lower_is_better: bool, alpha: float = ALPHA,
            tolerance: float = RELATIVE_TOLERANCE, seeds: pd.DataFrame | None = None) -> pd.DataFrame:
    """One row per cell of `new` (columns `RESULT_COLUMNS`, sorted), both frames in reference form, NaN counting as
    the worst value. The verdict is "worse", "better", "same", or "no reference" (a cell `reference` lacks: not
    tested, and not counted in the Bonferroni correction). `seeds` (columns `SEED_COLUMNS`) holds the reference's
    seed spread; its prediction intervals are at level `alpha` Bonferroni-corrected over the learners compared (a
    learner's cells move together: a worse-trained model is worse in all of them).

    A learner of `new` whose reference cells or test tasks differ from its new ones is a UsageError: the test
    protocol changed, and the reference must be regenerated."""
    worst = _worst(lower_is_better)
    ref_cells = {key: g.set_index("task").value.sort_index().fillna(worst)
                 for key, g in reference[reference.learner.isin(new.learner)].groupby(CELL)}
    new_cells = {key: g.set_index("task").value.sort_index().fillna(worst) for key, g in new.groupby(CELL)}
    if missing := sorted(set(ref_cells) - set(new_cells)):
        raise _mismatch(missing[0], "the run has no such cell")
    tested = sum(key in ref_cells for key in new_cells)  # the Bonferroni family
    spread = {} if seeds is None else {key: g.centre.to_numpy() for key, g in seeds.groupby(CELL)}
    seed_alpha = alpha / max(1, new.learner.nunique())
    rows = []
    for key, values in sorted(new_cells.items()):
        row = dict(zip(CELL, key), n=len(values), ref_mean=math.nan, new_mean=float(values.mean()),
                   mean_diff=math.nan, p_value=math.nan, seed_low=math.nan, seed_high=math.nan,
                   verdict="no reference")
        if key in ref_cells:
            ref = ref_cells[key]
            if not ref.index.equals(values.index):
                raise _mismatch(key, f"its test tasks differ ({len(ref)} in the reference, {len(values)} in the run)")
            old, now = ref.to_numpy(), values.to_numpy()
            d = np.subtract(now, old, out=np.zeros_like(now), where=now != old) * (1 if lower_is_better else -1)
            p_worse, p_better = (min(1.0, p * tested) for p in one_sided_p(d))
            middle = np.mean if np.isfinite(old).all() and np.isfinite(now).all() else np.median
            change = relative_worsening(float(middle(old)), float(middle(now)), lower_is_better)
            low = high = math.nan
            beyond_worse = beyond_better = True  # without a seed spread, the first two conditions decide
            if len(spread.get(key, ())) >= MIN_SEEDS:
                low, high = seed_interval(spread[key], seed_alpha)
                above, below = centre(now) > high, centre(now) < low
                beyond_worse, beyond_better = (above, below) if lower_is_better else (below, above)
            verdict = ("worse" if p_worse < alpha and change > tolerance and beyond_worse else
                       "better" if p_better < alpha and change < -tolerance and beyond_better else "same")
            row |= {"ref_mean": float(old.mean()), "mean_diff": row["new_mean"] - float(old.mean()),
                    "p_value": min(p_worse, p_better), "seed_low": low, "seed_high": high, "verdict": verdict}
        rows.append(row)
    return pd.DataFrame(rows, columns=RESULT_COLUMNS)


def _mismatch(key: tuple, detail: str) -> UsageError:
    learner, metric, shots, step = key
    return UsageError(f"the reference of {learner} ({metric}, {shots} shots, step {step}) does not match this run: "
                      f"{detail}; the test protocol changed, so regenerate the reference with --update")
