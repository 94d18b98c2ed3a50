"""Datasets on disk: where they are read from, where they are prepared, and safe, atomic extraction.

Raw archives are read from a data directory (`--data-dir`, else `HARNESS_DATA`, else `<cache>/data`); everything
derived from them goes into a writable cache (`--cache`, else `HARNESS_CACHE`, else `~/.cache/maml-harness`).
A prepared folder appears under its final name only once complete (built beside it, then renamed), so a folder
that exists is never half-extracted.
"""
from __future__ import annotations

import os
import shutil
import tempfile
import zipfile
from collections.abc import Callable
from pathlib import Path, PurePosixPath

from harness.errors import UsageError


def cache_dir(override: Path | None = None) -> Path:
    """The writable cache for prepared datasets."""
    return Path(override or os.environ.get("HARNESS_CACHE") or Path.home() / ".cache" / "maml-harness")


def data_dir(override: Path | None = None, cache: Path | None = None) -> Path:
    """Where raw datasets are read from."""
    return Path(override or os.environ.get("HARNESS_DATA") or cache_dir(cache) / "data")


def safe_members(archive: zipfile.ZipFile) -> list[zipfile.ZipInfo]:
    """The archive's members, refusing any absolute path or `..` (zip-slip) with a UsageError."""
    for member in archive.infolist():
        path = PurePosixPath(member.filename)
        if path.is_absolute() or ".." in path.parts or member.filename.startswith(("\\", "/")) or ":" in path.parts[0]:
            raise UsageError(f"{archive.filename}: member {member.filename!r} would be written outside the target "
                             "folder; this archive is unsafe or corrupt, replace it with the official one")
    return archive.infolist()


def extract_zip(archive_path: Path, into: Path) -> None:
    """Extract `archive_path` into the folder `into` (which must exist), after checking every member's path."""
    try:
        with zipfile.ZipFile(archive_path) as archive:
            archive.extractall(into, members=safe_members(archive))
    except zipfile.BadZipFile as exc:
        raise UsageError(f"{archive_path} is not a readable zip archive ({exc}); replace it with the official "
                         "one") from None


def build_atomically(target: Path, build: Callable[[Path], None]) -> Path:
    """`target` built by `build(tmp)` in a temporary folder beside it, then renamed into place; a partial build is
    removed. An existing `target` is returned as it is (it can only exist complete)."""
    if target.exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}."))
    try:
        build(tmp)
        os.replace(tmp, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target
