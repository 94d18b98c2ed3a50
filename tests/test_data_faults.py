"""Dataset preparation under faults: concurrent and killed preparations, zip bombs, full disks, bad archives."""
import errno
import io
import os
import signal
import subprocess
import sys
import time
import zipfile
from collections.abc import Callable
from pathlib import Path

import pytest
from PIL import Image

import harness.data
from harness.data import build_atomically, extract_zip
from harness.errors import UsageError
from plugins.omniglot_data import OmniglotData

ROOT = Path(__file__).resolve().parents[1]
BUILDER = """
import sys, time
from pathlib import Path
from harness.data import build_atomically

target, log, go = map(Path, sys.argv[1:])

def build(tmp):
    (tmp / "data.txt").write_text("complete")
    with log.open("a") as f:
        f.write("built\\n")
    while not go.exists():
        time.sleep(0.01)

print(build_atomically(target, build))
"""
"""A process that builds `target`, logging each build to `log`, and finishes once the file `go` exists."""


def start_builder(target: Path, log: Path, go: Path, err: Path) -> subprocess.Popen:
    """The builder, its stderr written to `err`."""
    with err.open("w") as stderr:
        return subprocess.Popen([sys.executable, "-c", BUILDER, str(target), str(log), str(go)], cwd=ROOT,
                                stdout=subprocess.PIPE, stderr=stderr, text=True)


