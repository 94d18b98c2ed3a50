"""Executors: the same sweep in-process, in a process pool and on a local Ray cluster gives bit-identical scores,
each unit's results reach the store exactly once, and `status` shows every unit's state."""
import os
import signal
import sqlite3
import subprocess
import sys
import time
from types import SimpleNamespace

import pytest

from harness import executors
from harness.cli import main
from harness.errors import UsageError
from harness.store import Store
from harness.sweeps import resume_command

SWEEP = ["run", "--suite", "sinusoid", "--learners", "maml,fomaml", "--profile", "smoke", "--seeds", "0,1", "--quiet"]


def scores(out):
    db = sqlite3.connect(out / "results.sqlite")
    return db.execute("SELECT run_id, task, shots, step, metric, value FROM scores ORDER BY 1, 2, 3, 4, 5").fetchall()


def run_states(out):
    db = sqlite3.connect(out / "results.sqlite")
    return dict(db.execute("SELECT run_id, status FROM runs").fetchall())


@pytest.fixture(scope="module")
def in_process(tmp_path_factory):
    out = tmp_path_factory.mktemp("inprocess")
    assert main([*SWEEP, "--out", str(out)]) == 0
    return scores(out)


def check_same_as_in_process(out, in_process):
    assert len(run_states(out)) == 4 and set(run_states(out).values()) == {"done"}
    assert scores(out) == in_process  # bit-identical floats, and no cell twice (the primary key forbids it anyway)
    assert len(in_process) == 4 * 20 * 3 * 3  # runs x tasks x shots x steps: each unit's scores exactly once


def test_process_pool_gives_bit_identical_scores(tmp_path, in_process):
    assert main([*SWEEP, "--jobs", "2", "--out", str(tmp_path)]) == 0
    check_same_as_in_process(tmp_path, in_process)


def test_ray_cluster_gives_bit_identical_scores(tmp_path, in_process, capsys):
    pytest.importorskip("ray", reason='Ray is installed by pip install -e ".[test]"; CI runs this test')
    assert main([*SWEEP, "--executor", "ray", "--out", str(tmp_path)]) == 0
    check_same_as_in_process(tmp_path, in_process)
    assert capsys.readouterr().err.count(": done") == 4
    assert main([*SWEEP, "--executor", "ray", "--out", str(tmp_path)]) == 0  # a rerun skips every unit
    assert capsys.readouterr().err.count(": skipped") == 4
    check_same_as_in_process(tmp_path, in_process)


@pytest.mark.parametrize("executor,jobs,address,message", [
    (None, 0, None, "--jobs 0"),
    ("threads", None, None, "unknown executor 'threads'"),
    ("pool", None, "10.0.0.1:6379", "--address names a Ray cluster"),
    ("ray", 4, None, "--jobs sizes the process pool"),
    ("inprocess", 3, None, "needs --executor pool"),
])
def test_inconsistent_executor_flags_are_usage_errors(executor, jobs, address, message):
    with pytest.raises(UsageError, match=message):
        executors.choose(executor, jobs, address)


def test_jobs_alone_means_a_process_pool():
    assert executors.choose(None, 3, None) == ("pool", 3)
    assert executors.choose(None, None, None) == ("inprocess", 1)


def test_more_threads_than_cpus_in_a_pool_is_warned_about():
    units = [SimpleNamespace(config={"threads": t}) for t in (2, 2, 1)]
    assert executors.oversubscription(units, 1, 2) is None
    assert executors.oversubscription(units[2:], 2, 2) is None
    warning = executors.oversubscription(units, 2, 2)
    assert warning == ("warning: --jobs 2 runs up to 4 torch threads at once on 2 CPUs, so each unit slows down "
                       "several times over; use --jobs 1 or --set threads=1")


