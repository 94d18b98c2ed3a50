"""The results store: one SQLite database per output directory, written in transactions, long form.

`runs` holds one row per run (suite x learner x profile x seed x config) with everything needed to reproduce it,
and the host and process that ran it last; `scores` one row per run x test task x shots x step x metric; `sweeps`
the units (run ids) of each command that ran several, so that `status` can show the pending ones. A run's scores and
its `done` status are written in the same transaction, so a run is either complete in the store or not done at all.
A score is kept whatever its value: an infinite one is stored as such, and NaN (a task whose adapted model diverged)
as NULL. Several processes may write one store (each with its own connection; writers wait for each other's
transactions); a transaction of another process that holds the store longer than `QUIET_SECONDS` is announced on
stderr, and after `wait_seconds()` in all it is a UsageError.

An empty file becomes a store, and a store of an older version gets the tables and columns it lacks; any other
database is refused as it is, unchanged. A store of this version that cannot be written (read-only) can still be read.
Every failure of the database (damaged, full disk, I/O error, read-only) is a one-line UsageError naming the file and
the fix.
"""
from __future__ import annotations

import hashlib
import json
import os
import socket
import sqlite3
import sys
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import pandas as pd

from harness.errors import UsageError
from harness.protocols import Score

SCHEMA = (
    """CREATE TABLE IF NOT EXISTS runs (
    run_id TEXT PRIMARY KEY,
    suite TEXT NOT NULL, learner TEXT NOT NULL, profile TEXT NOT NULL, seed INTEGER NOT NULL,
    device TEXT NOT NULL, config TEXT NOT NULL, versions TEXT NOT NULL, git_commit TEXT, command TEXT NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('running', 'done', 'failed')), error TEXT,
    started REAL NOT NULL, finished REAL, train_seconds REAL, host TEXT, pid INTEGER
)""",
    """CREATE TABLE IF NOT EXISTS details (
    run_id TEXT NOT NULL REFERENCES runs(run_id), key TEXT NOT NULL, value TEXT NOT NULL,
    PRIMARY KEY (run_id, key)
) WITHOUT ROWID""",
    """CREATE TABLE IF NOT EXISTS scores (
    run_id TEXT NOT NULL REFERENCES runs(run_id),
    task INTEGER NOT NULL, shots INTEGER NOT NULL, step INTEGER NOT NULL, metric TEXT NOT NULL,
    value REAL,  -- NULL: NaN
    PRIMARY KEY (run_id, task, shots, step, metric)
) WITHOUT ROWID""",
    """CREATE TABLE IF NOT EXISTS sweeps (
    sweep_id TEXT NOT NULL, position INTEGER NOT NULL, run_id TEXT NOT NULL, suite TEXT NOT NULL,
    learner TEXT NOT NULL, setting TEXT, profile TEXT NOT NULL, seed INTEGER NOT NULL, command TEXT NOT NULL,
    launched REAL NOT NULL,
    PRIMARY KEY (sweep_id, position)
) WITHOUT ROWID""",
)
ADDED_COLUMNS = {"host": "TEXT", "pid": "INTEGER"}  # columns of `runs` that stores written by older versions lack
WAIT_SECONDS = 60.0  # how long the store waits for another process's transaction before giving up
WAIT_VARIABLE = "HARNESS_STORE_WAIT_SECONDS"  # sets that wait instead
QUIET_SECONDS = 1.0  # a wait this short (another writer's transaction) is not announced
PROBLEMS = {  # the primary SQLite result code of a failure: what it says of the store, and the fix
    sqlite3.SQLITE_READONLY: ("is read-only", "make it and its folder writable, or pass another --out"),
    sqlite3.SQLITE_PERM: ("is read-only", "make it and its folder writable, or pass another --out"),
    sqlite3.SQLITE_CANTOPEN: ("cannot be opened, or its journal not created beside it",
                              "check that it and its folder exist and are writable, or pass another --out"),
    sqlite3.SQLITE_FULL: ("cannot grow: the disk is full", "free disk space and run the command again, or pass "
                          "another --out"),
    sqlite3.SQLITE_IOERR: ("gave a disk I/O error", "check the disk and its free space, then run the command again"),
    sqlite3.SQLITE_CORRUPT: ("is damaged", "move it away (keep it to inspect) or pass another --out"),
    sqlite3.SQLITE_NOTADB: ("is not a results store", "move it away or pass another --out"),
}
LOCKED = (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED)