def wait_for(condition, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def test_concurrent_preparations_build_once_and_both_use_the_result(tmp_path):
    target, log, go = tmp_path / "cache" / "dataset", tmp_path / "builds.log", tmp_path / "go"
    first = start_builder(target, log, go, tmp_path / "first.err")
    wait_for(log.exists)  # the first is building
    second = start_builder(target, log, go, tmp_path / "second.err")
    wait_for(lambda: (tmp_path / "second.err").read_text() or log.read_text() == "built\nbuilt\n")
    go.touch()
    for process in (first, second):
        assert process.communicate(timeout=30)[0] == f"{target}\n" and process.returncode == 0
    assert (tmp_path / "first.err").read_text() == ""
    assert (tmp_path / "second.err").read_text() == f"waiting for another process preparing {target}\n"
    assert log.read_text() == "built\n"  # the second waited and used the first one's folder
    assert (target / "data.txt").read_text() == "complete"
    assert os.listdir(target.parent) == ["dataset"]  # no lock or temporary left


def test_a_killed_preparation_leaves_a_temporary_that_the_next_one_removes(tmp_path):
    target, log = tmp_path / "cache" / "dataset", tmp_path / "builds.log"
    killed = start_builder(target, log, tmp_path / "never", tmp_path / "killed.err")
    wait_for(log.exists)
    killed.send_signal(signal.SIGKILL)
    killed.wait(timeout=10)
    stale = [p for p in target.parent.iterdir() if p.is_dir()]
    assert len(stale) == 1 and stale[0].name.startswith(".dataset.") and (stale[0] / "data.txt").is_file()
    others = [target.parent / name for name in (".dataset.v2.abcd1234", ".dataset-old", ".datasets.abcd1234")]
    for other in others:
        other.mkdir()  # not this target's temporaries: kept
    assert build_atomically(target, lambda tmp: (tmp / "data.txt").write_text("again")) == target
    assert (target / "data.txt").read_text() == "again"
    assert sorted(target.parent.iterdir()) == sorted([target, *others])  # the killed one's lock file is gone too


def test_a_target_that_appears_while_building_is_used(tmp_path):
    target = tmp_path / "dataset"

    def build(tmp: Path) -> None:  # another builder (one that ignores the lock) finishes first
        target.mkdir()
        (target / "data.txt").write_text("theirs")
        (tmp / "data.txt").write_text("ours")

    assert build_atomically(target, build) == target
    assert (target / "data.txt").read_text() == "theirs"
    assert os.listdir(tmp_path) == ["dataset"]


def zip_of(path: Path, members: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as z:
        for name, data in members.items():
            z.writestr(name, data)
    return path


@pytest.fixture
def small_caps(monkeypatch):
    """Caps small enough for tiny test archives: 100 kB in all, 10x for members over 1 kB."""
    monkeypatch.setattr(harness.data, "MAX_UNPACKED_BYTES", 100_000)
    monkeypatch.setattr(harness.data, "MAX_RATIO", 10)
    monkeypatch.setattr(harness.data, "RATIO_EXEMPT_BYTES", 1_000)


@pytest.mark.parametrize("members,message", [
    ({"fine.txt": os.urandom(500), "zeros.bin": bytes(50_000)}, "times its compressed size"),
    ({f"part{i}.bin": os.urandom(30_000) for i in range(4)}, "120000 bytes"),
], ids=["ratio", "total"])
def test_a_zip_bomb_is_refused_before_anything_is_extracted(tmp_path, small_caps, members, message):
    archive = zip_of(tmp_path / "bomb.zip", members)
    into = tmp_path / "into"
    into.mkdir()
    with pytest.raises(UsageError, match=message) as caught:
        extract_zip(archive, into)
    assert str(archive) in str(caught.value) and "official" in str(caught.value) and "\n" not in str(caught.value)
    assert list(into.iterdir()) == []


def test_the_caps_admit_an_archive_within_them(tmp_path, small_caps):
    members = {"dir/": b"", "dir/small-zeros.bin": bytes(900), "dir/noise.bin": os.urandom(40_000)}
    into = tmp_path / "into"
    into.mkdir()
    extract_zip(zip_of(tmp_path / "fine.zip", members), into)
    assert {str(p.relative_to(into)): p.is_file() and p.read_bytes() for p in into.rglob("*")} == {
        "dir": False, "dir/small-zeros.bin": bytes(900), "dir/noise.bin": members["dir/noise.bin"]}


def lying_zip(path: Path, declared: int, actual: int) -> Path:
    """One deflated member of `actual` zero bytes whose local and central headers both declare `declared`."""
    raw = bytearray(zip_of(path, {"liar.bin": bytes(actual)}).read_bytes())
    for signature, offset in ((b"PK\x03\x04", 22), (b"PK\x01\x02", 24)):
        at = raw.index(signature) + offset
        assert int.from_bytes(raw[at:at + 4], "little") == actual
        raw[at:at + 4] = declared.to_bytes(4, "little")
    path.write_bytes(bytes(raw))
    return path


def test_a_member_that_lies_about_its_size_is_cut_off(tmp_path):
    archive = lying_zip(tmp_path / "liar.zip", declared=1_000, actual=5_000_000)
    into = tmp_path / "into"
    into.mkdir()
    with pytest.raises(UsageError, match="liar.zip"):
        extract_zip(archive, into)
    assert sum(p.stat().st_size for p in into.rglob("*")) <= 1_000


def png() -> bytes:
    out = io.BytesIO()
    Image.new("1", (10, 10), 1).save(out, format="PNG")
    return out.getvalue()


def fake_omniglot(data: Path) -> Path:
    """Omniglot's two archives in `data`, 2 alphabets x 2 characters x 2 drawings each (see `small_omniglot`)."""
    folder = data / "omniglot" / "omniglot-py"
    folder.mkdir(parents=True)
    for part, alphabet in (("images_background", "Latin"), ("images_evaluation", "Greek")):
        zip_of(folder / f"{part}.zip", {f"{part}/{alphabet}/character{c}/{c}_{d}.png": png()
                                        for c in (1, 2) for d in (1, 2)})
    return data


@pytest.fixture
def small_omniglot(monkeypatch):
    """Omniglot's expected counts cut down to those of `fake_omniglot`."""
    for name, value in (("ALPHABETS", 2), ("CHARACTERS", 4), ("DRAWINGS", 2)):
        monkeypatch.setattr(f"plugins.omniglot_data.{name}", value)


def test_a_fake_omniglot_is_prepared_through_atomic_writes(tmp_path, small_omniglot, monkeypatch):
    synced = []
    fsync = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: (synced.append(Path(os.readlink(f"/proc/self/fd/{fd}")).name),
                                                 fsync(fd)))
    prepared = OmniglotData().prepare(fake_omniglot(tmp_path / "data"), tmp_path / "cache")
    images, characters = OmniglotData.load(prepared)
    assert images.shape == (4, 2, 28, 28) and characters[0] == "images_background/Latin/character1"
    assert {name.split(".")[1] for name in synced} >= {"omniglot28", "characters"}  # `.characters.json.<random>`
    assert os.listdir(tmp_path / "cache") == ["omniglot"]


def test_a_full_disk_while_preparing_is_a_usage_error_and_leaves_nothing(tmp_path, small_omniglot, monkeypatch):
    def full(fd: int) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "fsync", full)
    cache = tmp_path / "cache"
    with pytest.raises(UsageError, match="No space left on device") as caught:
        OmniglotData().prepare(fake_omniglot(tmp_path / "data"), cache)
    message = str(caught.value)
    assert str(cache / "omniglot") in message and "HARNESS_CACHE" in message and "\n" not in message
    assert os.listdir(cache) == []


