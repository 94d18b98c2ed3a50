"""`python -m harness run | status | report | tasks | check | data | list`.

Bad input: one line on stderr naming the problem and the fix, exit status 2."""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import sys
import threading
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, NoReturn

from tabulate import tabulate

from harness import checkpoints, executors, runner, tables
from harness.config import parse_assignments
from harness.errors import Stopped, UsageError, raise_stopped
from harness.plugins import Registry, registry
from harness.store import DB_NAME, Store, SweepUnit

MAX_SEED = 2**63 - 1  # the largest integer the results store (SQLite INTEGER) holds
DEFAULT_OUT = Path("runs")  # where `run`, `status` and `check` keep their store by default
DEFAULT_STORE = Path("results") / "store"  # the committed store: every committed table cell comes from it
DEFAULT_TABLES = Path("results") / "tables"  # the committed tables, written from DEFAULT_STORE


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{message} (see `python -m harness {self.prog.split()[-1]} --help`)")


def _names(text: str, what: str, example: str = "maml,fomaml") -> list[str]:
    names = [n.strip() for n in text.split(",") if n.strip()]
    if not names:
        raise UsageError(f"--{what} is empty; give a comma-separated list, e.g. --{what} {example}")
    if twice := sorted({n for n in names if names.count(n) > 1}):
        raise UsageError(f"--{what} names {', '.join(twice)} more than once; give each once")
    return names


def _seeds(text: str) -> list[int]:
    try:
        seeds = [int(s) for s in text.split(",")]
    except ValueError:
        raise UsageError(f"--seeds {text!r} is not a comma-separated list of integers, e.g. --seeds 0,1,2") from None
    if any(s < 0 or s > MAX_SEED for s in seeds) or len(set(seeds)) != len(seeds):
        raise UsageError(f"--seeds {text!r}: seeds must be distinct non-negative integers up to 2**63 - 1")
    return seeds


def _path(text: str) -> Path:
    """A path argument; an empty one (which would mean the current directory) is refused."""
    if not text.strip():
        raise argparse.ArgumentTypeError("is empty; give a directory, e.g. runs")
    return Path(text)


