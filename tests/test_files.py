"""Atomic writes (`harness/files.py`): a write that fails or is killed leaves the old file whole, never a truncated
or empty one."""
import os
import random
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

from harness.cli import main
from harness.files import write_atomic, write_text


def test_a_write_that_fails_half_way_leaves_the_old_file_and_no_temporary(tmp_path):
    target = write_text(tmp_path / "table.csv", "old,complete\n")

    def half(f):
        f.write(b"new,trunc")
        raise OSError(28, "No space left on device")

    with pytest.raises(OSError):
        write_atomic(target, half)
    assert target.read_text() == "old,complete\n"
    assert [p.name for p in tmp_path.iterdir()] == ["table.csv"]


def test_a_new_file_appears_only_complete(tmp_path):
    with pytest.raises(RuntimeError):
        write_atomic(tmp_path / "figure.png", lambda f: (f.write(b"\x89PNG"), (_ for _ in ()).throw(RuntimeError())))
    assert list(tmp_path.iterdir()) == []
    assert write_text(tmp_path / "t.md", "# t\n").read_text() == "# t\n"


def whole(path: Path) -> bool:
    """A table ends with its last newline, a PNG with its IEND chunk."""
    data = path.read_bytes()
    return data.endswith(b"IEND\xaeB`\x82") if path.suffix == ".png" else data.endswith(b"\n")


def test_report_killed_at_random_points_leaves_every_table_and_figure_whole(tmp_path):
    """SIGKILL during `report` (it once left a 0-byte figure): whatever is there afterwards is complete."""
    store = tmp_path / "store"
    assert main(["run", "--suite", "sinusoid", "--learners", "maml,pretrain", "--profile", "smoke", "--quiet",
                 "--out", str(store)]) == 0
    report = [sys.executable, "-m", "harness", "report", "--out", str(store), "--results", str(tmp_path / "tables"),
              "--figures", str(tmp_path / "figures"), "--tables", "table2"]
    start = time.monotonic()
    subprocess.run(report, check=True, capture_output=True)
    took = time.monotonic() - start
    rng = random.Random(0)
    for _ in range(4):
        process = subprocess.Popen(report, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(rng.uniform(0.5, 1.0) * took)
        process.kill()
        process.wait()
        files = [*(tmp_path / "tables").iterdir(), *(tmp_path / "figures").iterdir()]
        assert files and all(whole(path) for path in files if not path.name.startswith(".")), files


def test_a_written_file_gets_the_usual_permissions_or_keeps_its_own(tmp_path):
    old = os.umask(0o022)
    try:
        assert stat.S_IMODE(write_text(tmp_path / "new.csv", "x\n").stat().st_mode) == 0o644
        (tmp_path / "kept.csv").write_text("x\n")
        (tmp_path / "kept.csv").chmod(0o664)
        assert stat.S_IMODE(write_text(tmp_path / "kept.csv", "y\n").stat().st_mode) == 0o664
    finally:
        os.umask(old)
