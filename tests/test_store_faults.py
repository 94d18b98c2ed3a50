"""Faults in the results store and in a run's files: each is one line on stderr (exit 2) or, where the rest of the
store can still be shown, a note on the run it concerns; never a traceback, a hang or a changed foreign file."""
import importlib.util
import os
import shutil
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from harness import checkpoints, runner
from harness.cli import main
from harness.errors import UsageError
from harness.figures import Trained
from harness.plugins import registry
from harness.protocols import Score
from harness.store import DB_NAME, RunRecord, Store, SweepUnit

REG = registry()
SMOKE = runner.prepare(runner.RunSpec("sinusoid", "maml", "smoke"), REG)
GPU_RUN = runner.run_id(runner.RunSpec("sinusoid", "maml", "smoke", device="cuda"), SMOKE.config)
RUN = ["run", "--suite", "sinusoid", "--learners", "maml", "--profile", "smoke", "--quiet", "--out", "{tmp}"]
WAIT = "HARNESS_STORE_WAIT_SECONDS"


class Payload:
    """An object whose unpickling makes a folder: loading it with weights_only=False would run code."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self):
        return os.mkdir, (self.path,)


def record(run_id=SMOKE.run_id, device="cpu", config=SMOKE.config, suite="sinusoid", learner="maml",
           seed=0) -> RunRecord:
    return RunRecord(run_id, suite, learner, "smoke", seed, device, config, {}, None, "python -m harness run ...")


def store_with(tmp: Path, *records: RunRecord) -> None:
    """A store at `tmp` with `records` running, in one sweep."""
    tmp.mkdir(parents=True, exist_ok=True)
    store = Store(tmp)
    store.add_sweep([SweepUnit(r.run_id, r.suite, r.learner, None, r.profile, r.seed) for r in records], "a sweep")
    for r in records:
        store.begin(r)
    store.close()


def garbage(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"not a checkpoint" * 64)


def truncated(path: Path) -> None:
    checkpoints.save_tensors(path, {"model": {"w": torch.ones(100)}, "iteration": 3})
    path.write_bytes(path.read_bytes()[:300])


def empty(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"")


def payload(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"iteration": 3, "x": Payload(str(path.parent / "pwned"))}, path)


def a_list(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save([torch.ones(2)], path)


def a_folder(path: Path) -> None:
    path.mkdir(parents=True)


def store_is_a_directory(tmp):
    (tmp / DB_NAME).mkdir()


def store_is_a_pipe(tmp):
    os.mkfifo(tmp / DB_NAME)


def garbage_store(tmp):
    (tmp / DB_NAME).write_bytes(b"not a database at all" * 100)


def foreign_database(tmp):
    db = sqlite3.connect(tmp / DB_NAME)
    db.execute("CREATE TABLE customers (id INTEGER PRIMARY KEY, name TEXT)")
    db.execute("INSERT INTO customers VALUES (1, 'Ada')")
    db.commit()
    db.close()


def foreign_runs_table(tmp):
    """Another program's tables named like ours."""
    db = sqlite3.connect(tmp / DB_NAME)
    db.execute("CREATE TABLE runs (id INTEGER PRIMARY KEY, km REAL)")
    db.execute("CREATE TABLE scores (player TEXT, points INTEGER)")
    db.commit()
    db.close()


def damaged_store(tmp):
    """A store whose `runs` table's page is overwritten: its header and schema read, its rows do not."""
    store_with(tmp, record())
    db = sqlite3.connect(tmp / DB_NAME)
    page = db.execute("SELECT rootpage FROM sqlite_master WHERE name = 'runs'").fetchone()[0]
    size = db.execute("PRAGMA page_size").fetchone()[0]
    db.close()
    data = bytearray((tmp / DB_NAME).read_bytes())
    data[(page - 1) * size:page * size] = b"\xff" * size
    (tmp / DB_NAME).write_bytes(bytes(data))


def unreadable_source(make):
    """A GPU run's unfinished store entry whose training checkpoint `make` writes (for --resume-from)."""
    def setup(tmp):
        store_with(tmp, record(GPU_RUN, device="cuda"))
        make(tmp / GPU_RUN / checkpoints.TRAIN)
    return setup


