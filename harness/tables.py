"""Tables as views over the results store: long-form CSV (one row per cell) and a wide Markdown view, with the
paper's value beside ours. A cell without a finished run keeps an empty `mean`: it is marked, never invented ("not
run", or the state and training progress of its unfinished run, e.g. "running: meta-train 180/500", in `unfinished`).

A cell with one seed summarises its test tasks (`harness.stats.summarize`). A cell with several seeds pools the values
of all its (seed, task) pairs: `mean` over them, `ci95` the larger half of a stratified bootstrap's 95% interval
(`harness.stats.summarize_seeds`; bounds in `ci95_low`, `ci95_high`), `n`, `median`, `over_10x_median` and `diverged`
counting (seed, task) pairs, and the spread between seeds in `n_seeds`, `seed_sd`, `seed_min`, `seed_max` (the
per-seed means). Paired differences pair the identical test task under the same seed, over the seeds both rows have
(`paired_seeds`)."""
from __future__ import annotations

import functools
import json
import math
import shlex
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from tabulate import tabulate

from harness import checkpoints
from harness.files import write_text
from harness.stats import Summary, describe, fmt, summarize_seeds
from harness.store import Store
from harness.sweeps import unit_state

COLUMNS = ["table", "row", "learner", "suite", "setting", "column", "mean", "ci95", "n", "median", "over_10x_median",
           "diverged", "paper", "paper_ci95", "vs_paper", "paired_diff", "paired_diff_ci95", "profile", "seeds",
           "device", "train_seconds", "command", "git_commit",
           # appended for several seeds (harness.stats.summarize_seeds): the spread between seeds, the interval's
           # bounds (one seed: mean -/+ ci95), and the seeds, spread, (seed, task) pairs and infinite differences of a
           # paired difference
           "n_seeds", "seed_sd", "seed_min", "seed_max", "ci95_low", "ci95_high", "paired_seeds", "paired_diff_seed_sd",
           "paired_n", "paired_diverged",
           # a cell without a finished run but with an unfinished one: its state and training progress
           "unfinished",
           # a baseline's fine-tuning step size tuned on validation tasks (`tuned_step_size`)
           "step_size",
           # whether a run of the cell was trained or evaluated from a working tree with uncommitted changes
           # (`from_dirty_tree`): its code cannot be recovered
           "dirty_tree"]
MARKS = {"within ci": "≈", "better": "▲", "short": "▼"}
DIRTY = "†"  # a cell whose run's code had uncommitted changes
PROFILE_RANK = {"paper": 2, "quick": 1, "smoke": 0}
SEVERAL_SEEDS = ("A cell over several seeds pools its values of every (seed, test task): their mean ± the larger half "
                 "of a 95% stratified bootstrap interval (percentile, test tasks resampled within each seed); seed sd: "
                 "the standard deviation of the per-seed means.")


@dataclass(frozen=True)
class PaperCell:
    setting: str
    row: str
    column: str
    value: float
    ci95: float | None = None


@dataclass(frozen=True)
class Select:
    """Part of a cell's address; a cell merges those of its setting, row and column. `learner` names the learner,
    `shots` and `step` pick the scores (step None: the last step the run evaluated), `where` the config values its
    run must have (e.g. {"ways": 20, "model": "fc"})."""

    learner: str | None = None
    shots: int | None = None
    step: int | None = None
    where: Mapping[str, Any] = field(default_factory=dict)

    def merge(self, other: Select) -> Select:
        pick = lambda a, b: b if b is not None else a
        return Select(pick(self.learner, other.learner), pick(self.shots, other.shots), pick(self.step, other.step),
                      {**self.where, **other.where})


@dataclass(frozen=True)
class Comparison:
    """A line under a table, per setting: the cell (`row`, `column`) minus the cell (`other`, `other_column`), paired
    on the same test tasks (mean ± 95% interval); with `ceiling` (a row and column), also the share of the gap
    between `other` and `ceiling` that `row` closes, (row - other) / (ceiling - other) of the cells' means, beside
    the paper's share where it has all three cells."""

    row: str
    column: str
    other: str
    other_column: str
    ceiling: tuple[str, str] | None = None


