"""Crash safety end to end, with real processes: SIGKILL at random points and Ctrl-C, each followed by the same
command again. Nothing finished is lost, the store stays intact, and the final scores equal an uninterrupted run's."""
import os
import random
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
import torch

from harness.store import Store

# 2 learners x 600 meta-iterations of the sinusoid smoke profile: ~10-20 s of training, a checkpoint every other
# iteration (so that kills also land while one is written), then evaluation and the store's transaction.
SWEEP = [sys.executable, "-m", "harness", "run", "--suite", "sinusoid", "--learners", "maml,fomaml", "--profile",
         "smoke", "--set", "meta_iterations=600"]
KILLS = 6
REACH = 0.9  # the share of the uninterrupted sweep's work within which the kills land
ATTEMPTS = 3  # kill sequences tried, each with half the last one's reach, before a fast spell fails the test


def start(out: Path, log: Path, every: int = 2) -> subprocess.Popen:
    """The sweep, checkpointing every `every` iterations, with its progress bars written to `log`: the first bytes
    there say that start-up (imports, plugins) is over and the first run has begun."""
    with log.open("wb") as err:
        return subprocess.Popen([*SWEEP, "--set", f"checkpoint_every={every}", "--out", str(out)],
                                stdout=subprocess.DEVNULL, stderr=err)


def begun(process: subprocess.Popen, log: Path) -> bool:
    """Waits until `process` has begun its first run (True) or exited before that (False)."""
    deadline = time.monotonic() + 300
    while log.stat().st_size == 0:
        if process.poll() is not None:
            return False
        assert time.monotonic() < deadline, "the sweep wrote no progress within 300 s of its start"
        time.sleep(0.01)
    return True