DB_NAME = "results.sqlite"

T = TypeVar("T")


@dataclass(frozen=True)
class RunRecord:
    """What identifies and reproduces a run."""

    run_id: str
    suite: str
    learner: str
    profile: str
    seed: int
    device: str
    config: Mapping[str, Any]
    versions: Mapping[str, str]
    git_commit: str | None
    command: str


@dataclass(frozen=True)
class SweepUnit:
    """One unit of a sweep: a run's identity and the coordinates `status` shows."""

    run_id: str
    suite: str
    learner: str
    setting: str | None
    profile: str
    seed: int


def wait_seconds() -> float:
    """How long the store waits for another process's transaction: `WAIT_VARIABLE` if set (a positive number of
    seconds, else a UsageError), else `WAIT_SECONDS`."""
    text = os.environ.get(WAIT_VARIABLE)
    if text is None:
        return WAIT_SECONDS
    try:
        seconds = float(text)
    except ValueError:
        seconds = float("nan")
    if not 0 < seconds < float("inf"):
        raise UsageError(f"{WAIT_VARIABLE}={text!r} is not a positive number of seconds; set it to e.g. "
                         f"{WAIT_SECONDS:g}, or unset it")
    return seconds


def columns(db: sqlite3.Connection) -> dict[str, set[str]]:
    """The columns of every table of `db`, by table."""
    tables = [name for (name,) in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
    return {table: {name for (name,) in db.execute("SELECT name FROM pragma_table_info(?)", (table,))}
            for table in tables}


def _schema_columns() -> dict[str, set[str]]:
    db = sqlite3.connect(":memory:")
    for statement in SCHEMA:
        db.execute(statement)
    made = columns(db)
    db.close()
    return made


COLUMNS = _schema_columns()  # the columns of each table of the current schema
OLDEST = {**COLUMNS, "runs": COLUMNS["runs"] - ADDED_COLUMNS.keys()}  # those every version's stores have


def is_store(tables: Mapping[str, set[str]]) -> bool:
    """Whether a database with `tables` (their columns by name) is a results store of this or an older version: it has
    `runs` and `scores`, and every table of the schema that it has holds the columns every version's stores have."""
    return {"runs", "scores"} <= tables.keys() and all(OLDEST[t] <= tables[t] for t in tables.keys() & OLDEST.keys())


def _sqlite_error(exc: Exception) -> Exception:
    """The SQLite error behind `exc` (pandas wraps those of its queries in its own DatabaseError), else `exc`."""
    return exc.__cause__ if isinstance(exc.__cause__, sqlite3.Error) else exc


def _code(exc: Exception) -> int | None:
    """The primary SQLite result code of `exc`; None for an error that did not come from SQLite."""
    code = getattr(_sqlite_error(exc), "sqlite_errorcode", None)
    return None if code is None else code & 0xFF


def failure(path: Path, exc: Exception) -> UsageError:
    """The one-line UsageError for `exc`, a failure of the store at `path`: what it means and what to do."""
    problem, fix = PROBLEMS.get(_code(exc), ("failed", "check it and its folder, or pass another --out"))
    said = " ".join(str(_sqlite_error(exc)).split())
    return UsageError(f"{path} {problem} ({said}); {fix}")


def _check_seed(seed: int) -> None:
    """A UsageError for a seed that SQLite's signed 64-bit integers cannot hold."""
    if not -2 ** 63 <= seed < 2 ** 63:
        raise UsageError(f"seed {seed} does not fit the store's 64-bit integers; give a seed below 2**63")


class Store:
    """The results database of one output directory. Every failure of the database is a one-line UsageError."""

    def __init__(self, out_dir: Path) -> None:
        """Open (creating it if need be) `out_dir/results.sqlite`: see the module's docstring for what it accepts."""
        self.path = Path(out_dir) / DB_NAME
        if self.path.exists() and not self.path.is_file():
            what = "a directory" if self.path.is_dir() else "not a regular file"
            raise UsageError(f"{self.path} is {what}, not a results store; move it away or pass another --out")
        self.wait = wait_seconds()
        self._announced = False
        try:
            self.db = sqlite3.connect(self.path, timeout=min(QUIET_SECONDS, self.wait))
        except sqlite3.Error as exc:
            raise failure(self.path, exc) from None
        try:
            self._attempt(self._prepare)
        except BaseException:
            self.db.close()
            raise

    def _prepare(self) -> None:
        """Create the schema in an empty database, or add what a store of an older version lacks (without writing
        when nothing lacks: a read-only store stays readable); refuse any other database before writing anything."""
        self.db.execute("PRAGMA foreign_keys = ON")
        tables = columns(self.db)
        if tables and not is_store(tables):
            raise UsageError(f"{self.path} is another program's SQLite database (tables: {', '.join(sorted(tables))}),"
                             " not a results store; pass another --out (the harness left it unchanged)")
        if all(COLUMNS[t] <= tables.get(t, set()) for t in COLUMNS):
            return
        with self.db:
            self.db.execute("BEGIN IMMEDIATE")  # with the write lock: another process may just have done it
            for statement in SCHEMA:
                self.db.execute(statement)
            present = columns(self.db)["runs"]
            for name, kind in ADDED_COLUMNS.items():
                if name not in present:
                    self.db.execute(f"ALTER TABLE runs ADD COLUMN {name} {kind}")

    def _attempt(self, work: Callable[[], T]) -> T:
        """`work()`, a read or one transaction of `db`, tried again while another process's transaction holds the
        store - announced once on stderr after `QUIET_SECONDS`, and a UsageError after `wait` seconds in all; any
        other failure of the database is a UsageError at once."""
        deadline = time.monotonic() + self.wait
        while True:
            try:
                return work()
            except (sqlite3.Error, OSError) as exc:
                if _code(exc) not in LOCKED:
                    raise failure(self.path, exc) from None
            if time.monotonic() >= deadline:
                raise UsageError(f"{self.path} stayed locked by another process's transaction for {self.wait:g} s; "
                                 f"let that process finish (or stop it) and run the command again, or wait longer "
                                 f"with {WAIT_VARIABLE}=SECONDS")
            if not self._announced:
                print(f"waiting for {self.path}: locked by another process's transaction (giving up after "
                      f"{self.wait:g} s; {WAIT_VARIABLE} sets how long)", file=sys.stderr, flush=True)
                self._announced = True

    def _write(self, *statements: tuple[str, Sequence[Sequence[Any]]]) -> None:
        """Execute each statement (its SQL, and its parameters for every row it writes) in one transaction."""
        def transaction() -> None:
            with self.db:
                for sql, rows in statements:
                    self.db.executemany(sql, rows)
        self._attempt(transaction)

    def _rows(self, query: str, params: Sequence[Any]) -> list[tuple]:
        return self._attempt(lambda: self.db.execute(query, params).fetchall())

    def _frame(self, query: str, params: Sequence[Any] = ()) -> pd.DataFrame:
        return self._attempt(lambda: pd.read_sql_query(query, self.db, params=params))

    def close(self) -> None:
        self.db.close()

    def status(self, run_id: str) -> str | None:
        rows = self._rows("SELECT status FROM runs WHERE run_id = ?", (run_id,))
        return rows[0][0] if rows else None

    def begin(self, run: RunRecord) -> None:
        """Record `run` as running in this process on this host; a rerun of an unfinished run refreshes its
        versions, commit, command and process and keeps its meta-training time (its trained model may already be
        saved)."""
        _check_seed(run.seed)
        self._write((
            "INSERT INTO runs (run_id, suite, learner, profile, seed, device, config, versions,"
            " git_commit, command, status, started, host, pid)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 'running', ?, ?, ?)"
            " ON CONFLICT (run_id) DO UPDATE SET versions = excluded.versions, git_commit = excluded.git_commit,"
            " command = excluded.command, status = 'running', error = NULL, started = excluded.started,"
            " host = excluded.host, pid = excluded.pid",
            [(run.run_id, run.suite, run.learner, run.profile, run.seed, run.device,
              json.dumps(run.config, sort_keys=True), json.dumps(run.versions, sort_keys=True),
              run.git_commit, run.command, time.time(), socket.gethostname(), os.getpid())]))

    def trained(self, run_id: str, seconds: float) -> None:
        """Record that meta-training of `run_id` finished after `seconds` of wall time (across interruptions)."""
        self._write(("UPDATE runs SET train_seconds = ? WHERE run_id = ?", [(seconds, run_id)]))

    def record(self, run_id: str, key: str, value: Any) -> None:
        """Keep a JSON-serialisable fact about `run_id` (what a learner tuned, and on what evidence)."""
        self._write(("INSERT OR REPLACE INTO details VALUES (?, ?, ?)", [(run_id, key, json.dumps(value))]))

    def details(self, run_id: str) -> dict[str, Any]:
        """Everything recorded about `run_id`."""
        rows = self._rows("SELECT key, value FROM details WHERE run_id = ?", (run_id,))
        return {key: json.loads(value) for key, value in rows}

    def finish(self, run_id: str, scores: Iterable[Score]) -> None:
        """Write all scores of `run_id` and mark it done, in one transaction."""
        rows = [(run_id, s.task, s.shots, s.step, s.metric, s.value) for s in scores]
        self._write(("DELETE FROM scores WHERE run_id = ?", [(run_id,)]),
                    ("INSERT INTO scores VALUES (?, ?, ?, ?, ?, ?)", rows),
                    ("UPDATE runs SET status = 'done', finished = ? WHERE run_id = ?", [(time.time(), run_id)]))

    def forget(self, run_id: str) -> None:
        """Drop the scores and details of `run_id` (to compute it again); its row stays until the rerun begins."""
        self._write(("DELETE FROM scores WHERE run_id = ?", [(run_id,)]),
                    ("DELETE FROM details WHERE run_id = ?", [(run_id,)]),
                    ("UPDATE runs SET status = 'running', train_seconds = NULL WHERE run_id = ?", [(run_id,)]))

    def fail(self, run_id: str, error: str) -> None:
        self._write(("UPDATE runs SET status = 'failed', error = ?, finished = ? WHERE run_id = ?",
                     [(error, time.time(), run_id)]))

    def runs(self, status: str | None = "done") -> pd.DataFrame:
        """Runs (all of them when `status` is None), oldest first. A run continued from another device's checkpoint
        (`runner.continue_from`) shows both as its `device`, e.g. "cuda→cpu"."""
        query = ("SELECT r.*, d.value AS continued_from FROM runs r LEFT JOIN details d"
                 " ON d.run_id = r.run_id AND d.key = 'continued_from'"
                 + (" WHERE r.status = ?" if status else "") + " ORDER BY r.started")
        frame = self._frame(query, (status,) if status else ())
        frame["device"] = [f"{json.loads(c)['device']}→{d}" if isinstance(c, str) else d
                           for c, d in zip(frame.pop("continued_from"), frame.device)]
        return frame

    def scores(self, run_ids: Iterable[str]) -> pd.DataFrame:
        """The long-form scores of `run_ids`."""
        ids = list(run_ids)
        if not ids:
            return pd.DataFrame(columns=["run_id", "task", "shots", "step", "metric", "value"])
        marks = ", ".join("?" * len(ids))
        return self._frame(f"SELECT * FROM scores WHERE run_id IN ({marks})", ids)

    def add_sweep(self, units: Sequence[SweepUnit], command: str) -> str:
        """Record the units of a sweep launched now by `command` (the same units are the same sweep, whatever order
        they come in: launching it again updates its command and time); returns its id."""
        for unit in units:
            _check_seed(unit.seed)
        ids = [unit.run_id for unit in units]
        sweep_id = hashlib.sha256(json.dumps(sorted(ids)).encode()).hexdigest()[:10]
        now = time.time()
        self._write((
            "INSERT INTO sweeps VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (sweep_id, position)"
            " DO UPDATE SET command = excluded.command, launched = excluded.launched",
            [(sweep_id, i, u.run_id, u.suite, u.learner, u.setting, u.profile, u.seed, command, now)
             for i, u in enumerate(units)]))
        return sweep_id

    def sweeps(self) -> pd.DataFrame:
        """Every sweep's units with the state of their runs (NULL where a unit has not started), in the order the
        sweeps were last launched."""
        return self._frame(
            "SELECT s.*, r.status, r.error, r.host, r.pid, r.train_seconds, r.config"
            " FROM sweeps s LEFT JOIN runs r USING (run_id) ORDER BY s.launched, s.sweep_id, s.position")