@dataclass(frozen=True)
class TableSpec:
    """A table of one suite: settings x rows x columns. By default settings are shot counts, columns adaptation
    steps and rows learners (plain ints and names); a `Select` in any of them says more (e.g. a column per shot
    count, a setting per number of ways, a row per model).

    `rows` maps the paper's row labels to our learner names (None where no learner of ours produces that row);
    learners with runs on the suite but no paper row get a row under their own name.

    `parts`: tables of other suites written below this one into the same files, each with its own settings, rows and
    paper cells (the paper's Table 1: Omniglot, then MiniImagenet). Each names a suite of its own, which heads its
    section of the Markdown and fills its cells' `suite` in the CSV; the parts share this table's title, metric
    and direction (a part's own title is not shown).
    """

    name: str
    title: str
    suite: str
    metric: str
    settings: Mapping[str, int | Select]
    columns: Mapping[str, int | Select]
    rows: Mapping[str, str | Select | None]
    paper: Sequence[PaperCell] = field(default_factory=tuple)
    paired_with: str | None = None  # a row label: every other row also gets its paired difference from this row
    extra_rows: bool = True  # add a row for each learner with runs on the suite but no row of its own
    comparisons: Sequence[Comparison] = ()  # lines under the table (`Comparison`)
    parts: Sequence[TableSpec] = ()

    def __post_init__(self) -> None:
        suites = [self.suite, *(part.suite for part in self.parts)]
        if len(set(suites)) < len(suites) or any(part.parts for part in self.parts):
            raise ValueError(f"table {self.name}: each part needs a suite of its own and no parts of its own, not "
                             f"{suites}")

    def address(self, setting: str, row: str, column: str) -> Select | None:
        """The merged `Select` of a cell; None where the row has no learner of ours."""
        value = self.rows[row]
        if value is None:
            return None
        parts = [(self.settings[setting], "shots"), (value, "learner"), (self.columns[column], "step")]
        out = Select()
        for part, meaning in parts:
            out = out.merge(part if isinstance(part, Select) else Select(**{meaning: part}))
        return out


def versus_paper(mean: float, ci95: float, paper: float, lower_is_better: bool,
                 interval: tuple[float, float] | None = None) -> str:
    """"within ci" when the paper's value lies in our 95% interval (`interval`, else mean ± ci95), else "better" or
    "short" (of the paper)."""
    if not math.isfinite(mean):
        return "short"
    if (interval[0] <= paper <= interval[1]) if interval else abs(mean - paper) <= ci95:
        return "within ci"
    return "better" if (mean < paper) == lower_is_better else "short"


def matches(config: str, where: Mapping[str, Any]) -> bool:
    """Whether a run's config (JSON) has every value of `where`."""
    values = json.loads(config)
    return all(values.get(k) == v for k, v in where.items())


def most_thorough(runs: pd.DataFrame) -> pd.DataFrame:
    """The rows of `runs` (of `Store.runs`) of their most thorough profile (paper > quick > smoke > any other)."""
    rank = runs.profile.map(lambda p: PROFILE_RANK.get(p, -1))
    return runs[rank == rank.max()]


def chosen_runs(runs: pd.DataFrame, suite: str, profile: str | None,
                where: Mapping[str, Any] | None = None) -> dict[str, pd.DataFrame]:
    """Per learner, the done runs of `suite` (with the config values `where`) to report: the given profile, else
    the most thorough one available; among several configs of that profile, the most recent one (all its seeds)."""
    runs = runs[runs.suite == suite]
    if profile is not None:
        runs = runs[runs.profile == profile]
    if where:
        runs = runs[runs.config.map(lambda c: matches(c, where)).astype(bool)]
    chosen = {}
    for learner, group in runs.groupby("learner"):
        group = most_thorough(group)
        latest_config = group.sort_values("finished").config.iloc[-1]
        chosen[learner] = group[group.config == latest_config]
    return chosen