BAD_STORE = [  # cases of the one bad-input table (tests/test_cli.py's BAD): argv, setup, message
    (["status", "--out", "{tmp}"], store_is_a_directory, "results.sqlite is a directory"),
    (["report", "--out", "{tmp}", "--results", "{tmp}"], store_is_a_directory, "results.sqlite is a directory"),
    (RUN, store_is_a_directory, "results.sqlite is a directory"),
    (["status", "--out", "{tmp}"], store_is_a_pipe, "results.sqlite is not a regular file"),
    (["status", "--out", "{tmp}"], garbage_store, "is not a results store"),
    (["report", "--out", "{tmp}", "--results", "{tmp}"], garbage_store, "is not a results store"),
    (["status", "--out", "{tmp}"], foreign_database, "another program's SQLite database"),
    (["report", "--out", "{tmp}", "--results", "{tmp}"], foreign_database, "another program's SQLite database"),
    (RUN, foreign_database, "another program's SQLite database"),
    (RUN, foreign_runs_table, "another program's SQLite database"),
    (["status", "--out", "{tmp}"], damaged_store, "is damaged"),
    ([*RUN, "--resume-from", GPU_RUN], unreadable_source(garbage), "train-checkpoint.pt cannot be read"),
    ([*RUN, "--resume-from", GPU_RUN], unreadable_source(payload), "holds objects other than tensors"),
]


def tree(root):
    return sorted((str(p.relative_to(root)), p.is_file() and p.read_bytes()) for p in root.rglob("*"))


@pytest.mark.parametrize("make", [garbage, truncated, empty, payload, a_list, a_folder])
def test_an_unreadable_tensor_file_is_a_one_line_error_naming_it_why_and_the_fix(tmp_path, make):
    path = tmp_path / "run" / checkpoints.TRAIN
    make(path)
    with pytest.raises(UsageError) as caught:
        checkpoints.load_tensors(path)
    message = str(caught.value)
    assert "\n" not in message and str(path) in message and "delete it" in message, message
    assert "weights_only" not in message  # torch's advice to load it unsafely is not passed on
    assert not (tmp_path / "run" / "pwned").exists()  # the payload never ran


def test_status_goes_on_past_unreadable_checkpoints_and_names_them(tmp_path, capsys):
    other = record(runner.run_id(runner.RunSpec("sinusoid", "fomaml", "smoke"), SMOKE.config), learner="fomaml")
    store_with(tmp_path, record(), other)
    garbage(tmp_path / SMOKE.run_id / checkpoints.TRAIN)
    checkpoints.save_tensors(tmp_path / other.run_id / checkpoints.TRAIN,
                             {"iteration": 4, checkpoints.PROGRESS: {"done": 5, "of": 30, "unit": "meta-train"}})
    payload(tmp_path / "sinusoid-scratch-smoke-s0-0123456789" / checkpoints.TRAIN)  # a stray, brought from elsewhere
    assert main(["status", "--out", str(tmp_path)]) == 0
    captured = capsys.readouterr()
    assert f"unreadable checkpoint: {tmp_path / SMOKE.run_id / checkpoints.TRAIN}" in captured.out
    assert "meta-train 5/30" in captured.out
    assert f"unreadable checkpoint: {tmp_path / 'sinusoid-scratch-smoke-s0-0123456789'}" in captured.out
    assert captured.err == ""
    assert not (tmp_path / "sinusoid-scratch-smoke-s0-0123456789" / "pwned").exists()


def test_a_checkpoint_of_another_layout_is_unreadable_not_a_traceback(tmp_path):
    checkpoints.save_tensors(tmp_path / checkpoints.TRAIN, {checkpoints.PROGRESS: [5, 30], checkpoints.SEGMENTS: "vm"})
    assert checkpoints.training_progress(tmp_path, {}, pace=True) == \
        f"unreadable checkpoint: {tmp_path / checkpoints.TRAIN} (not a training checkpoint of the harness)"


def test_report_goes_on_past_an_unreadable_checkpoint(tmp_path, capsys):
    store_with(tmp_path / "out", record())
    payload(tmp_path / "out" / SMOKE.run_id / checkpoints.TRAIN)
    assert main(["report", "--out", str(tmp_path / "out"), "--results", str(tmp_path / "tables"),
                 "--tables", "table2"]) == 0
    assert f"unreadable checkpoint: {tmp_path / 'out' / SMOKE.run_id / checkpoints.TRAIN}" in capsys.readouterr().out
    assert not (tmp_path / "out" / SMOKE.run_id / "pwned").exists()


@pytest.mark.parametrize("name", [checkpoints.TRAIN, checkpoints.MODEL])
def test_a_run_that_would_resume_from_an_unreadable_file_fails_in_one_line(tmp_path, capsys, name):
    store_with(tmp_path, record())
    payload(tmp_path / SMOKE.run_id / name)
    assert main([a.replace("{tmp}", str(tmp_path)) for a in RUN]) == 1
    err = capsys.readouterr().err
    assert f"{SMOKE.run_id}: failed: UsageError: {tmp_path / SMOKE.run_id / name} cannot be read" in err
    assert "Traceback" not in err and "weights_only" not in err
    assert not (tmp_path / SMOKE.run_id / "pwned").exists()


