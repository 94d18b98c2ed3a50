"""Datasets on disk: where they are read from, where they are prepared, and safe, atomic extraction.

Raw archives are read from a data directory (`--data-dir`, else `HARNESS_DATA`, else `<cache>/data`); everything
derived from them goes into a writable cache (`--cache`, else `HARNESS_CACHE`, else `~/.cache/maml-harness`).
A prepared folder appears under its final name only once complete (built beside it, then renamed), so a folder
that exists is never half-extracted. Builders of one folder take turns under a file lock beside it (a second process
waits, then uses the first one's folder), and each removes the temporaries that killed builders left. Archives are
checked before anything is extracted: every member a path inside the target folder (no zip-slip), no more than
`MAX_UNPACKED_BYTES` in all, no member unpacking to more than `MAX_RATIO` times its compressed size (zip bombs);
each member is then cut off at the size its header declares.
"""
from __future__ import annotations

import fcntl
import hashlib
import os
import re
import shutil
import sys
import tempfile
import urllib.error
import urllib.request
import zipfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path, PurePosixPath

from harness.errors import UsageError

MAX_UNPACKED_BYTES = 16 << 30
"""The most one archive may unpack to (Omniglot's two archives unpack to 9 MB; MiniImagenet's images are a few GB)."""
MAX_RATIO = 100
"""The most a member may unpack to per compressed byte (images barely compress; zeros compress 1,000-fold)."""
RATIO_EXEMPT_BYTES = 1 << 20
"""Members up to this size are exempt from `MAX_RATIO` (small text files compress well; `MAX_UNPACKED_BYTES` still
bounds them all)."""
CHUNK = 1 << 20
"""Bytes read from an archive member at a time."""


def cache_dir(override: Path | None = None) -> Path:
    """The writable cache for prepared datasets."""
    return Path(override or os.environ.get("HARNESS_CACHE") or Path.home() / ".cache" / "maml-harness")


def data_dir(override: Path | None = None, cache: Path | None = None) -> Path:
    """Where raw datasets are read from."""
    return Path(override or os.environ.get("HARNESS_DATA") or cache_dir(cache) / "data")


def safe_members(archive: zipfile.ZipFile) -> list[zipfile.ZipInfo]:
    """The archive's members, refusing with a UsageError any absolute path or `..` (zip-slip), a name of no path at
    all (`.`), or a path that is both a file and a folder."""
    members = archive.infolist()
    for member in members:
        path = PurePosixPath(member.filename)
        if (not path.parts or path.is_absolute() or ".." in path.parts or member.filename.startswith(("\\", "/"))
                or ":" in path.parts[0]):
            raise UsageError(f"{archive.filename}: member {member.filename!r} is not a path inside the target "
                             "folder; this archive is unsafe or corrupt, replace it with the official one")
    files = {PurePosixPath(m.filename) for m in members if not m.is_dir()}
    folders = {folder for m in members for folder in PurePosixPath(m.filename).parents}
    if clash := sorted(files & folders):
        raise UsageError(f"{archive.filename}: member '{clash[0]}' is both a file and a folder; this archive is "
                         "corrupt, replace it with the official one")
    return members


def extract_zip(archive_path: Path, into: Path) -> None:
    """Extract `archive_path` into the folder `into` (which must exist), after checking every member's path and the
    sizes its central directory declares (`check_sizes`); no member is written beyond its declared size. A bad
    archive is a UsageError; OSError writing into `into` is left to the caller."""
    try:
        with zipfile.ZipFile(archive_path) as archive:
            members = safe_members(archive)
            check_sizes(archive_path, members)
            for member in members:
                _extract_member(archive, member, into)
    except zipfile.BadZipFile as exc:
        raise UsageError(f"{archive_path} is not a readable zip archive ({exc}); replace it with the official "
                         "one") from None


def check_sizes(archive_path: Path, members: list[zipfile.ZipInfo]) -> None:
    """Refuse, with a UsageError, members that unpack to more than `MAX_UNPACKED_BYTES` in all or one member that
    unpacks to more than `MAX_RATIO` times its compressed size (unless it is under `RATIO_EXEMPT_BYTES`)."""
    fix = "this is a zip bomb or a corrupt archive, replace it with the official one"
    for m in members:
        if m.file_size > RATIO_EXEMPT_BYTES and m.file_size > MAX_RATIO * m.compress_size:
            raise UsageError(f"{archive_path}: member {m.filename!r} unpacks to {m.file_size} bytes, "
                             f"{m.file_size // max(m.compress_size, 1)} times its compressed size (at most "
                             f"{MAX_RATIO} times its compressed size is accepted); {fix}")
    if (total := sum(m.file_size for m in members)) > MAX_UNPACKED_BYTES:
        raise UsageError(f"{archive_path} unpacks to {total} bytes, more than the {MAX_UNPACKED_BYTES} accepted; "
                         f"{fix}")