@dataclass(frozen=True)
class Checkpoint:
    """A training checkpoint in the store's folder without a run in the store (brought from another machine): the
    run it belongs to and how far it trained, e.g. "meta-train 6/500"."""

    suite: str
    learner: str
    profile: str
    config: str  # JSON
    progress: str | None


def tuned_step_size(details: Mapping[str, Any], shots: int | None) -> str | None:
    """The fine-tuning step size a run tuned for `shots` (its detail `tuned_step_sizes`, {shots: step size}), e.g.
    "0.5 (the largest candidate)" when it is an end of the grid its detail `step_size_validation` ({shots: {step
    size: score}}) tried: a better one may lie beyond. None for a run that tuned none."""
    tuned = details.get("tuned_step_sizes", {}).get(str(shots))
    if tuned is None:
        return None
    grid = sorted(float(lr) for lr in details.get("step_size_validation", {}).get(str(shots), {}))
    edge = {grid[-1]: " (the largest candidate)", grid[0]: " (the smallest candidate)"} if len(grid) > 1 else {}
    return f"{tuned:g}{edge.get(tuned, '')}"


def from_dirty_tree(git_commit: str | None, details: Mapping[str, Any]) -> bool:
    """Whether a run's code had uncommitted changes: its recorded commit (`runner.source_commit`, of the process that
    evaluated it) or that of any process that trained it (its detail `segments`) ends in "-dirty". A commit not
    recorded (None, a checkpoint older than segments) is unknown, not dirty."""
    commits = [git_commit, *(segment.get("commit") for segment in details.get("segments", []))]
    return any(str(commit).endswith("-dirty") for commit in commits if commit)


def unfinished_runs(store: Store, suite: str, profile: str | None,
                    strays: Sequence[Checkpoint] = ()) -> Callable[[Select], str | None]:
    """For a cell's `Select`: the state and training progress of its learner's most thorough, latest unfinished run
    of `suite` (of `profile` when given) with the config values the cell asks for, e.g. "running: meta-train
    180/500"; without one, a stray checkpoint's ("checkpoint, not resumed yet: meta-train 6/500"); None when there
    is neither."""
    runs = store.runs(status=None)
    runs = runs[(runs.suite == suite) & (runs.status != "done") & ((runs.profile == profile) if profile else True)]
    progress = functools.cache(lambda run_id, config: checkpoints.training_progress(store.path.parent / run_id,
                                                                                json.loads(config)))

    def of(sel: Select) -> str | None:
        mine = runs[(runs.learner == sel.learner) & runs.config.map(lambda c: matches(c, sel.where)).astype(bool)]
        if mine.empty:
            return next((f"checkpoint, not resumed yet: {c.progress or 'unreadable'}" for c in strays
                         if (c.suite, c.learner) == (suite, sel.learner) and profile in (None, c.profile)
                         and matches(c.config, sel.where)), None)
        run = most_thorough(mine).iloc[-1]  # runs come oldest first
        return f"{unit_state(run.status, run.host, run.pid)}: {progress(run.run_id, run.config) or 'no checkpoint yet'}"
    return of


def per_seed_task(scores: pd.DataFrame, group: pd.DataFrame, shots: int, step: int | None, metric: str,
                  lower_is_better: bool) -> pd.Series:
    """The values of a cell, indexed by (seed, task) of the runs `group` (one run per seed; step None: the last step
    evaluated), sorted; NaN (diverged) counts as the worst value."""
    s = scores[scores.run_id.isin(group.run_id) & (scores.shots == shots) & (scores.metric == metric)]
    s = s[s.step == (s.step.max() if step is None else step)]
    index = pd.MultiIndex.from_arrays([s.run_id.map(group.set_index("run_id").seed), s.task], names=["seed", "task"])
    return s.value.fillna(np.inf if lower_is_better else -np.inf).set_axis(index).sort_index()