def _count(low: int) -> Callable[[str], int]:
    """An argparse type: an integer of at least `low`."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"{value} is below {low}; give an integer of at least {low}")
        return value
    return parse


def _check_writable_dir(path: Path, flag: str) -> None:
    """A UsageError unless `path` is a writable directory or can be made one; creates nothing."""
    if path.exists() and not path.is_dir():
        raise UsageError(f"{flag} {path} is a file, not a directory; give a directory")
    existing = next(p for p in [path, *path.absolute().parents] if p.exists())
    if not existing.is_dir():
        raise UsageError(f"{flag} {path} cannot be created ({existing} is a file); give a writable directory")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise UsageError(f"{flag} {path} is not writable ({existing} is not); give a writable directory")


def _writable_dir(path: Path, flag: str) -> Path:
    """`path` created if needed (`_check_writable_dir` first); a path that cannot be a writable directory is a
    UsageError."""
    _check_writable_dir(path, flag)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UsageError(f"{flag} {path} cannot be created ({exc.strerror}); give a writable directory") from None
    return path


def cmd_run(args: argparse.Namespace, reg: Registry, argv: Sequence[str]) -> int:
    executor, jobs = executors.choose(args.executor, args.jobs, args.address)
    settings = _names(args.setting, "setting", "5way-1shot,20way-5shot") if args.setting is not None else [None]
    specs = [runner.RunSpec(args.suite, learner, args.profile, seed, args.device, parse_assignments(args.set), setting)
             for setting in settings for learner in _names(args.learners, "learners") for seed in _seeds(args.seeds)]
    prepared = runner.plan(specs, reg)
    if not args.allow_dirty:
        _refuse_dirty_paper_runs(prepared)
    if args.resume_from is not None:
        if len(prepared) != 1:
            raise UsageError(f"--resume-from continues one run, this command has {len(prepared)}; "
                             "give one learner, seed and setting")
        if not (args.out / DB_NAME).is_file():
            raise UsageError(f"--resume-from {args.resume_from}: {args.out} holds no results store; give the --out "
                             "of the run to continue")
    out = _writable_dir(args.out, "--out")
    store = Store(out)
    command = tables.command_line(argv)
    if args.resume_from is not None:
        runner.continue_from(prepared[0], args.resume_from, store, out)
    store.add_sweep([SweepUnit(r.run_id, r.spec.suite, r.spec.learner, r.spec.setting, r.spec.profile,
                               r.spec.seed) for r in prepared], command)
    sweep = executors.Sweep(prepared, out, command, args.rerun)
    outcomes = executors.execute(sweep, executor, jobs, args.address, runner.tqdm_progress(not args.quiet))
    failed = {o.run_id for o in outcomes if o.status == "failed"}
    print(summary(store, [run.run_id for run in prepared if run.run_id not in failed], reg))
    store.close()
    return 1 if failed else 0


def _refuse_dirty_paper_runs(prepared: Sequence[runner.PreparedRun]) -> None:
    """A UsageError when a paper-profile run would start from a working tree with uncommitted changes (outside
    results/): its numbers would come from code nobody can recover."""
    commit = runner.git_commit()
    if commit and commit.endswith("-dirty") and any(run.spec.profile == "paper" for run in prepared):
        raise UsageError(f"the working tree of {commit.removesuffix('-dirty')[:12]} has uncommitted changes outside "
                         "results/, and a paper-profile result must come from committed code; commit them first, or "
                         "pass --allow-dirty (recorded with the run, its table cells marked)")


def summary(store: Store, run_ids: list[str], reg: Registry) -> str:
    """Mean ± 95% interval per learner, shots and step for the given runs (steps 0, 1, 5, 10 and the last), a
    diverged task counting as the worst value of its suite's metric."""
    from harness.stats import summarize

    scores = store.scores(run_ids)
    runs = store.runs().set_index("run_id")
    rows = []
    for (run_id, metric, shots), group in scores.groupby(["run_id", "metric", "shots"], sort=False):
        cells = {}
        for step, s in group.groupby("step"):
            if step in (0, 1, 5, 10, group.step.max()):
                lower_is_better = reg.suite(runs.suite[run_id]).lower_is_better
                cells[f"{step} steps"] = summarize(s.value.to_numpy(), lower_is_better).describe()
        rows.append({"learner": runs.learner[run_id], "seed": runs.seed[run_id], "shots": shots, "metric": metric,
                     **cells})
    return tabulate(rows, headers="keys", tablefmt="github")


def _require_store(out: Path) -> None:
    if not (out / DB_NAME).exists():
        raise UsageError(f"no results store at {out / DB_NAME}; run `python -m harness run` first or pass --out DIR")


def cmd_report(args: argparse.Namespace, reg: Registry, argv: Sequence[str]) -> int:
    """Write the tables, then the figures, of the store in --out. The defaults pair the committed store with the
    committed tables and figures (results/store -> results/tables, results/figures); another store's go beside it
    (<out>/tables, <out>/figures). Every table is built before any is written, and none is written when one would
    replace a cell that has a value with "not run" (unless --allow-drop)."""
    if args.profile is not None and args.profile not in runner.PROFILES:
        raise UsageError(f"unknown profile {args.profile!r}; choose one of {', '.join(runner.PROFILES)}")
    _require_store(args.out)
    names = _names(args.tables, "tables") if args.tables else sorted(reg.tables)
    specs = [reg.tables[n].obj if n in reg.tables else _unknown_table(n, reg) for n in names]
    results = args.results or (DEFAULT_TABLES if args.out == DEFAULT_STORE else args.out / "tables")
    figures = args.figures or results.parent / "figures"
    _check_writable_dir(results, "--results")
    _check_writable_dir(figures, "--figures")
    store = Store(args.out)
    strays = [tables.Checkpoint(made[0].suite, made[0].learner, made[0].profile, json.dumps(made[1]), progress)
              for _, made, progress in _strays(store, reg, args.out) if made is not None]
    frames = [(spec, tables.build(spec, store, reg.suite(spec.suite).lower_is_better, args.profile, strays))
              for spec in specs]
    if not args.allow_drop:
        _refuse_drops(frames, results, args.out)
    for spec, frame in frames:
        with _writing(tables.paths(spec, results)[0], "--results"):
            csv, md = tables.write(spec, frame, results)
        print(md.read_text())
        print(f"wrote {csv} and {md}", file=sys.stderr)
    _write_figures(args, reg, store, figures)
    store.close()
    return 0