def test_a_figure_shows_an_unreadable_model_instead_of_stopping_the_report(tmp_path):
    store_with(tmp_path, record())
    garbage(tmp_path / SMOKE.run_id / checkpoints.MODEL)
    store = Store(tmp_path)
    run = store.runs(status=None).iloc[0]
    store.close()
    assert Trained.load(run, REG, tmp_path) == f"unreadable model: {tmp_path / SMOKE.run_id / checkpoints.MODEL}"


def test_a_foreign_database_is_refused_unchanged(tmp_path):
    foreign_database(tmp_path)
    before = (tmp_path / DB_NAME).read_bytes()
    with pytest.raises(UsageError, match="another program's SQLite database .tables: customers., not a results"):
        Store(tmp_path)
    assert (tmp_path / DB_NAME).read_bytes() == before


def test_an_empty_file_becomes_a_store(tmp_path, capsys):
    (tmp_path / DB_NAME).write_bytes(b"")
    assert main(["status", "--out", str(tmp_path)]) == 0
    assert "no sweeps recorded" in capsys.readouterr().out
    assert Store(tmp_path).runs(status=None).empty


def test_a_store_of_an_older_version_gets_what_it_lacks(tmp_path):
    db = sqlite3.connect(tmp_path / DB_NAME)
    db.executescript("""
        CREATE TABLE runs (run_id TEXT PRIMARY KEY, suite TEXT NOT NULL, learner TEXT NOT NULL, profile TEXT NOT NULL,
            seed INTEGER NOT NULL, device TEXT NOT NULL, config TEXT NOT NULL, versions TEXT NOT NULL, git_commit TEXT,
            command TEXT NOT NULL, status TEXT NOT NULL, error TEXT, started REAL NOT NULL, finished REAL,
            train_seconds REAL);
        CREATE TABLE scores (run_id TEXT NOT NULL, task INTEGER NOT NULL, shots INTEGER NOT NULL, step INTEGER NOT NULL,
            metric TEXT NOT NULL, value REAL, PRIMARY KEY (run_id, task, shots, step, metric)) WITHOUT ROWID;
        INSERT INTO runs VALUES ('old', 'sinusoid', 'maml', 'smoke', 0, 'cpu', '{}', '{}', NULL, 'c', 'done', NULL,
            1.0, 2.0, 3.0);
    """)
    db.close()
    store = Store(tmp_path)
    assert {"host", "pid"} <= set(store.runs().columns) and store.runs().run_id.tolist() == ["old"]
    assert store.sweeps().empty and store.details("old") == {}
    store.close()


def hold_lock(path: Path, seconds: float) -> subprocess.Popen:
    """Another process holding an exclusive transaction on the store at `path` for `seconds`."""
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sqlite3, sys, time; db = sqlite3.connect(sys.argv[1], isolation_level=None); "
         "db.execute('BEGIN EXCLUSIVE'); print('locked', flush=True); time.sleep(float(sys.argv[2])); db.close()",
         str(path), str(seconds)], stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline() == "locked\n"
    return holder