def per_task(scores: pd.DataFrame, group: pd.DataFrame, shots: int, step: int | None, metric: str,
             lower_is_better: bool) -> pd.Series:
    """One value per test task (index) of a cell, the mean over the seeds of `group` (step None: the last step
    evaluated); NaN (diverged) counts as the worst value."""
    return per_seed_task(scores, group, shots, step, metric, lower_is_better).groupby(level="task").mean()


def summarize_cell(values: pd.Series, lower_is_better: bool) -> Summary:
    """`summarize_seeds` of values indexed by (seed, task): with one seed, `summarize` over its tasks."""
    by_seed = {seed: v.to_numpy() for seed, v in values.groupby(level="seed")}
    return summarize_seeds(by_seed, lower_is_better)


def seed_columns(summary: Summary) -> dict[str, Any]:
    """The columns of a cell that say how its seeds were pooled: its interval's bounds, and the spread between seeds
    where there are several."""
    several = {"seed_sd": summary.seed_sd, "seed_min": summary.seed_min, "seed_max": summary.seed_max}
    return {"n_seeds": summary.seeds, "ci95_low": summary.low, "ci95_high": summary.high} | \
        (several if summary.seeds > 1 else {})


def build(spec: TableSpec, store: Store, lower_is_better: bool, profile: str | None = None,
          strays: Sequence[Checkpoint] = ()) -> pd.DataFrame:
    """The long-form rows of `spec` from `store` (`build_part`), then those of each of its `parts`, named like it."""
    frames = [build_part(part, store, lower_is_better, profile, strays)
              for part in (spec, *(replace(p, name=spec.name) for p in spec.parts))]
    frame = pd.concat(frames, ignore_index=True) if spec.parts else frames[0]
    frame.attrs = {"lower_is_better": lower_is_better,
                   "comparisons": [line for part in frames for line in part.attrs["comparisons"]]}
    return frame


