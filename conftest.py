"""Settings every test shares (tests, notebooks and doctests)."""

import os
import tempfile

import pytest
import torch
from _pytest.doctest import DoctestItem


def pytest_configure(config):
    """The test session (and every process it starts) caches into a folder of its own, never the user's
    ~/.cache (cinn.engine.layout caches its layout choices there). When the tests are spread over one process
    per core (pytest-xdist), each process and every process it starts computes on one thread: two processes
    with as many threads as cores each would spin on each other's cores."""
    os.environ["XDG_CACHE_HOME"] = tempfile.mkdtemp(prefix="cinn-test-cache-")
    if os.environ.get("PYTEST_XDIST_WORKER"):
        os.environ["OMP_NUM_THREADS"] = "1"
        torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def doctests_run_in_a_temporary_folder(request, tmp_path, monkeypatch):
    """Docstring examples that write files (``save_image_table(..., "table.png")``) write them into a folder
    of their own, not into the checkout."""
    if isinstance(request.node, DoctestItem):
        monkeypatch.chdir(tmp_path)
