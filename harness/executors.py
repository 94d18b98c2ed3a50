"""Where the units of a sweep run: in this process (the default), in a local process pool, or on Ray.

A unit is one `RunSpec` (suite, learner, setting, seed, ...). Whatever runs it, `run_unit` does the work: it plans
the spec against the installed plugins, opens its own connection to the results store and calls
`runner.execute`, which skips a finished run, resumes an interrupted one from its checkpoint and writes the scores
together with the `done` status in one transaction - so a unit's results reach the store exactly once, even when an
executor runs it again after a crash. Workers of the pool and of Ray therefore need the output directory on a
filesystem they share with the command (always so on one machine; on a cluster, a shared mount).
"""
from __future__ import annotations

import concurrent.futures
import contextlib
import itertools
import multiprocessing
import os
import signal
import sys
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness import runner
from harness.errors import Stopped, UsageError, raise_stopped
from harness.machine import cpu_count
from harness.plugins import registry
from harness.protocols import Progress
from harness.runner import RunSpec
from harness.store import Store

EXECUTORS = ("inprocess", "pool", "ray")


@dataclass(frozen=True)
class Outcome:
    """What became of one unit: "done", "skipped" (already done) or "failed" (with the error)."""

    run_id: str
    status: str
    error: str | None = None


def run_unit(prepared: runner.PreparedRun, out: Path, command: str, progress: Progress, rerun: bool) -> Outcome:
    """Execute one prepared unit in its own store connection; an exception is a failed `Outcome` (the store has the
    run as failed), a KeyboardInterrupt propagates (the run stays resumable)."""
    store = Store(out)
    try:
        return Outcome(prepared.run_id, runner.execute(prepared, store, out, command, progress, rerun))
    except Exception as exc:
        return Outcome(prepared.run_id, "failed", f"{type(exc).__name__}: {exc}")
    finally:
        store.close()


def run_spec(spec: RunSpec, out: Path, command: str, rerun: bool) -> Outcome:
    """`run_unit` in a worker process: plans `spec` against the plugins installed there, no progress bars; SIGTERM
    stops it as Ctrl-C does (at the end of a training iteration, with its checkpoint)."""
    signal.signal(signal.SIGTERM, raise_stopped)
    return run_unit(runner.prepare(spec, registry()), out, command, runner.tqdm_progress(False), rerun)


@dataclass(frozen=True)
class Sweep:
    """The units of one command and where their results go."""

    units: Sequence[runner.PreparedRun]
    out: Path
    command: str
    rerun: bool = False


Report = Callable[[Outcome], None]
"""Called in the command's process once per unit, as each finishes."""


def in_process(sweep: Sweep, progress: Progress, report: Report) -> None:
    """Each unit in turn in this process, with its progress bars."""
    for prepared in sweep.units:
        report(run_unit(prepared, sweep.out, sweep.command, progress, sweep.rerun))


def process_pool(sweep: Sweep, jobs: int, progress: Progress, report: Report) -> None:
    """Up to `jobs` units at once, each in a fresh process (spawned: no state inherited from this one). A unit
    starts only when one finishes, so that Ctrl-C (which reaches the workers too: each running unit stops at its
    next checkpoint) starts no further unit, even in a command started with SIGINT ignored (`command &` in a
    script)."""
    if (warning := oversubscription(sweep.units, jobs, cpu_count())) is not None:
        print(warning, file=sys.stderr, flush=True)
    context = multiprocessing.get_context("spawn")
    pending = iter(sweep.units)

    def submit(pool: concurrent.futures.Executor, count: int) -> set[concurrent.futures.Future]:
        return {pool.submit(run_spec, u.spec, sweep.out, sweep.command, sweep.rerun)
                for u in itertools.islice(pending, count)}

    with _ctrl_c_interrupts(), concurrent.futures.ProcessPoolExecutor(jobs, mp_context=context) as pool, \
            _sweep_bar(progress, len(sweep.units)) as tick:
        running = submit(pool, jobs)
        try:
            while running:
                finished, running = concurrent.futures.wait(running, return_when="FIRST_COMPLETED")
                for future in finished:
                    report(future.result())
                    tick()
                    running |= submit(pool, 1)
        except KeyboardInterrupt as exc:
            if isinstance(exc, Stopped):  # a scheduler's SIGTERM reaches this process only: pass it on
                for worker in multiprocessing.active_children():
                    os.kill(worker.pid, exc.signum)
            concurrent.futures.wait(running)  # the running units stop at their checkpoints
            raise