def test_a_locked_store_says_it_waits_and_gives_up_after_a_bounded_time(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv(WAIT, "1.5")
    store_with(tmp_path, record())
    holder = hold_lock(tmp_path / DB_NAME, 60)
    try:
        started = time.monotonic()
        assert main(["status", "--out", str(tmp_path)]) == 2
        assert time.monotonic() - started < 10
    finally:
        holder.kill()
        holder.wait()
    waiting, error = capsys.readouterr().err.splitlines()
    assert waiting.startswith(f"waiting for {tmp_path / DB_NAME}: locked by another process's transaction")
    assert error.startswith(f"error: {tmp_path / DB_NAME} stayed locked by another process's transaction for 1.5 s")
    assert WAIT in error


def test_a_short_transaction_of_another_process_is_waited_for_without_a_word(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv(WAIT, "20")
    store_with(tmp_path, record())
    holder = hold_lock(tmp_path / DB_NAME, 0.3)
    assert main(["status", "--out", str(tmp_path)]) == 0
    holder.wait()
    assert capsys.readouterr().err == ""


def test_a_wait_that_is_not_a_number_is_a_usage_error(tmp_path, capsys, monkeypatch):
    store_with(tmp_path, record())
    monkeypatch.setenv(WAIT, "soon")
    assert main(["status", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"{WAIT}='soon' is not a positive number of seconds" in err


def read_only_connections(monkeypatch):
    """Stores open as SQLite opens a write-protected file: read-only (what chmod does for a user other than root)."""
    connect = sqlite3.connect

    def read_only(path, *args, **kwargs):
        return connect(f"file:{path}?mode=ro", *args, uri=True, **kwargs)
    monkeypatch.setattr("harness.store.sqlite3.connect", read_only)


def test_a_read_only_store_is_shown_but_not_written(tmp_path, capsys, monkeypatch):
    store_with(tmp_path, record())
    read_only_connections(monkeypatch)
    before = tree(tmp_path)
    assert main(["status", "--out", str(tmp_path)]) == 0
    capsys.readouterr()
    assert main([a.replace("{tmp}", str(tmp_path)) for a in RUN]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {tmp_path / DB_NAME} is read-only") and err.count("\n") == 1, err
    assert tree(tmp_path) == before


PERMISSIONS_BIND = [] if os.geteuid() else ["setpriv", "--bounding-set=-dac_override,-dac_read_search,-fowner",
                                             "--inh-caps=-dac_override,-dac_read_search,-fowner"]  # root too


@pytest.mark.skipif(PERMISSIONS_BIND and not shutil.which("setpriv"), reason="root writes write-protected files")
def test_a_write_protected_store_or_folder_is_shown_but_not_written(tmp_path):
    """In one process (its start is slow): `status` then `run` on a write-protected store, then on a writable store
    in a write-protected folder (no journal can be made there)."""
    protected = {tmp_path / "file": (0o444, 0o755), tmp_path / "folder": (0o644, 0o555)}
    commands = []
    for out, (file_mode, folder_mode) in protected.items():
        store_with(out, record())
        (out / DB_NAME).chmod(file_mode)
        out.chmod(folder_mode)
        commands += [["status", "--out", str(out)], [a.replace("{tmp}", str(out)) for a in RUN]]
    before = tree(tmp_path)
    child = subprocess.run([*PERMISSIONS_BIND, sys.executable, "-c", "from harness.cli import main; "
                            f"print([main(argv) for argv in {commands!r}])"], capture_output=True, text=True)
    for out in protected:
        out.chmod(0o755)
    assert child.stdout.splitlines()[-1] == "[0, 2, 0, 2]", child.stdout + child.stderr
    errors = child.stderr.splitlines()
    assert len(errors) == 2 and all(e.startswith("error: ") and "writable" in e for e in errors), child.stderr
    assert tree(tmp_path) == before


def test_a_full_disk_is_a_one_line_error_and_the_transaction_is_undone(tmp_path):
    store_with(tmp_path, record())
    store = Store(tmp_path)
    pages = store.db.execute("PRAGMA page_count").fetchone()[0]
    store.db.execute(f"PRAGMA max_page_count = {pages}")
    scores = [Score(task, 5, step, "mse", 0.5) for task in range(600) for step in range(11)]
    with pytest.raises(UsageError, match=f"{tmp_path / DB_NAME} cannot grow: the disk is full.*free disk space"):
        store.finish(SMOKE.run_id, scores)
    assert store.status(SMOKE.run_id) == "running" and store.scores([SMOKE.run_id]).empty
    store.close()


class FailingConnection:
    """A connection whose every statement fails with a disk I/O error, as SQLite raises it."""

    def __init__(self, db):
        self.db = db

    def __enter__(self):
        return self.db.__enter__()

    def __exit__(self, *exc):
        return self.db.__exit__(*exc)

    def execute(self, *args):
        error = sqlite3.OperationalError("disk I/O error")
        error.sqlite_errorcode, error.sqlite_errorname = sqlite3.SQLITE_IOERR_WRITE, "SQLITE_IOERR_WRITE"
        raise error

    executemany = execute


def test_a_disk_i_o_error_is_a_one_line_error(tmp_path):
    store = Store(tmp_path)
    real, store.db = store.db, FailingConnection(store.db)
    with pytest.raises(UsageError, match=f"{tmp_path / DB_NAME} gave a disk I/O error .disk I/O error.; check"):
        store.begin(record())
    real.close()


def test_a_seed_beyond_sqlite_integers_is_a_usage_error(tmp_path):
    store = Store(tmp_path)
    with pytest.raises(UsageError, match=r"seed 9223372036854775808 does not fit the store's 64-bit integers"):
        store.begin(record(seed=2 ** 63))
    with pytest.raises(UsageError, match=r"seed 9223372036854775808 does not fit"):
        store.add_sweep([SweepUnit("x", "sinusoid", "maml", None, "smoke", 2 ** 63)], "c")
    assert store.runs(status=None).empty and store.sweeps().empty
    store.close()


def load_context_step():
    path = Path(__file__).parents[1] / "benchmarks" / "diagnostics" / "context_step.py"
    spec = importlib.util.spec_from_file_location("context_step", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_context_step_refuses_a_checkpoint_holding_objects_in_one_line(tmp_path, capsys):
    context = runner.prepare(runner.RunSpec("navigation2d", "context", "smoke"), REG)
    store_with(tmp_path, record(context.run_id, config=context.config, suite="navigation2d", learner="context"))
    payload(tmp_path / context.run_id / checkpoints.TRAIN)
    assert load_context_step().main([str(tmp_path / context.run_id), "2"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and "holds objects other than tensors" in err, err
    assert not (tmp_path / context.run_id / "pwned").exists()