def _refuse_drops(frames: Sequence[tuple[tables.TableSpec, Any]], results: Path, out: Path) -> None:
    """A UsageError naming the cells that writing `frames` into `results` would replace with "not run"."""
    drops = [(spec, cells) for spec, frame in frames
             if (cells := tables.dropped(frame, tables.paths(spec, results)[0]))]
    if drops:
        count = sum(len(cells) for _, cells in drops)
        (spec, cells), *_ = drops
        raise UsageError(f"report would replace {count} cell(s) that have values with \"not run\" in "
                         f"{', '.join(spec.name for spec, _ in drops)} under {results} (e.g. {spec.name}: "
                         f"{cells[0]}): the store {out} has no finished run for them; pass the store that has them "
                         "with --out, write elsewhere with --results, or drop them with --allow-drop")


@contextlib.contextmanager
def _writing(path: Path, flag: str) -> Iterator[None]:
    """An OSError (full disk, permissions) in the block becomes a UsageError that names `path`."""
    try:
        yield
    except OSError as exc:
        raise UsageError(f"could not write {path} ({exc.strerror or exc}); free some space or give a writable "
                         f"{flag}") from None


def _write_figures(args: argparse.Namespace, reg: Registry, store: Store, directory: Path) -> None:
    """Draw every installed figure into `directory`; one line on stderr per figure, written or not."""
    for name, provided in sorted(reg.figures.items()):
        with _writing(directory / f"{name}.png", "--figures"):
            path = provided.obj.make(store, args.out, reg, directory, args.profile)
        done = f"wrote {path}" if path else f"{name}: no runs of {provided.obj.suite} it can draw; not written"
        print(done, file=sys.stderr)


def cmd_status(args: argparse.Namespace, reg: Registry, argv: Sequence[str]) -> int:
    """The units of the latest sweep (every sweep with --all): done, running, interrupted, failed or pending; then
    the training checkpoints of runs the store has no record of, with the commands that resume them."""
    from harness.sweeps import describe_strays, describe_sweeps

    _require_store(args.out)
    store = Store(args.out)
    units = store.sweeps()
    unfinished = units.status.isin(["running", "failed"])
    units["progress"] = [checkpoints.training_progress(args.out / run_id, json.loads(config), pace=True)
                         if open_ else None for run_id, config, open_ in zip(units.run_id, units.config, unfinished)]
    print(describe_sweeps(units, latest_only=not args.all))
    if strays := _strays(store, reg, args.out, pace=True):
        print("\n" + describe_strays([_resume_stray(*stray, args.out) for stray in strays]))
    store.close()
    return 0


def _strays(store: Store, reg: Registry, out: Path, pace: bool = False) \
        -> list[tuple[str, tuple[runner.RunSpec, dict[str, Any]] | None, str | None]]:
    """The training checkpoints in `out` without a run in `store`: run id, the spec and config that make it (None:
    made with --set values or on another device) and how far it trained."""
    made = {run_id: runner.identify(run_id, reg)
            for run_id in runner.stray_checkpoints(out, set(store.runs(status=None).run_id))}
    return [(run_id, spec, checkpoints.training_progress(out / run_id, spec[1] if spec else {}, pace=pace))
            for run_id, spec in made.items()]


def _resume_stray(run_id: str, made: tuple[runner.RunSpec, dict[str, Any]] | None, progress: str | None,
                  out: Path) -> dict[str, str | None]:
    """A stray checkpoint's row for `describe_strays`: how far it trained and the `run` command that resumes it."""
    if made is None:
        return {"run_id": run_id, "progress": progress, "command": None}
    spec = made[0]
    options = (f" --setting {spec.setting}" if spec.setting else "") + (f" --seeds {spec.seed}" if spec.seed else "")
    return {"run_id": run_id, "progress": progress, "command": f"python -m harness run --suite {spec.suite} "
            f"--learners {spec.learner} --profile {spec.profile}{options} --out {out}"}


