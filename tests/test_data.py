"""Dataset preparation: safe, atomic extraction, clear errors, and the real Omniglot (via HARNESS_DATA, as in CI)."""
import os
import zipfile
from pathlib import Path

import pytest
import torch

from harness.cli import main
from harness.data import build_atomically, download, extract_zip, file_md5
from harness.errors import UsageError
from plugins.omniglot_data import SPLIT_SIZES, OmniglotData, load_split, make_split

REAL_DATA = os.environ.get("HARNESS_DATA")


def test_zip_slip_members_are_refused_and_nothing_is_written(tmp_path):
    archive = tmp_path / "evil.zip"
    with zipfile.ZipFile(archive, "w") as z:
        z.writestr("fine.txt", "ok")
        z.writestr("../escaped.txt", "bad")
    target = tmp_path / "target"
    target.mkdir()
    with pytest.raises(UsageError, match="is not a path inside the target folder"):
        extract_zip(archive, target)
    assert not (tmp_path / "escaped.txt").exists() and list(target.iterdir()) == []


def test_a_corrupt_archive_is_a_usage_error(tmp_path):
    (tmp_path / "bad.zip").write_bytes(b"PK\x03\x04 truncated")
    with pytest.raises(UsageError, match="not a readable zip archive"):
        extract_zip(tmp_path / "bad.zip", tmp_path)


def test_a_failed_build_leaves_no_folder(tmp_path):
    def fail(tmp: Path) -> None:
        (tmp / "half.txt").write_text("half")
        raise RuntimeError("interrupted")

    with pytest.raises(RuntimeError):
        build_atomically(tmp_path / "dataset", fail)
    assert list(tmp_path.iterdir()) == []


def test_missing_omniglot_says_what_to_put_where(tmp_path, capsys):
    code = main(["data", "prepare", "omniglot", "--data-dir", str(tmp_path), "--cache", str(tmp_path / "cache")])
    assert code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "images_background.zip and images_evaluation.zip" in err
    assert not (tmp_path / "cache").exists()  # not even the cache folder
    assert main(["data", "prepare", "mnist", "--cache", str(tmp_path / "cache")]) == 2


def test_real_omniglot_is_prepared_verified_and_cached(omniglot_cache, capsys):
    args = ["data", "prepare", "omniglot", "--data-dir", REAL_DATA, "--cache", str(omniglot_cache)]
    assert main(args) == 0  # a second prepare reuses the cache
    prepared = Path(capsys.readouterr().out.strip())
    assert prepared == omniglot_cache / "omniglot"
    images, characters = OmniglotData.load(prepared)
    assert images.shape == (1623, 20, 28, 28) and images.dtype == torch.uint8
    assert set(images.unique().tolist()) == {0, 1} and 0.03 < images.float().mean() < 0.2  # ink is sparse
    assert len(characters) == len(set(characters)) == 1623
    assert len({c.split("/")[1] for c in characters}) == 50
    assert load_split() == make_split(characters)  # the committed manifest is the reproducible split of these data
    assert set().union(*load_split().values()) == set(characters)


def test_committed_split_has_no_test_character_in_training():
    split = load_split()
    assert {k: len(v) for k, v in split.items()} == SPLIT_SIZES
    train, val, test = (set(split[k]) for k in ("train", "val", "test"))
    assert not (train & test) and not (val & test) and not (train & val)
    alphabets = {name.split("/")[1] for name in test}
    assert len(alphabets) > 20  # drawn irrespective of alphabet, so the test classes span many alphabets


def test_download_checks_the_md5_and_leaves_nothing_partial(tmp_path):
    source = tmp_path / "archive.zip"
    source.write_bytes(b"not the official bytes")
    target = tmp_path / "data" / "archive.zip"
    with pytest.raises(UsageError, match="not the published"):
        download(source.as_uri(), target, md5="0" * 32)
    assert list((tmp_path / "data").iterdir()) == []
    assert download(source.as_uri(), target, md5=file_md5(source)) == target
    assert target.read_bytes() == source.read_bytes()


def test_download_without_network_is_one_line_exit_2(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr("plugins.omniglot_data.SOURCE", "http://127.0.0.1:9/omniglot")  # nothing listens there
    code = main(["data", "prepare", "omniglot", "--download", "--data-dir", str(tmp_path / "data"),
                 "--cache", str(tmp_path / "cache")])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "could not download" in err and "yourself" in err
    assert not any(p.is_file() for p in (tmp_path / "data").rglob("*"))