def build_part(spec: TableSpec, store: Store, lower_is_better: bool, profile: str | None = None,
               strays: Sequence[Checkpoint] = ()) -> pd.DataFrame:
    """The long-form rows of one table of one suite, `spec` (its `parts` aside), from `store`, its metric better
    when lower by `lower_is_better` (the suite's `Suite.lower_is_better`, carried in the frame's
    `attrs["lower_is_better"]`). Cells with several seeds: see the
    module's docstring; a cell whose run exists only as a stray checkpoint in `strays` says how far that got. With
    `spec.paired_with`, each row's paired difference from that row's learner (its runs of the same profile) on the
    identical test tasks under the same seeds, over the seeds both have. The lines of `spec.comparisons` travel in
    the frame's `attrs["comparisons"]` (they are not cells), for `markdown`."""
    all_runs = store.runs()
    chosen = functools.cache(lambda where, at=profile: chosen_runs(all_runs, spec.suite, at, dict(where)))
    runs_of = lambda sel, at=profile: chosen(tuple(sorted(sel.where.items())), at).get(sel.learner)
    suite_runs = chosen(())
    unfinished = unfinished_runs(store, spec.suite, profile, strays)
    scores = store.scores(all_runs[all_runs.suite == spec.suite].run_id)
    details = functools.cache(store.details)
    paper = {(c.setting, c.row, c.column): c for c in spec.paper}
    ours = {v if isinstance(v, str) else v.learner for v in spec.rows.values() if v is not None}
    extra = {learner: learner for learner in suite_runs if learner not in ours} if spec.extra_rows else {}
    spec = replace(spec, rows=dict(spec.rows) | extra)
    values_of = lambda sel, group: per_seed_task(scores, group, sel.shots, sel.step, spec.metric,
                                                 lower_is_better)
    out = []
    for setting in spec.settings:
        for label in spec.rows:
            for column in spec.columns:
                sel = spec.address(setting, label, column)
                cell = {"table": spec.name, "row": label, "learner": sel.learner if sel else "", "suite": spec.suite,
                        "setting": setting, "column": column}
                ref = paper.get((setting, label, column))
                if ref is not None:
                    cell |= {"paper": ref.value, "paper_ci95": ref.ci95}
                group = runs_of(sel) if sel else None
                values = values_of(sel, group) if group is not None else None
                if sel and (values is None or not len(values)):
                    cell["unfinished"] = unfinished(sel)
                if values is not None and len(values):
                    summary = summarize_cell(values, lower_is_better)
                    cell |= {"mean": summary.mean, "ci95": summary.ci95, "n": summary.n,
                             "median": summary.median, "over_10x_median": summary.over_10x_median,
                             "diverged": summary.diverged,
                             "profile": group.profile.iloc[0], "device": group.device.iloc[0],
                             "seeds": ",".join(str(x) for x in sorted(group.seed)),
                             "train_seconds": group.train_seconds.mean(),
                             "command": group.command.iloc[0], "git_commit": group.git_commit.iloc[0],
                             "dirty_tree": any(from_dirty_tree(commit, details(run_id))
                                               for commit, run_id in zip(group.git_commit, group.run_id)),
                             "step_size": None if sel.step == 0 else ", ".join(sorted({step for run_id in group.run_id
                                 if (step := tuned_step_size(details(run_id), sel.shots))})) or None}
                    cell |= seed_columns(summary)
                    if ref is not None:
                        cell["vs_paper"] = versus_paper(summary.mean, summary.ci95, ref.value, lower_is_better,
                                                        summary.interval)
                    base = spec.address(setting, spec.paired_with, column) if spec.paired_with else None
                    # paired with the base learner's runs of the same profile: a difference of training budgets is
                    # no difference between learners
                    base_group = runs_of(base, group.profile.iloc[0]) if base else None
                    if base_group is not None and label != spec.paired_with:
                        cell |= paired(values, values_of(base, base_group), lower_is_better)
                out.append(cell)
    frame = pd.DataFrame(out).reindex(columns=COLUMNS)
    ints = ["n", "over_10x_median", "diverged", "n_seeds", "paired_n", "paired_diverged"]
    frame = frame.astype(dict.fromkeys(ints, "Int64"))
    frame.attrs["lower_is_better"] = lower_is_better

    def cell_values(setting: str, row: str, column: str) -> pd.Series | None:
        sel = spec.address(setting, row, column)
        group = runs_of(sel) if sel else None
        values = values_of(sel, group) if group is not None else None
        return values if values is not None and len(values) else None

    frame.attrs["comparisons"] = [line for c in spec.comparisons for setting in spec.settings
                                  for line in [compare(c, setting, frame, cell_values, paper, lower_is_better)]
                                  if line]
    return frame


def compare(c: Comparison, setting: str, frame: pd.DataFrame,
            cell_values: Callable[[str, str, str], pd.Series | None],
            paper: Mapping[tuple[str, str, str], PaperCell], lower_is_better: bool) -> str | None:
    """The line of `c` in `setting` (`Comparison`); None where neither row has a finished run there."""
    name = lambda row, column: f"{row} after {column}"
    cells = [(c.row, c.column), (c.other, c.other_column), *([c.ceiling] if c.ceiling else [])]
    values = {cell: cell_values(setting, *cell) for cell in cells}
    if values[cells[0]] is None and values[cells[1]] is None:
        return None
    missing = [name(*cell) for cell in cells[:2] if values[cell] is None]
    if missing:
        return f"- {setting}: {name(c.row, c.column)} against {name(c.other, c.other_column)}: not yet " \
               f"({missing[0]} has no finished run)"
    diff = paired(values[cells[0]], values[cells[1]], lower_is_better)
    difference = describe(diff["paired_diff"], diff["paired_diff_ci95"], diff["paired_n"], diff["paired_diverged"])
    line = (f"- {setting}: {name(c.row, c.column)} minus {name(c.other, c.other_column)}, paired on the same test "
            f"tasks: {difference}")
    if c.ceiling and values[c.ceiling] is None:
        line += f"; the share of the gap to {name(*c.ceiling)}: not yet ({name(*c.ceiling)} has no finished run)"
    elif c.ceiling:
        mean = lambda row, column: frame[(frame.setting == setting) & (frame.row == row)
                                         & (frame.column == column)]["mean"].iloc[0]
        ours = gap_share(*(mean(*cell) for cell in cells))
        theirs = [paper.get((setting, *cell)) for cell in cells]
        released = (f"; the paper's values: {gap_share(*(p.value for p in theirs)):.0%}"
                    if all(theirs) else "")
        line += (f"; it closes {ours:.0%} of the gap between {name(c.other, c.other_column)} and "
                 f"{name(*c.ceiling)}{released}")
    return line


