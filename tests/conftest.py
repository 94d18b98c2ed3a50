import pytest
import torch


@pytest.fixture(autouse=True)
def _one_thread():
    """Tests run with the harness's default of one intra-op thread (fast and deterministic for small models)."""
    torch.set_num_threads(1)
