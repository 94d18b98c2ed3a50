"""Tables as views over the results store: long-form CSV (one row per cell) and a wide Markdown view, with the
paper's value beside ours. A cell without a run keeps an empty `mean`: it is marked, never invented."""
from __future__ import annotations

import math
import shlex
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from tabulate import tabulate

from harness.stats import describe, fmt, summarize
from harness.store import Store

COLUMNS = ["table", "row", "learner", "suite", "setting", "column", "mean", "ci95", "n", "median", "over_10x_median",
           "diverged", "paper", "paper_ci95", "vs_paper", "paired_diff", "paired_diff_ci95", "profile", "seeds",
           "device", "train_seconds", "command", "git_commit"]
MARKS = {"within ci": "≈", "better": "▲", "short": "▼"}
PROFILE_RANK = {"paper": 2, "quick": 1, "smoke": 0}


@dataclass(frozen=True)
class PaperCell:
    setting: str
    row: str
    column: str
    value: float
    ci95: float | None = None


@dataclass(frozen=True)
class TableSpec:
    """A table of one suite: settings are shot counts, columns are adaptation steps, rows are learners.

    `rows` maps the paper's row labels to our learner names (None where no learner of ours produces that row);
    learners with runs on the suite but no paper row get a row under their own name.
    """

    name: str
    title: str
    suite: str
    metric: str
    settings: Mapping[str, int]
    columns: Mapping[str, int]
    rows: Mapping[str, str | None]
    paper: Sequence[PaperCell] = field(default_factory=tuple)
    lower_is_better: bool = True
    paired_with: str | None = None  # a row label: every other row also gets its paired difference from this row


def versus_paper(mean: float, ci95: float, paper: float, lower_is_better: bool) -> str:
    """"within ci" when the paper's value lies in our 95% interval, else "better" or "short" (of the paper)."""
    if not math.isfinite(mean):
        return "short"
    if abs(mean - paper) <= ci95:
        return "within ci"
    return "better" if (mean < paper) == lower_is_better else "short"


def chosen_runs(runs: pd.DataFrame, suite: str, profile: str | None) -> dict[str, pd.DataFrame]:
    """Per learner, the done runs of `suite` to report: the given profile, else the most thorough one available;
    among several configs of that profile, the most recent one (all its seeds)."""
    runs = runs[runs.suite == suite]
    if profile is not None:
        runs = runs[runs.profile == profile]
    chosen = {}
    for learner, group in runs.groupby("learner"):
        best = max(group.profile, key=lambda p: PROFILE_RANK.get(p, -1))
        group = group[group.profile == best]
        latest_config = group.sort_values("finished").config.iloc[-1]
        chosen[learner] = group[group.config == latest_config]
    return chosen


def per_task(scores: pd.DataFrame, group: pd.DataFrame, shots: int, step: int, metric: str) -> pd.Series:
    """One value per test task (index) of a cell, pooled over the seeds of `group`; NaN (diverged) counts as +inf."""
    s = scores[scores.run_id.isin(group.run_id) & (scores.shots == shots) & (scores.step == step)
               & (scores.metric == metric)]
    return s.value.fillna(np.inf).groupby(s.task).mean()


def build(spec: TableSpec, store: Store, profile: str | None = None) -> pd.DataFrame:
    """The long-form rows of `spec` from `store`; with `spec.paired_with`, each row's paired difference from that
    row's learner on the identical test tasks."""
    runs = chosen_runs(store.runs(), spec.suite, profile)
    scores = store.scores(pd.concat(runs.values()).run_id if runs else [])
    paper = {(c.setting, c.row, c.column): c for c in spec.paper}
    rows = dict(spec.rows) | {learner: learner for learner in runs if learner not in spec.rows.values()}
    baseline = spec.rows.get(spec.paired_with) if spec.paired_with else None
    out = []
    for setting, shots in spec.settings.items():
        for label, learner in rows.items():
            for column, step in spec.columns.items():
                cell = {"table": spec.name, "row": label, "learner": learner or "", "suite": spec.suite,
                        "setting": setting, "column": column}
                ref = paper.get((setting, label, column))
                if ref is not None:
                    cell |= {"paper": ref.value, "paper_ci95": ref.ci95}
                values = per_task(scores, runs[learner], shots, step, spec.metric) if learner in runs else None
                if values is not None and len(values):
                    group = runs[learner]
                    summary = summarize(values.to_numpy())
                    cell |= {"mean": summary.mean, "ci95": summary.ci95, "n": summary.n,
                             "median": summary.median, "over_10x_median": summary.over_10x_median,
                             "diverged": summary.diverged,
                             "profile": group.profile.iloc[0], "device": group.device.iloc[0],
                             "seeds": ",".join(str(x) for x in sorted(group.seed)),
                             "train_seconds": group.train_seconds.mean(),
                             "command": group.command.iloc[0], "git_commit": group.git_commit.iloc[0]}
                    if ref is not None:
                        cell["vs_paper"] = versus_paper(summary.mean, summary.ci95, ref.value, spec.lower_is_better)
                    if baseline in runs and learner != baseline:
                        other = per_task(scores, runs[baseline], shots, step, spec.metric)
                        diff = summarize((values - other).dropna().to_numpy())  # tasks both have
                        cell |= {"paired_diff": diff.mean, "paired_diff_ci95": diff.ci95}
                out.append(cell)
    frame = pd.DataFrame(out).reindex(columns=COLUMNS)
    return frame.astype({"n": "Int64", "over_10x_median": "Int64", "diverged": "Int64"})


