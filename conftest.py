"""Settings every test shares (tests, notebooks and doctests)."""

import os
import tempfile

import pytest
from _pytest.doctest import DoctestItem


def pytest_configure(config):
    """The test session (and every process it starts) caches into a folder of its own, never the user's
    ~/.cache (cinn.engine.layout caches its layout choices there)."""
    os.environ["XDG_CACHE_HOME"] = tempfile.mkdtemp(prefix="cinn-test-cache-")


@pytest.fixture(autouse=True)
def doctests_run_in_a_temporary_folder(request, tmp_path, monkeypatch):
    """Docstring examples that write files (``save_image_table(..., "table.png")``) write them into a folder
    of their own, not into the checkout."""
    if isinstance(request.node, DoctestItem):
        monkeypatch.chdir(tmp_path)
