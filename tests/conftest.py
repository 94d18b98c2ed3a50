import os
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

REAL_DATA = os.environ.get("HARNESS_DATA")
needs_real_data = pytest.mark.skipif(not REAL_DATA, reason="set HARNESS_DATA to the folder holding omniglot/ (CI does)")


@pytest.fixture(autouse=True)
def _one_thread():
    """Tests run with the harness's default of one intra-op thread (fast and deterministic for small models)."""
    torch.set_num_threads(1)


@pytest.fixture(scope="session")
def omniglot_cache(tmp_path_factory) -> Path:
    """A cache with the real Omniglot prepared by `python -m harness data prepare omniglot` (once per session)."""
    from harness.cli import main

    if not REAL_DATA:
        pytest.skip("set HARNESS_DATA to the folder holding omniglot/ (CI does)")
    cache = tmp_path_factory.mktemp("cache")
    assert main(["data", "prepare", "omniglot", "--data-dir", REAL_DATA, "--cache", str(cache)]) == 0
    return cache


@pytest.fixture
def omniglot(omniglot_cache, monkeypatch) -> Path:
    """The prepared real Omniglot as the harness's cache for this test (HARNESS_CACHE)."""
    monkeypatch.setenv("HARNESS_CACHE", str(omniglot_cache))
    return omniglot_cache


@pytest.fixture(scope="session")
def miniimagenet_cache(tmp_path_factory) -> Iterator[Path]:
    """A cache with the real MiniImagenet prepared by `python -m harness data prepare miniimagenet` (once per session;
    its 1.27 GB array is removed at the end of the session)."""
    import shutil

    from harness.cli import main

    if not REAL_DATA:
        pytest.skip("set HARNESS_DATA to the folder holding miniimagenet/ (CI does)")
    cache = tmp_path_factory.mktemp("cache")
    assert main(["data", "prepare", "miniimagenet", "--data-dir", REAL_DATA, "--cache", str(cache)]) == 0
    yield cache
    shutil.rmtree(cache / "miniimagenet", ignore_errors=True)


@pytest.fixture
def miniimagenet(miniimagenet_cache, monkeypatch) -> Path:
    """The prepared real MiniImagenet as the harness's cache for this test (HARNESS_CACHE)."""
    monkeypatch.setenv("HARNESS_CACHE", str(miniimagenet_cache))
    return miniimagenet_cache