def cmd_tasks(args: argparse.Namespace, reg: Registry, argv: Sequence[str]) -> int:
    from harness.diagnose import worst_tasks

    _require_store(args.out)
    store = Store(args.out)
    where = {k: _json_or_text(v) for k, v in parse_assignments(args.where).items()}
    table, summary = worst_tasks(store, reg, args.suite, args.learner, args.shots, args.step, args.worst, args.profile,
                                 where)
    print(tabulate(table.reset_index(), headers="keys", tablefmt="github", showindex=False, floatfmt=".3g"))
    for key, value in summary.items():
        print(f"{key}: {value}")
    store.close()
    return 0


def _json_or_text(value: str) -> object:
    """A --where value as the config stores it: a number, boolean or list when it parses as JSON, else the text."""
    try:
        return json.loads(value)
    except json.JSONDecodeError:
        return value


def cmd_check(args: argparse.Namespace, reg: Registry, argv: Sequence[str]) -> int:
    """Run the learners (seed 0, CPU, the profile with any --set overrides) and compare their per-task scores with
    the reference of that config, in the suite's metric direction, or record them there with --update (and with
    --spread-seeds N the spread of seeds 0..N-1). Exit 1 when a cell is significantly and practically worse, or a
    run failed."""
    import pandas as pd

    from harness import regression

    suite = reg.suite(args.suite)
    learners = (_names(args.learners, "learners") if args.learners is not None
                else [name for name, p in sorted(reg.learners.items()) if p.obj.applies_to(suite)])
    if not learners:
        raise UsageError(f"no installed learner applies to suite {args.suite}; see `python -m harness list`")
    if args.spread_seeds is not None and (not args.update or args.spread_seeds < regression.MIN_SEEDS):
        raise UsageError(f"--spread-seeds records a reference's seed spread: use it with --update and at least "
                         f"{regression.MIN_SEEDS} seeds")
    seeds = range(args.spread_seeds or 1)
    overrides = parse_assignments(args.set)
    prepared = runner.plan([runner.RunSpec(args.suite, learner, args.profile, seed, overrides=overrides)
                            for seed in seeds for learner in learners], reg)
    path = regression.reference_path(args.reference, args.suite, args.profile, overrides)
    spread_path = regression.seeds_path(args.reference, args.suite, args.profile, overrides)
    if args.update:  # every check before anything is created: a refused command leaves nothing behind
        _check_writable_dir(args.reference, "--reference")
    _check_writable_dir(args.out, "--out")
    reference = regression.load_reference(path, missing_ok=args.update)
    spread = regression.load_seeds(spread_path)
    out = _writable_dir(args.out, "--out")
    store = Store(out)
    command = tables.command_line(argv)
    progress = runner.tqdm_progress(not args.quiet)
    unit = {run.run_id: (run.spec.learner, run.spec.seed) for run in prepared}
    outcomes = executors.execute(executors.Sweep(prepared, out, command), "inprocess", 1, None, progress)
    failed = sorted({unit[o.run_id][0] for o in outcomes if o.status == "failed"})
    scores = store.scores(unit)
    store.close()
    scores = scores.assign(learner=scores.run_id.map(lambda r: unit[r][0]),
                           seed=scores.run_id.map(lambda r: unit[r][1]))
    lower_is_better = suite.lower_is_better
    new = regression.reduce(scores[scores.seed == 0], lower_is_better)
    if args.update:
        if failed:
            print(f"check failed: run failed: {', '.join(failed)}; reference not written", file=sys.stderr)
            return 1
        _writable_dir(args.reference, "--reference")
        regression.write_reference(path, regression.replace_learners(reference, new))
        if args.spread_seeds is not None:
            reduced = pd.concat([regression.reduce(g, lower_is_better).assign(seed=seed)
                                 for seed, g in scores.groupby("seed")])
            regression.write_seeds(spread_path, regression.replace_learners(spread, regression.seed_centres(reduced)))
        elif not spread.empty:  # the recorded spread belonged to the replaced seed-0 runs' code: drop it
            regression.write_seeds(spread_path, spread[~spread.learner.isin(learners)])
        print(f"wrote the reference of {', '.join(learners)} to {path}"
              + (f" and the spread of seeds 0-{args.spread_seeds - 1} to {spread_path}" if args.spread_seeds else ""),
              file=sys.stderr)
        return 0
    result = regression.compare(reference, new, lower_is_better, seeds=spread)
    shown = result.astype(object).where(result.notna(), None)
    print(tabulate(shown, headers=["learner", "metric", "shots", "step", "tasks", "reference mean", "new mean",
                                   "mean difference", "p (Bonferroni)", "seeds low", "seeds high", "verdict"],
                   tablefmt="github", showindex=False, missingval="",
                   floatfmt=("", "", "", "", "", ".4g", ".4g", ".3g", ".2g", ".4g", ".4g", "")))
    print(f"worse (better): one-sided Wilcoxon signed-rank p < {regression.ALPHA} after Bonferroni over "
          f"{(result.verdict != 'no reference').sum()} cells, the mean (the median where a task diverged) worse "
          f"(better) by more than {regression.RELATIVE_TOLERANCE:.0%}, and where {spread_path} has the cell's seed "
          f"spread, the centre outside [seeds low, seeds high] (a {1 - 2 * regression.ALPHA:.0%} prediction interval "
          "of one more seed, Bonferroni over the learners)")
    if untested := sorted(set(result.learner[result.verdict == "no reference"])):
        print(f"no reference for {', '.join(untested)} in {path}; record it with: {command} --update", file=sys.stderr)
    worse = sorted(set(result.learner[result.verdict == "worse"]))
    problems = ([f"worse than the reference: {', '.join(worse)}"] if worse else []) + \
        ([f"run failed: {', '.join(failed)}"] if failed else [])
    if problems:
        print(f"check failed: {'; '.join(problems)}", file=sys.stderr)
    return 1 if problems else 0