def gap_share(value: float, low: float, high: float) -> float:
    """The share of the gap from `low` to `high` that `value` closes: (value - low) / (high - low)."""
    return (value - low) / (high - low)


def paired(values: pd.Series, base: pd.Series, lower_is_better: bool) -> dict[str, Any]:
    """The columns of the paired difference `values` - `base` (both indexed by (seed, task); of a metric better
    when lower by `lower_is_better`) over the (seed, task) pairs both have, where it is defined (not inf - inf);
    none when they share no pair."""
    diff = (values - base).dropna()
    if not len(diff):
        return {}
    summary = summarize_cell(diff, lower_is_better)
    return {"paired_diff": summary.mean, "paired_diff_ci95": summary.ci95, "paired_diff_seed_sd": summary.seed_sd,
            "paired_seeds": ",".join(str(seed) for seed in diff.index.unique(level="seed")),
            "paired_n": summary.n, "paired_diverged": summary.diverged}


def _wide(frame: pd.DataFrame, spec: TableSpec, text: Callable[[pd.Series], str]) -> str:
    """`text` of each row of `frame`, pivoted to (setting, row) x column, as a github table."""
    index, order = ["setting", "row"], list(spec.columns)
    wide = frame.assign(cell=frame.apply(text, axis=1)).pivot(index=index, columns="column", values="cell")
    wide = wide.reindex(columns=order).reindex(pd.MultiIndex.from_frame(frame[index].drop_duplicates()))
    wide = wide.astype(object).where(wide.notna(), "")
    return tabulate(wide.reset_index(), headers=[*index, *order], tablefmt="github", showindex=False)


def _orderings(spec: TableSpec, frame: pd.DataFrame) -> list[str]:
    """Per paper column: the paper's rows ordered by the paper's values and by ours (worst first), and whether the
    two orders agree. Only cells where both values exist take part."""
    both = frame.dropna(subset=["paper", "mean"])
    lines = []
    for (setting, column), cells in both.groupby(["setting", "column"], sort=False):
        if len(cells) < 2:
            continue
        worst_first = not frame.attrs["lower_is_better"]
        paper = cells.sort_values("paper", ascending=worst_first).row.tolist()
        ours = cells.sort_values("mean", ascending=worst_first).row.tolist()
        verdict = "the same order" if paper == ours else "a different order"
        lines.append(f"- {setting}, {column}: paper {' < '.join(paper)}; ours {' < '.join(ours)} ({verdict})")
    if not lines:
        return []
    return ["", f"Order of the paper's rows by {spec.metric}, from worst to best (a < b: a is worse; ties within "
            "intervals still count):", "", *lines]