def test_status_shows_done_failed_interrupted_and_pending_units(tmp_path, capsys):
    assert main(["run", "--suite", "sinusoid", "--learners", "maml", "--profile", "smoke", "--out", str(tmp_path),
                 "--quiet"]) == 0
    assert main(["run", "--suite", "sinusoid", "--learners", "maml,fomaml,context,pretrain", "--profile", "smoke",
                 "--out", str(tmp_path), "--quiet", "--set", "inner_lr=1e30"]) == 1  # maml and fomaml diverge
    capsys.readouterr()
    store = Store(tmp_path)
    units = store.sweeps()
    sweep_id = units.sweep_id.iloc[-1]
    context, pretrain = units[units.sweep_id == sweep_id].run_id.iloc[2:4]
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    store.db.execute("UPDATE runs SET status = 'running', pid = ? WHERE run_id = ?", (int(dead.stdout), context))
    store.db.execute("DELETE FROM scores WHERE run_id = ?", (pretrain,))
    store.db.execute("DELETE FROM details WHERE run_id = ?", (pretrain,))
    store.db.execute("DELETE FROM runs WHERE run_id = ?", (pretrain,))
    store.db.commit()
    store.close()
    assert main(["status", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "0 done, 0 running, 1 interrupted, 2 failed, 1 pending" in out
    assert "training loss became" in out and "resumes from its last checkpoint" in out
    assert "--learners maml,fomaml,context,pretrain" in out
    assert main(["status", "--out", str(tmp_path), "--all"]) == 0
    out = capsys.readouterr().out
    assert out.count("sweep ") == 2 and "1 done, 0 running" in out


def test_status_of_this_process_is_running(tmp_path, capsys):
    assert main(["run", "--suite", "sinusoid", "--learners", "maml", "--profile", "smoke", "--out", str(tmp_path),
                 "--quiet"]) == 0
    db = sqlite3.connect(tmp_path / "results.sqlite")
    db.execute("UPDATE runs SET status = 'running', pid = ?", (os.getpid(),))
    db.commit()
    capsys.readouterr()
    assert main(["status", "--out", str(tmp_path)]) == 0
    assert "0 done, 1 running" in capsys.readouterr().out


def test_ctrl_c_stops_a_process_pool_sweep_and_starts_no_further_unit(tmp_path):
    command = [sys.executable, "-m", "harness", "run", "--suite", "sinusoid", "--learners", "maml,fomaml,context",
               "--profile", "quick", "--set", "checkpoint_every=1", "--jobs", "2", "--quiet", "--out", str(tmp_path)]
    # started as `command &` from a script, which starts it with SIGINT ignored
    sweep = subprocess.Popen(command, start_new_session=True, stderr=subprocess.PIPE, text=True,
                             preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN))
    deadline = time.monotonic() + 120
    while len(list(tmp_path.glob("*/train-checkpoint.pt"))) < 2:  # the first two units are training
        assert sweep.poll() is None and time.monotonic() < deadline, "the first units never checkpointed"
        time.sleep(0.1)
    os.killpg(sweep.pid, signal.SIGINT)  # as Ctrl-C in a terminal: the command and its workers
    _, err = sweep.communicate(timeout=120)
    assert sweep.returncode == 130, err
    states = run_states(tmp_path)
    assert sorted(run.split("-")[1] for run in states) == ["fomaml", "maml"], states  # context never started
    errors = sqlite3.connect(tmp_path / "results.sqlite").execute("SELECT run_id, error FROM runs").fetchall()
    assert set(states.values()) == {"running"}, (states, errors, err)  # both resumable


def test_sigterm_to_the_command_alone_stops_a_process_pool_sweep_at_its_workers_checkpoints(tmp_path):
    """A scheduler's SIGTERM may reach the command's process only: it passes it on to the workers, which finish their
    iteration, checkpoint and stay resumable."""
    command = [sys.executable, "-m", "harness", "run", "--suite", "sinusoid", "--learners", "maml,fomaml,context",
               "--profile", "quick", "--set", "checkpoint_every=1", "--jobs", "2", "--quiet", "--out", str(tmp_path)]
    sweep = subprocess.Popen(command, start_new_session=True, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while len(list(tmp_path.glob("*/train-checkpoint.pt"))) < 2:  # the first two units are training
        assert sweep.poll() is None and time.monotonic() < deadline, "the first units never checkpointed"
        time.sleep(0.1)
    sweep.send_signal(signal.SIGTERM)
    _, err = sweep.communicate(timeout=120)
    assert sweep.returncode == 128 + signal.SIGTERM, err
    assert err.count("SIGTERM: stopping at the end of this meta-train iteration") == 2, err
    states = run_states(tmp_path)
    assert sorted(run.split("-")[1] for run in states) == ["fomaml", "maml"], states  # context never started
    assert set(states.values()) == {"running"}, states  # both resumable


def test_status_of_a_rerun_sweep_says_to_finish_it_without_rerun(tmp_path, capsys):
    """Run again with --rerun, an unfinished sweep would start every unit over: status gives the command without it."""
    assert resume_command("python -m harness run --suite 'a b' --rerun --out x") == \
        "python -m harness run --suite 'a b' --out x"
    assert main(["run", "--suite", "sinusoid", "--learners", "maml", "--profile", "smoke", "--out", str(tmp_path),
                 "--quiet", "--rerun"]) == 0
    store = Store(tmp_path)
    store.db.execute("UPDATE runs SET status = 'failed'")
    store.db.commit()
    store.close()
    capsys.readouterr()
    assert main(["status", "--out", str(tmp_path)]) == 0
    last = capsys.readouterr().out.strip().splitlines()[-1]
    assert last.startswith("to finish it") and "--learners maml" in last and "--rerun" not in last