def oversubscription(units: Sequence[runner.PreparedRun], jobs: int, cpus: int) -> str | None:
    """A one-line warning when `jobs` units at once would run more torch threads (each unit's `threads`) than the
    `cpus` there are, else None: oversubscribed, every unit slows down far more than in proportion."""
    threads = sorted((u.config.get("threads", 1) for u in units), reverse=True)[:jobs]
    if sum(threads) <= cpus:
        return None
    return (f"warning: --jobs {jobs} runs up to {sum(threads)} torch threads at once on {cpus} CPUs, so each unit "
            f"slows down several times over; use --jobs {max(1, cpus // max(threads))} or --set threads=1")


@contextlib.contextmanager
def _ctrl_c_interrupts() -> Iterator[None]:
    """SIGINT raises KeyboardInterrupt here (Python's default) while the block runs, even where the command was
    started with SIGINT ignored; only the main thread may set signal handlers, elsewhere nothing changes."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def ray_cluster(sweep: Sweep, address: str | None, progress: Progress, report: Report) -> None:
    """Every unit as a Ray task asking for the unit's CPU threads (and one GPU on `cuda`), on the cluster at
    `address`, or on a local Ray instance started (and stopped) here when None. A task whose worker dies is
    retried once; `run_unit` makes the retry resume rather than repeat."""
    ray = _import_ray()
    started_here = not ray.is_initialized()
    if started_here:
        try:
            ray.init(address=address, include_dashboard=False, log_to_driver=False, configure_logging=False)
        except (ConnectionError, ValueError, RuntimeError) as exc:
            raise UsageError(f"cannot reach a Ray cluster at {address or 'a new local instance'} ({exc}); "
                             "check --address (host:port of the head node) or leave it out") from None
    try:
        remote = ray.remote(max_retries=1)(run_spec)
        pending = {
            remote.options(num_cpus=u.config["threads"], num_gpus=1 if u.spec.device.startswith("cuda") else 0)
            .remote(u.spec, sweep.out, sweep.command, sweep.rerun): u for u in sweep.units}
        with _sweep_bar(progress, len(pending)) as tick:
            while pending:
                finished, _ = ray.wait(list(pending), num_returns=1)
                for ref in finished:
                    prepared = pending.pop(ref)
                    try:
                        report(ray.get(ref))
                    except ray.exceptions.RayError as exc:
                        report(Outcome(prepared.run_id, "failed", f"{type(exc).__name__}: {exc}"))
                    tick()
    finally:
        if started_here:
            ray.shutdown()


def _import_ray() -> Any:
    try:
        import ray
    except ImportError:
        raise UsageError('--executor ray needs Ray: pip install ".[ray]" (or pip install ray)') from None
    return ray


@contextlib.contextmanager
def _sweep_bar(progress: Progress, total: int) -> Iterator[Callable[[], None]]:
    """A progress bar over a sweep's units, for the executors whose units run elsewhere; yields its tick."""
    bar = progress(total, "sweep")
    try:
        yield lambda: bar.update(1)
    finally:
        bar.close()


def execute(sweep: Sweep, executor: str, jobs: int, address: str | None, progress: Progress) -> list[Outcome]:
    """Run every unit of `sweep` on `executor`, reporting each one on stderr as it finishes; returns the outcomes
    in the order they finished."""
    outcomes: list[Outcome] = []

    def report(outcome: Outcome) -> None:
        outcomes.append(outcome)
        said = f"failed: {outcome.error}" if outcome.status == "failed" else outcome.status
        print(f"{outcome.run_id}: {said}", file=sys.stderr, flush=True)

    if executor == "inprocess":
        in_process(sweep, progress, report)
    elif executor == "pool":
        process_pool(sweep, jobs, progress, report)
    else:
        ray_cluster(sweep, address, progress, report)
    return outcomes


def choose(executor: str | None, jobs: int | None, address: str | None) -> tuple[str, int]:
    """The executor and pool size the flags ask for: `--jobs N` (N > 1) alone means a process pool; every
    inconsistent combination is a UsageError."""
    if jobs is not None and jobs < 1:
        raise UsageError(f"--jobs {jobs}: give a positive number of processes, e.g. --jobs {cpu_count()}")
    if executor is None:
        executor = "pool" if jobs is not None and jobs > 1 else "inprocess"
    if executor not in EXECUTORS:
        raise UsageError(f"unknown executor {executor!r}; choose one of {', '.join(EXECUTORS)}")
    if address is not None and executor != "ray":
        raise UsageError("--address names a Ray cluster; add --executor ray or leave out --address")
    if jobs is not None and executor == "ray":
        raise UsageError("--jobs sizes the process pool; Ray schedules units by the CPUs each asks for "
                         "(--set threads=N): leave out --jobs")
    if jobs is not None and jobs > 1 and executor == "inprocess":
        raise UsageError(f"--jobs {jobs} needs --executor pool (in-process runs one unit at a time)")
    return executor, jobs or 1
