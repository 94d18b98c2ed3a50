"""A machine-local memory of timing decisions: once a process on this machine has timed its candidates for a key,
every later process takes the same decision.

`vectorize=auto` times vmap against the plain loop and keeps the faster. The two agree only to rounding, and the
timings of near-equal candidates flip under load, so without this memory a run resumed after a crash, or the same run
in another executor's process, could differ in the last bits from an uninterrupted one. The memory lives in
`<cache>/decisions.json` (`HARNESS_CACHE`), guarded by a file lock so that parallel workers decide once; where the
cache is not writable, each process decides for itself. Delete the file to time again (e.g. after new hardware).
"""
from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
from collections.abc import Callable, Iterator
from pathlib import Path

from harness.data import cache_dir
from harness.files import write_text

FILE = "decisions.json"


def key_of(*parts: object) -> str:
    """A short stable key for what a decision depends on (anything with a stable `repr`)."""
    return hashlib.sha256(repr(parts).encode()).hexdigest()[:16]


def remembered(key: str, decide: Callable[[], str]) -> str:
    """The decision stored under `key` on this machine, else `decide()`, stored for every later process."""
    path = cache_dir() / FILE
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with _locked(path.with_name(FILE + ".lock")):
            known = json.loads(path.read_text()) if path.exists() else {}
            if key not in known:
                known[key] = decide()
                write_text(path, json.dumps(known, indent=1, sort_keys=True))
            return known[key]
    except (OSError, json.JSONDecodeError):
        return decide()


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    with open(path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