def _wide(frame: pd.DataFrame, spec: TableSpec, text: Callable[[pd.Series], str]) -> str:
    """`text` of each row of `frame`, pivoted to (setting, row) x column, as a github table."""
    index, order = ["setting", "row"], list(spec.columns)
    wide = frame.assign(cell=frame.apply(text, axis=1)).pivot(index=index, columns="column", values="cell")
    wide = wide.reindex(columns=order).reindex(pd.MultiIndex.from_frame(frame[index].drop_duplicates()))
    return tabulate(wide.reset_index(), headers=[*index, *order], tablefmt="github", showindex=False)


def _orderings(spec: TableSpec, frame: pd.DataFrame) -> list[str]:
    """Per paper column: the paper's rows ordered by the paper's values and by ours (worst first), and whether the
    two orders agree. Only cells where both values exist take part."""
    both = frame.dropna(subset=["paper", "mean"])
    lines = []
    for (setting, column), cells in both.groupby(["setting", "column"], sort=False):
        if len(cells) < 2:
            continue
        worst_first = not spec.lower_is_better
        paper = cells.sort_values("paper", ascending=worst_first).row.tolist()
        ours = cells.sort_values("mean", ascending=worst_first).row.tolist()
        verdict = "the same order" if paper == ours else "a different order"
        lines.append(f"- {setting}, {column}: paper {' > '.join(paper)}; ours {' > '.join(ours)} ({verdict})")
    if not lines:
        return []
    return ["", f"Order of the paper's rows by {spec.metric}, largest first (ties within intervals still count):",
            "", *lines]


def markdown(spec: TableSpec, frame: pd.DataFrame) -> str:
    """The wide, human view: "ours ± ci (paper)" per cell, the robust view, paired differences, and the commands."""
    def cell(r: pd.Series) -> str:
        ours = "not run" if pd.isna(r["mean"]) else describe(r["mean"], r["ci95"], r["n"], r["diverged"])
        paper = "" if pd.isna(r["paper"]) else f" ({fmt(r['paper'])})"
        return ours + paper + ("" if pd.isna(r["vs_paper"]) else f" {MARKS[r['vs_paper']]}")

    lines = [f"# {spec.title}", "",
             f"Ours: {spec.metric}, mean ± 95% interval over test tasks; the paper's value in parentheses; "
             "≈ the paper's value lies in our interval, ▲ ours is better, ▼ ours falls short of the paper.", "",
             _wide(frame, spec, cell)]
    ran = frame.dropna(subset=["mean"])
    if not len(ran):
        return "\n".join(lines) + "\n"
    lines += ["", f"Median {spec.metric} / number of test tasks above 10 x the median (the tasks that can dominate a "
              "mean):", "", _wide(ran, spec, lambda r: f"{fmt(r['median'])} / {r['over_10x_median']}")]
    lines += _orderings(spec, frame)
    paired = ran.dropna(subset=["paired_diff"])
    if len(paired):
        lines += ["", f"Paired difference from {spec.paired_with} on the identical test tasks (row minus "
                  f"{spec.paired_with}, mean ± 95% interval; an interval above 0: {spec.paired_with} is better):", "",
                  _wide(paired, spec, lambda r: describe(r["paired_diff"], r["paired_diff_ci95"], r["n"],
                                                         int(not np.isfinite(r["paired_diff"]))))]
    lines += ["", "Written by `python -m harness report` from these runs:", ""]
    keys = ["learner", "command", "profile", "seeds", "device", "git_commit", "train_seconds"]
    for values, _ in ran.groupby(keys, sort=False, dropna=False):
        run = dict(zip(keys, values))
        trained = "" if pd.isna(run["train_seconds"]) else f", meta-trained in {run['train_seconds']:.0f} s"
        where = f"{run['profile']} profile, seeds {run['seeds']}, {run['device']}{trained}"
        lines.append(f"- {run['learner']} ({where}, commit {str(run['git_commit'])[:12]}): `{run['command']}`")
    return "\n".join(lines) + "\n"


def write(spec: TableSpec, store: Store, directory: Path, profile: str | None = None) -> tuple[Path, Path]:
    """Write `<name>.csv` and `<name>.md` into `directory`."""
    frame = build(spec, store, profile)
    directory.mkdir(parents=True, exist_ok=True)
    csv, md = directory / f"{spec.name}.csv", directory / f"{spec.name}.md"
    frame.to_csv(csv, index=False, float_format="%.6g")
    md.write_text(markdown(spec, frame))
    return csv, md


def paper_cells(reference_csv: Path, table: int) -> list[PaperCell]:
    """The paper's values of one table from a reference CSV (columns table,suite,setting,learner,column,value,ci95)."""
    ref = pd.read_csv(reference_csv)
    ref = ref[ref.table == table]
    return [PaperCell(r.setting, r.learner, r.column, float(r.value), None if np.isnan(r.ci95) else float(r.ci95))
            for r in ref.itertuples()]


def command_line(argv: Sequence[str]) -> str:
    """The command as a user would type it."""
    return "python -m harness " + shlex.join(argv)
