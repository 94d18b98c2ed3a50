"""Crash safety end to end, with real processes: SIGKILL at random points and Ctrl-C, each followed by the same
command again. Nothing finished is lost, the store stays intact, and the final scores equal an uninterrupted run's."""
import os
import random
import signal
import sqlite3
import subprocess
import sys
import threading
import time

import pytest
import torch

# 2 learners x 600 meta-iterations of the sinusoid smoke profile: ~10-20 s of training, a checkpoint every other
# iteration (so that kills also land while one is written), then evaluation and the store's transaction.
SWEEP = [sys.executable, "-m", "harness", "run", "--suite", "sinusoid", "--learners", "maml,fomaml", "--profile",
         "smoke", "--set", "meta_iterations=600", "--quiet"]
KILLS = 6


def start(out, *extra):
    return subprocess.Popen([*SWEEP, *extra, "--out", str(out)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            text=True)


def finish(out, *extra):
    done = subprocess.run([*SWEEP, *extra, "--out", str(out)], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    return done.stderr


def query(out, sql):
    """Rows of `sql` on the store, read-only; none while it or its tables do not exist yet (killed that early)."""
    path = out / "results.sqlite"
    if not path.exists():
        return []
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=60)
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


@pytest.fixture(scope="module")
def whole_run(tmp_path_factory):
    """The uninterrupted sweep: (its scores, seconds of start-up - `harness list`, which loads what `run` loads
    before its first unit -, seconds of the whole sweep from start to exit)."""
    out = tmp_path_factory.mktemp("whole")
    begin = time.monotonic()
    subprocess.run([sys.executable, "-m", "harness", "list"], capture_output=True, check=True, timeout=120)
    startup = time.monotonic() - begin
    begin = time.monotonic()
    finish(out, "--set", "checkpoint_every=2")
    return scores(out), startup, time.monotonic() - begin


@pytest.fixture(scope="module")
def uninterrupted(whole_run):
    return whole_run[0]


def test_sigkill_at_random_points_loses_nothing_and_resumes_to_identical_scores(tmp_path, whole_run, capsys):
    uninterrupted, startup, seconds = whole_run
    rng = random.Random(int(os.environ.get("HARNESS_KILL_SEED", time.time_ns() % 2**32)))
    # a process lives from half its start-up to its start-up and 1/KILLS of the sweep's work, so that the first
    # KILLS - 1 processes cannot finish the sweep on a fast machine nor leave most of it unkilled on a slow one
    longest = startup + max(1.0, (seconds - startup) / KILLS)
    kept: dict[str, list] = {}  # the scores of every run seen done, which no later kill may change
    kills = []
    while len(kills) < KILLS:
        process = start(tmp_path, "--set", "checkpoint_every=2")
        delay = rng.uniform(startup / 2, longest)
        try:
            process.wait(timeout=delay)
        except subprocess.TimeoutExpired:
            process.send_signal(signal.SIGKILL)
            process.wait()
            kills.append(f"{delay:.1f} s ({stage(tmp_path)})")
        else:
            break  # it finished before this kill: nothing left to interrupt
        assert intact(tmp_path)
        rows = scores(tmp_path)
        for run_id in done_runs(tmp_path):
            mine = [r for r in rows if r[0] == run_id]
            assert kept.setdefault(run_id, mine) == mine  # a finished result is never lost or changed
    finish(tmp_path, "--set", "checkpoint_every=2")
    assert query(tmp_path, "PRAGMA integrity_check") == [("ok",)]
    assert query(tmp_path, "SELECT DISTINCT status FROM runs") == [("done",)]
    final = scores(tmp_path)
    with capsys.disabled():
        same = "identical" if final == uninterrupted else "DIFFERENT"
        print(f"\nSIGKILL test: {len(kills)} kills ({seconds:.1f} s uninterrupted, {startup:.1f} s start-up), "
              f"after {'; '.join(kills)} of each process; final scores: {len(final)} cells, {same} to the "
              "uninterrupted run's; PRAGMA integrity_check ok")
    assert len(kills) >= 5, "the sweep finished too fast to be killed 5 times; raise meta_iterations"
    assert final == uninterrupted


def test_ctrl_c_checkpoints_the_current_iteration_and_the_rerun_resumes_to_identical_scores(tmp_path, uninterrupted):
    command = [*SWEEP, "--set", "checkpoint_every=100000", "--out", str(tmp_path)]  # no checkpoint but Ctrl-C's
    command.remove("--quiet")  # the progress bar says when meta-training has started
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    err = bytearray()

    def read() -> None:
        while chunk := process.stderr.read1(4096):
            err.extend(chunk)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    deadline = time.monotonic() + 120
    while b"meta-train" not in err:
        assert time.monotonic() < deadline and process.poll() is None, f"meta-training did not start: {err.decode()}"
        time.sleep(0.05)
    time.sleep(1.0)
    process.send_signal(signal.SIGINT)
    assert process.wait(timeout=120) == 130
    reader.join(timeout=10)
    assert "stopping at the end of this meta-train iteration" in err.decode()
    assert "rerun the same command to resume" in err.decode()
    (run_id,) = running(tmp_path)
    checkpoint = torch.load(tmp_path / run_id / "train-checkpoint.pt", weights_only=True)
    assert 0 < checkpoint["iteration"] < 599
    finish(tmp_path, "--set", "checkpoint_every=100000")
    assert scores(tmp_path) == uninterrupted
