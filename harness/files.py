"""Atomic writes: the one way the harness writes a file it keeps (tables, figures, references, checkpoints, caches).

The content goes to a temporary file in the target's folder, is flushed to disk (fsync), and only then replaces the
target (`os.replace`, atomic on POSIX). A write that fails or is killed at any point leaves the old file as it was, or
no file, never a truncated one; the temporary file is removed on failure (a SIGKILL can leave one, named
`.<name>.<random>`, which is never mistaken for the target). Failures are OSError, for the caller to word.
"""
from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO


def write_atomic(path: Path, write: Callable[[BinaryIO], object]) -> Path:
    """Write `path` by calling `write` on a binary file opened beside it, then move it into place; returns `path`.
    The folder must exist. The file keeps the permissions of the one it replaces; a new one gets what `open` would
    give it (0o666 less the umask), not the temporary file's private 0o600."""
    path = Path(path)
    mode = path.stat().st_mode & 0o7777 if path.exists() else 0o666 & ~_umask()
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fchmod(f.fileno(), mode)
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def _umask() -> int:
    """This process's umask (reading it means setting it: set it straight back)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def write_bytes(path: Path, data: bytes) -> Path:
    """`path` holds exactly `data`, written atomically."""
    return write_atomic(path, lambda f: f.write(data))


def write_text(path: Path, text: str) -> Path:
    """`path` holds `text` (UTF-8, newlines as given), written atomically."""
    return write_bytes(path, text.encode("utf-8"))
