"""Settings every test shares (tests, notebooks and doctests)."""

import os
import tempfile


def pytest_configure(config):
    """The test session (and every process it starts) caches into a folder of its own, never the user's
    ~/.cache (cinn.engine.layout caches its layout choices there)."""
    os.environ["XDG_CACHE_HOME"] = tempfile.mkdtemp(prefix="cinn-test-cache-")