def _part_views(spec: TableSpec, frame: pd.DataFrame, cell: Callable[[pd.Series], str],
                several_budgets: bool) -> list[str]:
    """The Markdown lines of one part of a table (its cells `frame`): the table of `cell`s; where any ran, a note on
    several seeds where a cell has them, the medians, the orderings against the paper and the paired differences."""
    lines = [_wide(frame, spec, cell)]
    ran = frame.dropna(subset=["mean"])
    if (ran.n_seeds > 1).any():
        lines += ["", SEVERAL_SEEDS]
    if not len(ran):
        return lines
    lower_is_better = frame.attrs["lower_is_better"]
    if lower_is_better:
        lines += ["", f"Median {spec.metric} / number of test tasks above 10 x the median (the tasks that can dominate "
                  "a mean):", "", _wide(ran, spec, lambda r: f"{fmt(r['median'])} / {r['over_10x_median']}")]
    else:
        lines += ["", f"Median {spec.metric} over test tasks:", "", _wide(ran, spec, lambda r: fmt(r["median"]))]
    lines += _orderings(spec, frame)
    paired = ran.dropna(subset=["paired_diff"])
    if len(paired):
        sign = "above" if lower_is_better else "below"
        seeds = paired.paired_seeds.str.count(",") + 1
        same_seed = " under the same seed, over the seeds both rows have" if (seeds > 1).any() else ""
        budget = f", {spec.paired_with}'s run of the row's profile" if several_budgets else ""
        lines += ["", f"Paired difference from {spec.paired_with} on the identical test tasks{same_seed} (row minus "
                  f"{spec.paired_with}{budget}, mean ± 95% interval; an interval {sign} 0: {spec.paired_with} is "
                  "better):", "",
                  _wide(paired.assign(paired_n_seeds=seeds), spec,
                        lambda r: describe(r["paired_diff"], r["paired_diff_ci95"], r["paired_n"],
                                           r["paired_diverged"], r["paired_n_seeds"], r["paired_diff_seed_sd"]))]
    return lines


def markdown(spec: TableSpec, frame: pd.DataFrame) -> str:
    """The wide, human view: "ours ± ci (paper)" per cell with the profile and device that produced it (several
    seeds: "ours ± ci (seed sd s, k seeds) (paper)"), the robust view, paired differences, and the commands."""
    ran = frame.dropna(subset=["mean"])
    origins = set(zip(ran.profile, ran.device))

    def cell(r: pd.Series) -> str:
        if not r["learner"]:
            ours = "—"  # a method of the paper's table that no learner here implements
        elif pd.isna(r["mean"]):
            ours = r["unfinished"] if isinstance(r["unfinished"], str) else "not run"
        else:
            ours = describe(r["mean"], r["ci95"], r["n"], r["diverged"], r["n_seeds"], r["seed_sd"])
        paper = "" if pd.isna(r["paper"]) else f" ({fmt(r['paper'])})"
        origin = f" [{r['profile']}, {r['device']}]" if len(origins) > 1 and not pd.isna(r["mean"]) else ""
        dirty = DIRTY if r["dirty_tree"] is True else ""
        return ours + dirty + paper + ("" if pd.isna(r["vs_paper"]) else f" {MARKS[r['vs_paper']]}") + origin

    lower_is_better = frame.attrs["lower_is_better"]
    better = "lower" if lower_is_better else "higher"
    lines = [f"# {spec.title}", "",
             f"Ours: {spec.metric} ({better} is better), mean ± 95% interval over test tasks; the paper's value in "
             "parentheses; ≈ the paper's value lies in our interval, ▲ ours is better, ▼ ours falls short of the "
             "paper; — a method of the paper's table that no learner here implements.",
             ""]
    if frame.unfinished.notna().any():
        lines += ["A cell \"running\", \"interrupted\" or \"failed\" has no finished run yet; it says how far its "
                  "run's training got by its last checkpoint (e.g. meta-train 180/500: 180 of 500 meta-iterations). "
                  "\"checkpoint, not resumed yet\": a checkpoint brought from another machine that no run here has "
                  "resumed (`python -m harness status --all` gives the command that does).",
                  ""]
    if (ran.dirty_tree == True).any():  # noqa: E712 (a column of True, False and NaN)
        lines += [f"{DIRTY} a cell from a run trained or evaluated from a working tree with uncommitted changes (its "
                  "commit ends in -dirty below, or in a training segment's record): the code that produced it cannot "
                  "be recovered; rerun it from a clean checkout to replace it.", ""]
    if len(origins) == 1:
        (profile, device), = origins
        lines += [f"Every cell: {profile} profile on {device}.", ""]
    elif origins:
        lines += ["Each cell says [profile, device] of the run that produced it.", ""]
    if any(p != "paper" for p, _ in origins):
        lines += ["Cells of the smoke or quick profile are not at the paper's training budget; "
                  "`--profile paper` gives those.", ""]
    several_budgets = len({p for p, _ in origins}) > 1
    for part in (spec, *spec.parts):
        if spec.parts:
            lines += [f"## {part.suite}", ""]
        lines += [*_part_views(part, frame[frame.suite == part.suite], cell, several_budgets), ""]
    lines.pop()
    if not len(ran):
        return "\n".join(lines) + "\n"
    if frame.attrs.get("comparisons"):
        lines += ["", "Comparisons (mean ± 95% interval of the paired difference over the test tasks):", "",
                  *frame.attrs["comparisons"]]
    lines += ["", "Written by `python -m harness report` from these runs:", ""]
    keys = ["learner", "command", "profile", "seeds", "device", "git_commit", "train_seconds"]
    for values, group in ran.groupby(keys, sort=False, dropna=False):
        run = dict(zip(keys, values))
        trained = "" if pd.isna(run["train_seconds"]) else f", meta-trained in {run['train_seconds']:.0f} s"
        where = f"{run['profile']} profile, seeds {run['seeds']}, {run['device']}{trained}"
        commit = str(run["git_commit"])
        commit = commit[:12] + ("-dirty" if commit.endswith("-dirty") else "")
        lines.append(f"- {run['learner']} ({where}, commit {commit}{step_sizes(group)}): `{run['command']}`")
    return "\n".join(lines) + "\n"