def test_a_cache_that_cannot_be_created_is_a_usage_error(tmp_path):
    (tmp_path / "file").write_text("")
    with pytest.raises(UsageError, match="Not a directory") as caught:
        OmniglotData().prepare(tmp_path, tmp_path / "file" / "cache")  # as plugins/omniglot.py calls it
    assert str(tmp_path / "file" / "cache" / "omniglot") in str(caught.value)


def test_an_error_inside_a_build_is_not_reworded(tmp_path):
    def fail(tmp: Path) -> None:
        raise UsageError("the archives are wrong; replace them")

    with pytest.raises(UsageError, match="^the archives are wrong"):
        build_atomically(tmp_path / "dataset", fail)
    assert list(tmp_path.iterdir()) == []


def omniglot_archives(tmp, make: Callable[[Path], object]) -> None:
    """Omniglot's two archives under {tmp}/raw, each made by `make(path)`."""
    folder = tmp / "raw" / "omniglot" / "omniglot-py"
    folder.mkdir(parents=True)
    for name in ("images_background.zip", "images_evaluation.zip"):
        make(folder / name)


def zip_bomb(tmp):
    omniglot_archives(tmp, lambda path: zip_of(path, {"images_background/zeros.bin": bytes(4 << 20)}))  # in 4 kB


def zip_slip(tmp):
    omniglot_archives(tmp, lambda path: zip_of(path, {"../../escaped.png": png()}))


def member_named_dot(tmp):
    omniglot_archives(tmp, lambda path: zip_of(path, {".": png()}))


def file_and_folder(tmp):
    omniglot_archives(tmp, lambda path: zip_of(path, {"images_background/a": b"file", "images_background/a/b": b""}))


def target_is_a_file(tmp):
    omniglot_archives(tmp, lambda path: zip_of(path, {}))
    (tmp / "cache").mkdir()
    (tmp / "cache" / "omniglot").write_text("")


def lying_archives(tmp):
    omniglot_archives(tmp, lambda path: lying_zip(path, declared=10, actual=100_000))


def too_few_characters(tmp):
    omniglot_archives(tmp, lambda path: zip_of(path, {"images_background/Latin/character1/1_1.png": png()}))


def archives_are_folders(tmp):
    omniglot_archives(tmp, Path.mkdir)


def cache_is_a_file(tmp):
    omniglot_archives(tmp, lambda path: zip_of(path, {}))
    (tmp / "file").write_text("")


PREPARE = ["data", "prepare", "omniglot", "--data-dir", "{tmp}/raw", "--cache", "{tmp}/cache"]
BAD_DATA = [  # cases of the one bad-input table (tests/test_cli.py's BAD): argv, setup, message
    (PREPARE, zip_bomb, "times its compressed size (at most 100"),
    (PREPARE, zip_slip, "'../../escaped.png' is not a path inside the target folder"),
    (PREPARE, member_named_dot, "'.' is not a path inside the target folder"),
    (PREPARE, file_and_folder, "'images_background/a' is both a file and a folder"),
    (PREPARE, target_is_a_file, "omniglot is a file, not a prepared dataset folder"),
    (PREPARE, lying_archives, "not a readable zip archive"),
    (PREPARE, too_few_characters, "replace the archives with the official ones"),
    (PREPARE, archives_are_folders, "Omniglot not found"),
    ([*PREPARE[:-1], "{tmp}/file"], cache_is_a_file, "is a file, not a directory"),
]