def _extract_member(archive: zipfile.ZipFile, member: zipfile.ZipInfo, into: Path) -> None:
    """One member (already checked by `safe_members`) written under `into`, refused once it unpacks to more than
    its declared size."""
    path = into.joinpath(*PurePosixPath(member.filename).parts)
    if member.is_dir():
        path.mkdir(parents=True, exist_ok=True)
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    left = member.file_size
    with archive.open(member) as source, path.open("wb") as out:
        while block := source.read(min(CHUNK, left + 1)):
            left -= len(block)
            if left < 0:
                raise UsageError(f"{archive.filename}: member {member.filename!r} unpacks to more than the "
                                 f"{member.file_size} bytes its header declares; this archive is corrupt or "
                                 "malicious, replace it with the official one")
            out.write(block)


def download(url: str, target: Path, md5: str, timeout: float = 60.0) -> Path:
    """Fetch `url` into `target` (written beside it, then renamed) after checking its md5; an existing `target` with
    the right md5 is kept. Network failure or a wrong checksum is a UsageError; nothing partial is left behind."""
    if target.is_file() and file_md5(target) == md5:
        return target
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.")
    except OSError as exc:
        raise UsageError(f"cannot write into {target.parent} ({exc.strerror}); give a writable --data-dir") from None
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
    return file_digest(path, "md5")


def file_digest(path: Path, algorithm: str) -> str:
    """The hex digest of `path`'s bytes by `algorithm` (a `hashlib` name), read in 1 MiB blocks."""
    digest = hashlib.new(algorithm)
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def build_atomically(target: Path, build: Callable[[Path], None]) -> Path:
    """`target` built by `build(tmp)` in a temporary folder beside it, then renamed into place; a partial build is
    removed. Builders of one `target` take turns under a lock beside it: one that finds `target` complete (also when
    it appears while building) returns it as it is, and each removes the temporaries that killed builders left.
    A file at `target`, or OSError (a full disk, a read-only cache), is a UsageError naming the path; a UsageError
    from `build` passes as it is."""
    if target.exists() and not target.is_dir():
        raise UsageError(f"{target} is a file, not a prepared dataset folder; remove it and retry")
    try:
        if target.is_dir() and not _temporaries(target):
            return target
        with _locked(target):
            for stale in _temporaries(target):  # every live builder holds the lock: these are killed builders'
                shutil.rmtree(stale, ignore_errors=True)
            if not target.is_dir():
                _build_beside(target, build)
    except OSError as exc:
        if target.is_dir():  # complete by construction; only the lock or the clean-up failed
            return target
        where = f"{exc.strerror or exc}" + (f": {exc.filename}" if exc.filename else "")
        raise UsageError(f"could not prepare {target} ({where}); free space on that disk or point --cache (or "
                         "HARNESS_CACHE) at a writable folder, then retry") from None
    return target


def _build_beside(target: Path, build: Callable[[Path], None]) -> None:
    """`build` into a fresh temporary folder beside `target`, renamed to `target` unless that appeared meanwhile."""
    tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}."))
    try:
        build(tmp)
        try:
            os.replace(tmp, target)
        except OSError:
            if not target.is_dir():  # else another builder (one ignoring the lock) finished first: use its folder
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _temporaries(target: Path) -> list[Path]:
    """The folders `_build_beside` makes for `target`: `.<name>.<8 characters that mkdtemp draws>`."""
    if not target.parent.is_dir():
        return []
    pattern = re.compile(rf"\.{re.escape(target.name)}\.[a-z0-9_]{{8}}")
    return [p for p in target.parent.iterdir() if pattern.fullmatch(p.name) and p.is_dir()]


@contextmanager
def _locked(target: Path) -> Iterator[None]:
    """Hold an exclusive lock (flock) on `.<name>.lock` beside `target`, creating the folder if needed; a process
    that has to wait says so on stderr. The lock file is removed on release (one that a killed holder left is locked
    and removed by the next)."""
    path = target.parent / f".{target.name}.lock"
    while True:
        target.parent.mkdir(parents=True, exist_ok=True)  # again: a failed preparation may have removed a new cache
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                print(f"waiting for another process preparing {target}", file=sys.stderr)
                fcntl.flock(fd, fcntl.LOCK_EX)
            if _still_at(fd, path):
                break
        except BaseException:
            os.close(fd)
            raise
        os.close(fd)  # its holder removed it on release: lock the file now at `path` instead
    try:
        yield
    finally:
        path.unlink(missing_ok=True)  # while still held, so that no waiter takes a lock on a removed file
        os.close(fd)


def _still_at(fd: int, path: Path) -> bool:
    """Whether the open file `fd` is the one now at `path`."""
    try:
        return os.path.samestat(os.fstat(fd), os.stat(path))
    except FileNotFoundError:
        return False
