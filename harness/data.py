"""Datasets on disk: where they are read from, where they are prepared, and safe, atomic extraction.

Raw archives are read from a data directory (`--data-dir`, else `HARNESS_DATA`, else `<cache>/data`); everything
derived from them goes into a writable cache (`--cache`, else `HARNESS_CACHE`, else `~/.cache/maml-harness`).
A prepared folder appears under its final name only once complete (built beside it, then renamed), so a folder
that exists is never half-extracted.
"""
from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
import urllib.error
import urllib.request
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


def download(url: str, target: Path, md5: str, timeout: float = 60.0) -> Path:
    """Fetch `url` into `target` (written beside it, then renamed) after checking its md5; an existing `target` with
    the right md5 is kept. Network failure or a wrong checksum is a UsageError; nothing partial is left behind."""
    if target.is_file() and file_md5(target) == md5:
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.")
    tmp = Path(name)
    try:
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=timeout) as response:
            shutil.copyfileobj(response, out)
        if (got := file_md5(tmp)) != md5:
            raise UsageError(f"{url} has md5 {got}, not the published {md5}; the download is corrupt or the source "
                             "changed: retry, or put the official archive in the data directory yourself")
        os.replace(tmp, target)
    except (OSError, urllib.error.URLError) as exc:
        raise UsageError(f"could not download {url} ({getattr(exc, 'reason', exc)}); without network access, put the "
                         f"archive at {target} yourself") from None
    finally:
        tmp.unlink(missing_ok=True)
    return target


def file_md5(path: Path) -> str:
    digest = hashlib.md5()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


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
