"""The results store: one SQLite database per output directory, written in transactions, long form.

`runs` holds one row per run (suite x learner x profile x seed x config) with everything needed to reproduce it,
and the host and process that ran it last; `scores` one row per run x test task x shots x step x metric; `sweeps`
the units (run ids) of each command that ran several, so that `status` can show the pending ones. A run's scores and
its `done` status are written in the same transaction, so a run is either complete in the store or not done at all.
A score is kept whatever its value: an infinite one is stored as such, and NaN (a task whose adapted model diverged)
as NULL. Several processes may write one store (each with its own connection; writers wait for each other's
transactions).
"""
from __future__ import annotations

import hashlib
import json
import os
import socket
import sqlite3
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from harness.errors import UsageError
from harness.protocols import Score

SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    run_id TEXT PRIMARY KEY,
    suite TEXT NOT NULL, learner TEXT NOT NULL, profile TEXT NOT NULL, seed INTEGER NOT NULL,
    device TEXT NOT NULL, config TEXT NOT NULL, versions TEXT NOT NULL, git_commit TEXT, command TEXT NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('running', 'done', 'failed')), error TEXT,
    started REAL NOT NULL, finished REAL, train_seconds REAL, host TEXT, pid INTEGER
);
CREATE TABLE IF NOT EXISTS details (
    run_id TEXT NOT NULL REFERENCES runs(run_id), key TEXT NOT NULL, value TEXT NOT NULL,
    PRIMARY KEY (run_id, key)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS scores (
    run_id TEXT NOT NULL REFERENCES runs(run_id),
    task INTEGER NOT NULL, shots INTEGER NOT NULL, step INTEGER NOT NULL, metric TEXT NOT NULL,
    value REAL,  -- NULL: NaN
    PRIMARY KEY (run_id, task, shots, step, metric)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS sweeps (
    sweep_id TEXT NOT NULL, position INTEGER NOT NULL, run_id TEXT NOT NULL, suite TEXT NOT NULL,
    learner TEXT NOT NULL, setting TEXT, profile TEXT NOT NULL, seed INTEGER NOT NULL, command TEXT NOT NULL,
    launched REAL NOT NULL,
    PRIMARY KEY (sweep_id, position)
) WITHOUT ROWID;
"""
ADDED_COLUMNS = {"host": "TEXT", "pid": "INTEGER"}  # columns of `runs` that stores written by older versions lack
WAIT_SECONDS = 600.0  # how long a writer waits for another process's transaction before giving up

DB_NAME = "results.sqlite"


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


class Store:
    """The results database of one output directory."""

    def __init__(self, out_dir: Path) -> None:
        self.path = Path(out_dir) / DB_NAME
        self.db = sqlite3.connect(self.path, timeout=WAIT_SECONDS)
        try:
            self.db.execute("PRAGMA foreign_keys = ON")
            with self.db:
                self.db.executescript(SCHEMA)
                present = {row[1] for row in self.db.execute("PRAGMA table_info(runs)")}
                for name, kind in ADDED_COLUMNS.items():
                    if name not in present:
                        self.db.execute(f"ALTER TABLE runs ADD COLUMN {name} {kind}")
        except sqlite3.DatabaseError as exc:
            self.db.close()
            raise UsageError(f"{self.path} is not a results store ({exc}); move it away or pass another --out") \
                from None

    def close(self) -> None:
        self.db.close()

    def status(self, run_id: str) -> str | None:
        row = self.db.execute("SELECT status FROM runs WHERE run_id = ?", (run_id,)).fetchone()
        return row[0] if row else None

    def begin(self, run: RunRecord) -> None:
        """Record `run` as running in this process on this host; a rerun of an unfinished run refreshes its
        versions, commit, command and process and keeps its meta-training time (its trained model may already be
        saved)."""
        with self.db:
            self.db.execute(
                "INSERT INTO runs (run_id, suite, learner, profile, seed, device, config, versions,"
                " git_commit, command, status, started, host, pid)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 'running', ?, ?, ?)"
                " ON CONFLICT (run_id) DO UPDATE SET versions = excluded.versions, git_commit = excluded.git_commit,"
                " command = excluded.command, status = 'running', error = NULL, started = excluded.started,"
                " host = excluded.host, pid = excluded.pid",
                (run.run_id, run.suite, run.learner, run.profile, run.seed, run.device,
                 json.dumps(run.config, sort_keys=True), json.dumps(run.versions, sort_keys=True),
                 run.git_commit, run.command, time.time(), socket.gethostname(), os.getpid()),
            )

    def trained(self, run_id: str, seconds: float) -> None:
        """Record that meta-training of `run_id` finished after `seconds` of wall time (across interruptions)."""
        with self.db:
            self.db.execute("UPDATE runs SET train_seconds = ? WHERE run_id = ?", (seconds, run_id))

    def record(self, run_id: str, key: str, value: Any) -> None:
        """Keep a JSON-serialisable fact about `run_id` (what a learner tuned, and on what evidence)."""
        with self.db:
            self.db.execute("INSERT OR REPLACE INTO details VALUES (?, ?, ?)", (run_id, key, json.dumps(value)))

    def details(self, run_id: str) -> dict[str, Any]:
        """Everything recorded about `run_id`."""
        rows = self.db.execute("SELECT key, value FROM details WHERE run_id = ?", (run_id,)).fetchall()
        return {key: json.loads(value) for key, value in rows}

    def finish(self, run_id: str, scores: Iterable[Score]) -> None:
        """Write all scores of `run_id` and mark it done, in one transaction."""
        rows = [(run_id, s.task, s.shots, s.step, s.metric, s.value) for s in scores]
        with self.db:
            self.db.execute("DELETE FROM scores WHERE run_id = ?", (run_id,))
            self.db.executemany("INSERT INTO scores VALUES (?, ?, ?, ?, ?, ?)", rows)
            self.db.execute("UPDATE runs SET status = 'done', finished = ? WHERE run_id = ?", (time.time(), run_id))

    def forget(self, run_id: str) -> None:
        """Drop the scores and details of `run_id` (to compute it again); its row stays until the rerun begins."""
        with self.db:
            self.db.execute("DELETE FROM scores WHERE run_id = ?", (run_id,))
            self.db.execute("DELETE FROM details WHERE run_id = ?", (run_id,))
            self.db.execute("UPDATE runs SET status = 'running', train_seconds = NULL WHERE run_id = ?", (run_id,))

    def fail(self, run_id: str, error: str) -> None:
        with self.db:
            self.db.execute("UPDATE runs SET status = 'failed', error = ?, finished = ? WHERE run_id = ?",
                            (error, time.time(), run_id))

    def runs(self, status: str | None = "done") -> pd.DataFrame:
        """Runs (all of them when `status` is None), oldest first. A run continued from another device's checkpoint
        (`runner.continue_from`) shows both as its `device`, e.g. "cuda→cpu"."""
        query = ("SELECT r.*, d.value AS continued_from FROM runs r LEFT JOIN details d"
                 " ON d.run_id = r.run_id AND d.key = 'continued_from'"
                 + (" WHERE r.status = ?" if status else "") + " ORDER BY r.started")
        frame = pd.read_sql_query(query, self.db, params=(status,) if status else ())
        frame["device"] = [f"{json.loads(c)['device']}→{d}" if isinstance(c, str) else d
                           for c, d in zip(frame.pop("continued_from"), frame.device)]
        return frame

    def scores(self, run_ids: Iterable[str]) -> pd.DataFrame:
        """The long-form scores of `run_ids`."""
        ids = list(run_ids)
        if not ids:
            return pd.DataFrame(columns=["run_id", "task", "shots", "step", "metric", "value"])
        marks = ", ".join("?" * len(ids))
        return pd.read_sql_query(f"SELECT * FROM scores WHERE run_id IN ({marks})", self.db, params=ids)

    def add_sweep(self, units: Sequence[SweepUnit], command: str) -> str:
        """Record the units of a sweep launched now by `command` (the same units are the same sweep, whatever order
        they come in: launching it again updates its command and time); returns its id."""
        ids = [unit.run_id for unit in units]
        sweep_id = hashlib.sha256(json.dumps(sorted(ids)).encode()).hexdigest()[:10]
        now = time.time()
        with self.db:
            self.db.executemany(
                "INSERT INTO sweeps VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (sweep_id, position)"
                " DO UPDATE SET command = excluded.command, launched = excluded.launched",
                [(sweep_id, i, u.run_id, u.suite, u.learner, u.setting, u.profile, u.seed, command, now)
                 for i, u in enumerate(units)])
        return sweep_id

    def sweeps(self) -> pd.DataFrame:
        """Every sweep's units with the state of their runs (NULL where a unit has not started), in the order the
        sweeps were last launched."""
        return pd.read_sql_query(
            "SELECT s.*, r.status, r.error, r.host, r.pid, r.train_seconds, r.config"
            " FROM sweeps s LEFT JOIN runs r USING (run_id) ORDER BY s.launched, s.sweep_id, s.position", self.db)
