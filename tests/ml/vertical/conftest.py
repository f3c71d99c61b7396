"""Fixtures of the vertical algorithms' tests."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="module")
def one_torch_thread():
    """torch with one intra-op thread for a module's tests: the parties run as threads of one process
    on a small shared machine, where more intra-op threads only contend."""
    torch = pytest.importorskip("torch")
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