def step_sizes(cells: pd.DataFrame) -> str:
    """", tuned step size 0.5 (the largest candidate)" for the cells of one run group, per setting where they differ;
    "" when its runs tuned none."""
    by_setting = cells.dropna(subset=["step_size"]).groupby("setting", sort=False).step_size.first()
    if by_setting.empty:
        return ""
    if by_setting.nunique() == 1:
        return f", tuned step size {by_setting.iloc[0]}"
    return ", tuned step sizes " + "; ".join(f"{setting}: {step}" for setting, step in by_setting.items())


def paths(spec: TableSpec, directory: Path) -> tuple[Path, Path]:
    """Where `spec`'s long-form CSV and Markdown view live in `directory`."""
    return directory / f"{spec.name}.csv", directory / f"{spec.name}.md"


def write(spec: TableSpec, frame: pd.DataFrame, directory: Path) -> tuple[Path, Path]:
    """Write `<name>.csv` and `<name>.md` of `frame` (of `build`) into `directory`, each atomically."""
    directory.mkdir(parents=True, exist_ok=True)
    csv, md = paths(spec, directory)
    write_text(csv, frame.to_csv(index=False, float_format="%.6g"))
    write_text(md, markdown(spec, frame))
    return csv, md


CELL_KEY = ["suite", "setting", "row", "column"]
"""What names a cell of a table."""


def dropped(frame: pd.DataFrame, written: Path) -> list[str]:
    """The cells that have a value (`mean`) in the table already written at `written` (a CSV of `write`) but none
    in `frame`: writing `frame` there would replace them with "not run". Named "suite / setting / row / column". A
    file that is absent or cannot be read as a table drops nothing."""
    try:
        old = pd.read_csv(written, usecols=[*CELL_KEY, "mean"], dtype=str, keep_default_na=False)
    except (OSError, ValueError, pd.errors.ParserError):
        return []
    had = old[old["mean"] != ""].set_index(CELL_KEY).index
    has = frame.dropna(subset=["mean"]).set_index(CELL_KEY).index
    return [" / ".join(cell) for cell in had.difference(has)]


def paper_cells(reference_csv: Path, table: int, suite: str | None = None) -> list[PaperCell]:
    """The paper's values of one table (of one suite) from a reference CSV (columns table, suite, setting, learner,
    column, value, ci95)."""
    ref = pd.read_csv(reference_csv)
    ref = ref[(ref.table == table) & ((ref.suite == suite) if suite else True)]
    return [PaperCell(r.setting, r.learner, r.column, float(r.value), None if np.isnan(r.ci95) else float(r.ci95))
            for r in ref.itertuples()]


def command_line(argv: Sequence[str]) -> str:
    """The command as a user would type it."""
    return "python -m harness " + shlex.join(argv)