def finish(out: Path, every: int = 2) -> str:
    done = subprocess.run([*SWEEP, "--set", f"checkpoint_every={every}", "--quiet", "--out", str(out)],
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    return done.stderr


def query(out: Path, sql: str) -> list[tuple]:
    """Rows of `sql` on a copy of the store, taken after its writer has exited, and recovered as the next run will
    recover it: a kill inside a transaction leaves a hot journal, which only a writable connection can roll back.
    No rows while the store or its tables do not exist yet (killed that early)."""
    if not (out / "results.sqlite").exists():
        return []
    with tempfile.TemporaryDirectory() as copy:
        for name in ("results.sqlite", "results.sqlite-journal"):
            if (out / name).exists():
                shutil.copyfile(out / name, Path(copy) / name)
        db = sqlite3.connect(Path(copy) / "results.sqlite", timeout=60)
        try:
            return db.execute(sql).fetchall()
        except sqlite3.OperationalError as exc:
            assert "no such table" in str(exc)
            return []
        finally:
            db.close()


def scores(out):
    return query(out, "SELECT run_id, task, shots, step, metric, value FROM scores ORDER BY 1, 2, 3, 4, 5")


def done_runs(out):
    return {r for (r,) in query(out, "SELECT run_id FROM runs WHERE status = 'done'")}


def running(out):
    return [r for (r,) in query(out, "SELECT run_id FROM runs WHERE status = 'running'")]


def stage(out):
    """Where a killed sweep stood: runs done, and the last checkpoint of the one that was training."""
    done = len(done_runs(out))
    checkpoints = [torch.load(out / r / "train-checkpoint.pt", weights_only=True)["iteration"]
                   for r in running(out) if (out / r / "train-checkpoint.pt").exists()]
    return f"{done} done" + "".join(f", one checkpointed at iteration {i}" for i in checkpoints)


def intact(out):
    return query(out, "PRAGMA integrity_check") in ([], [("ok",)])


KILLED_IN_FINISH = """
import os, signal, sys
from harness.protocols import Score
from harness.store import RunRecord, Store
store = Store(sys.argv[1])
store.begin(RunRecord("r", "sinusoid", "maml", "smoke", 0, "cpu", {}, {}, None, "run"))
# killed as the run is marked done: its scores are written, the transaction not committed
store.db.execute("PRAGMA cache_size = 1")  # pages spill to the file mid-transaction: the journal is synced
store.db.set_trace_callback(lambda sql: "SET status = 'done'" in sql and os.kill(os.getpid(), signal.SIGKILL))
store.finish("r", [Score(task, 5, 1, "mse", 0.5) for task in range(20000)])
"""


def test_a_kill_inside_a_store_transaction_leaves_the_run_unfinished_and_the_next_open_recovers_it(tmp_path):
    killed = subprocess.run([sys.executable, "-c", KILLED_IN_FINISH, str(tmp_path)], capture_output=True, text=True,
                            timeout=120)
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    # a hot journal (SQLite's magic number first): what a read-only connection cannot roll back, nor `query` without
    # copying the store, and what the next writer must roll back
    assert (tmp_path / "results.sqlite-journal").read_bytes()[:8] == bytes.fromhex("d9d505f920a163d7")
    assert query(tmp_path, "SELECT run_id, status FROM runs") == [("r", "running")]
    assert scores(tmp_path) == []
    assert query(tmp_path, "PRAGMA integrity_check") == [("ok",)]
    store = Store(tmp_path)
    try:
        assert store.status("r") == "running" and store.scores(["r"]).empty
    finally:
        store.close()
    assert not (tmp_path / "results.sqlite-journal").exists()


@pytest.fixture(scope="module")
def whole_run(tmp_path_factory) -> tuple[list[tuple], float]:
    """The uninterrupted sweep: (its scores, seconds from the start of its first run to its exit)."""
    out = tmp_path_factory.mktemp("whole")
    log = out.parent / f"{out.name}.log"
    process = start(out, log)
    assert begun(process, log)
    begin = time.monotonic()
    assert process.wait(timeout=600) == 0, log.read_text()
    return scores(out), time.monotonic() - begin


@pytest.fixture(scope="module")
def uninterrupted(whole_run):
    return whole_run[0]


def kill_repeatedly(out: Path, delays: list[float]) -> list[str]:
    """Starts the sweep in `out` and SIGKILLs it after each of `delays` seconds of its work (counted from the end of
    start-up), checking after each kill that the store is intact and that no finished result was lost or changed.
    Returns the kills made: fewer than asked when a process finished first."""
    kept: dict[str, list] = {}  # the scores of every run seen done, which no later kill may change
    kills: list[str] = []
    log = out.parent / f"{out.name}.log"
    for delay in delays:
        process = start(out, log)
        if not begun(process, log):
            break
        try:
            process.wait(timeout=delay)
        except subprocess.TimeoutExpired:
            process.send_signal(signal.SIGKILL)
            process.wait()
            kills.append(f"{delay:.1f} s ({stage(out)})")
        else:
            assert process.returncode == 0, log.read_text()
            break
        assert intact(out)
        rows = scores(out)
        for run_id in done_runs(out):
            mine = [r for r in rows if r[0] == run_id]
            assert kept.setdefault(run_id, mine) == mine
    return kills


def test_sigkill_at_random_points_loses_nothing_and_resumes_to_identical_scores(tmp_path, whole_run, capsys):
    uninterrupted, work = whole_run
    seed = int(os.environ.get("HARNESS_KILL_SEED", time.time_ns() % 2**32))
    rng = random.Random(seed)
    # the kills land at KILLS random points of the first REACH of the uninterrupted sweep's work: each process is
    # killed after the work between one point and the next, so that the sweep cannot finish first at that pace (a
    # resumed process also redoes what its predecessor had not checkpointed). Should a faster spell of the machine
    # let it finish anyway, the kills start over in a fresh store with half the reach.
    reach = REACH
    for attempt in range(1, ATTEMPTS + 1):
        points = sorted(rng.uniform(0, reach * work) for _ in range(KILLS))
        out = tmp_path / f"attempt-{attempt}"
        kills = kill_repeatedly(out, [b - a for a, b in zip([0.0, *points], points)])
        if len(kills) == KILLS:
            break
        reach /= 2
    assert len(kills) == KILLS, (f"the sweep finished before {KILLS} kills in each of {ATTEMPTS} attempts "
                                 f"(HARNESS_KILL_SEED={seed}); raise meta_iterations")
    finish(out)
    assert query(out, "PRAGMA integrity_check") == [("ok",)]
    assert query(out, "SELECT DISTINCT status FROM runs") == [("done",)]
    final = scores(out)
    with capsys.disabled():
        same = "identical" if final == uninterrupted else "DIFFERENT"
        print(f"\nSIGKILL test (HARNESS_KILL_SEED={seed}): {KILLS} kills in attempt {attempt} ({work:.1f} s of "
              f"uninterrupted work), after {'; '.join(kills)} of each process's work; final scores: {len(final)} "
              f"cells, {same} to the uninterrupted run's; PRAGMA integrity_check ok")
    assert final == uninterrupted


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_ctrl_c_or_sigterm_checkpoints_the_current_iteration_and_the_rerun_resumes_to_identical_scores(
        tmp_path, uninterrupted, signum):
    """SIGTERM (a cluster scheduler's stop) behaves like the first Ctrl-C: the iteration finishes and checkpoints."""
    out, log = tmp_path / "store", tmp_path / "stderr.log"
    process = start(out, log, every=100000)  # no checkpoint but the signal's
    assert begun(process, log), f"the sweep exited before meta-training began: {log.read_text()}"
    time.sleep(1.0)
    process.send_signal(signum)
    assert process.wait(timeout=120) == 128 + signum
    err = log.read_text()
    name = signal.Signals(signum).name
    assert "meta-train" in err
    assert f"{name}: stopping at the end of this meta-train iteration" in err
    assert f"interrupted ({name}); run the same command to resume" in err
    (run_id,) = running(out)
    checkpoint = torch.load(out / run_id / "train-checkpoint.pt", weights_only=True)
    assert 0 < checkpoint["iteration"] < 599
    finish(out, every=100000)
    assert scores(out) == uninterrupted