def cmd_data(args: argparse.Namespace, reg: Registry, argv: Sequence[str]) -> int:
    """Prepare a dataset from its raw archives into the cache."""
    from harness.data import cache_dir, data_dir

    if args.name not in reg.datasets:
        known = ", ".join(sorted(reg.datasets)) or "none installed"
        raise UsageError(f"unknown dataset {args.name!r}; known datasets: {known}")
    source = data_dir(args.data_dir, args.cache)
    dataset = reg.datasets[args.name].obj
    if args.download:
        dataset.download(source)
    if not source.is_dir():
        raise UsageError(f"data directory {source} does not exist; pass --data-dir or set HARNESS_DATA to the folder "
                         f"that holds the raw {args.name} archives")
    cache = cache_dir(args.cache)
    new_cache = not cache.exists()
    try:
        print(dataset.prepare(source, _writable_dir(cache, "--cache")))
    except BaseException:
        if new_cache and cache.is_dir() and not any(cache.iterdir()):
            cache.rmdir()  # a failed preparation leaves nothing behind, not even the cache folder it made
        raise
    return 0


def _unknown_table(name: str, reg: Registry) -> NoReturn:
    raise UsageError(f"unknown table {name!r}; known tables: {', '.join(sorted(reg.tables))}")


def cmd_list(args: argparse.Namespace, reg: Registry, argv: Sequence[str]) -> int:
    rows = [["suite", name, p.dist, _suite_scope(p.obj), _first_line(p.obj.__doc__)]
            for name, p in sorted(reg.suites.items())]
    for name, p in sorted(reg.learners.items()):
        applies = [s for s, suite in sorted(reg.suites.items()) if p.obj.applies_to(suite.obj)]
        rows.append(["learner", name, p.dist, "applies to: " + (", ".join(applies) or "no installed suite"),
                     p.obj.description])
    for name, p in sorted(reg.tables.items()):
        rows.append(["table", name, p.dist, "suite: " + p.obj.suite, p.obj.title])
    for name, p in sorted(reg.figures.items()):
        rows.append(["figure", name, p.dist, "suite: " + p.obj.suite, p.obj.title])
    for name, p in sorted(reg.datasets.items()):
        rows.append(["dataset", name, p.dist, "data prepare " + name, p.obj.description])
    print(tabulate(rows, headers=["kind", "name", "plugin", "scope", "description"],
                   tablefmt="github"))
    for failure in reg.failures:
        print(f"warning: {failure}", file=sys.stderr)
    return 0


def _suite_scope(suite: type) -> str:
    settings = suite.settings
    return "profiles: " + ", ".join(suite.profiles) + ("; settings: " + ", ".join(settings) if settings else "")


def _first_line(doc: str | None) -> str:
    return doc.strip().splitlines()[0] if doc else ""


def parser() -> argparse.ArgumentParser:
    top = _Parser(prog="python -m harness", description="A benchmark harness for meta-learning.")
    sub = top.add_subparsers(dest="command", required=True, parser_class=_Parser)
    run = sub.add_parser("run", help="meta-train and evaluate learners on a suite")
    run.add_argument("--suite", required=True, help="a suite name (see `list`)")
    run.add_argument("--learners", required=True, help="comma-separated learner names, e.g. maml,fomaml")
    run.add_argument("--profile", default="quick", help="smoke | quick | paper (default: quick)")
    run.add_argument("--setting", default=None,
                     help="comma-separated settings of the suite, e.g. 5way-1shot,20way-5shot (see `list`; default: "
                          "the suite's first)")
    run.add_argument("--seeds", default="0", help="comma-separated seeds (default: 0)")
    run.add_argument("--device", default="cpu", help="cpu | cuda (default: cpu)")
    run.add_argument("--out", type=_path, default=DEFAULT_OUT, help="output directory with the results store")
    run.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                     help="override a config key in every unit whose config has it; LEARNER.KEY=VALUE in that "
                          "learner's units only (e.g. --learners maml,fomaml --set maml.inner_lr=0.1)")
    run.add_argument("--rerun", action="store_true",
                     help="compute runs again from scratch, finished or interrupted, replacing their scores (a run is "
                          "identified by its config, so after a code change that alters results, finished runs would "
                          "otherwise be skipped and interrupted ones resumed; resume a --rerun sweep without it)")
    run.add_argument("--resume-from", default=None, metavar="RUN_ID",
                     help="begin the run from the training checkpoint of an unfinished run in --out with the same "
                          "config on another device (e.g. a GPU run going on with --device cpu)")
    run.add_argument("--executor", default=None, help="inprocess | pool | ray (default: inprocess; pool with --jobs)")
    run.add_argument("--jobs", type=int, default=None, help="run up to N units at once in a local process pool")
    run.add_argument("--address", default=None,
                     help="with --executor ray: the address of a running Ray cluster (default: start a local one)")
    run.add_argument("--allow-dirty", action="store_true",
                     help="start paper-profile runs from a working tree with uncommitted changes (refused without "
                          "it; the run records its commit as <sha>-dirty and its table cells are marked)")
    run.add_argument("--quiet", action="store_true", help="no progress bars")
    run.set_defaults(fn=cmd_run)
    status = sub.add_parser("status", help="the units of the latest sweep: done, running, interrupted, failed, "
                                           "pending; and checkpoints the store has no record of")
    status.add_argument("--out", type=_path, default=DEFAULT_OUT, help="output directory with the results store")
    status.add_argument("--all", action="store_true", help="every sweep recorded in the store, oldest first")
    status.set_defaults(fn=cmd_status)
    report = sub.add_parser("report", help="write the tables (CSV + Markdown) and figures (PNG) from the results store")
    report.add_argument("--out", type=_path, default=DEFAULT_STORE,
                        help=f"output directory with the results store (default: the committed one, {DEFAULT_STORE})")
    report.add_argument("--results", type=_path, default=None,
                        help=f"where tables are written (default: {DEFAULT_TABLES} for the committed store, else "
                             "tables/ inside --out)")
    report.add_argument("--figures", type=_path, default=None,
                        help="where figures (PNG) are written (default: figures/ beside --results)")
    report.add_argument("--allow-drop", action="store_true",
                        help="write tables even where a cell that has a value in the table already there would "
                             "become \"not run\" (without it, report refuses and names the cells)")
    report.add_argument("--tables", default="", help="comma-separated table names (default: all)")
    report.add_argument("--profile", default=None, help="report only runs of this profile (default: the most thorough)")
    report.set_defaults(fn=cmd_report)
    tasks = sub.add_parser("tasks", help="the worst test tasks of a finished run, with their task parameters")
    tasks.add_argument("--suite", required=True, help="a suite name (see `list`)")
    tasks.add_argument("--learner", required=True, help="one learner name, e.g. maml")
    tasks.add_argument("--shots", type=_count(1), required=True,
                       help="the scores at this many shots (K; on RL suites, the paths per adaptation step)")
    tasks.add_argument("--step", type=_count(0), required=True,
                       help="rank the tasks by their score after this many adaptation steps")
    tasks.add_argument("--worst", type=_count(1), default=10, help="how many tasks to show (default: 10)")
    tasks.add_argument("--profile", default=None, help="the profile's runs (default: the most thorough)")
    tasks.add_argument("--where", action="append", default=[], metavar="KEY=VALUE",
                       help="only runs whose config has this value, e.g. --where ways=20 --where model=conv")
    tasks.add_argument("--out", type=_path, default=DEFAULT_STORE,
                       help=f"output directory with the results store (default: the committed one, {DEFAULT_STORE})")
    tasks.set_defaults(fn=cmd_tasks)
    check = sub.add_parser("check", help="regression check: rerun learners, compare per-task scores with a reference")
    check.add_argument("--suite", required=True, help="a suite name (see `list`)")
    check.add_argument("--learners", default=None, help="comma-separated learner names (default: all that apply)")
    check.add_argument("--profile", default="quick", help="smoke | quick | paper (default: quick)")
    check.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                       help="override a config key of the profile (e.g. to fit CI); the overrides, sorted by key, "
                            "name the reference file: <suite>-<profile>-KEY=VALUE[-KEY=VALUE...].csv")
    check.add_argument("--out", type=_path, default=DEFAULT_OUT, help="output directory with the results store")
    check.add_argument("--reference", type=_path, default=Path("results") / "reference",
                       help="directory of the reference files, <suite>-<profile>[-KEY=VALUE...].csv (default: "
                            "results/reference)")
    check.add_argument("--update", action="store_true", help="record the scores as the reference instead of comparing")
    check.add_argument("--spread-seeds", type=int, default=None, metavar="N",
                       help="with --update, also run seeds 1..N-1 and record the spread of each cell over seeds "
                            "0..N-1: a check then holds a cell to that spread (another CPU's rounding moves a run "
                            "as much as another seed)")
    check.add_argument("--quiet", action="store_true", help="no progress bars")
    check.set_defaults(fn=cmd_check)
    data = sub.add_parser("data", help="prepare a dataset (extract, verify, cache) for the suites that read it")
    data_sub = data.add_subparsers(dest="action", required=True, parser_class=_Parser)
    prepare = data_sub.add_parser("prepare", help="extract and verify a dataset's archives into the cache")
    prepare.add_argument("name", help="a dataset name, e.g. omniglot")
    prepare.add_argument("--data-dir", type=_path, default=None, help="where the raw archives are (default: "
                         "$HARNESS_DATA, else <cache>/data)")
    prepare.add_argument("--cache", type=_path, default=None, help="writable cache (default: $HARNESS_CACHE, else "
                         "~/.cache/maml-harness)")
    prepare.add_argument("--download", action="store_true",
                         help="first fetch the official archives into the data directory (checks their md5)")
    prepare.set_defaults(fn=cmd_data)
    lst = sub.add_parser("list", help="list the installed suites, learners, tables and figures with their plugins")
    lst.set_defaults(fn=cmd_list)
    return top


def main(argv: Sequence[str] | None = None) -> int:
    """The command line: 0 done, 1 a run failed or a check found a regression, 2 bad input (one line on stderr),
    128 + N stopped by signal N (SIGINT, SIGTERM: the running unit checkpoints first where it can)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        with _stop_on_sigterm():
            args = parser().parse_args(argv)
            return args.fn(args, registry(), argv)
    except UsageError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as exc:
        signum = exc.signum if isinstance(exc, Stopped) else signal.SIGINT
        from harness.sweeps import resume_command
        again = "the same command" if "--rerun" not in argv else f"`{resume_command(tables.command_line(argv))}`"
        print(f"interrupted ({signal.Signals(signum).name}); run {again} to resume from the last checkpoint",
              file=sys.stderr)
        return 128 + signum


@contextlib.contextmanager
def _stop_on_sigterm() -> Iterator[None]:
    """SIGTERM raises `Stopped` as Ctrl-C raises KeyboardInterrupt (only in the main thread, which alone may set
    handlers): cleanups run and a run stays resumable, instead of the process dying on the spot."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, raise_stopped)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
