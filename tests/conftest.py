"""Fixtures shared by the test files: one tiny trained run per task, trained once per test process (the first time
a test asks for it) and only read by the tests that use it; a test that writes into a run directory trains its
own."""

from __future__ import annotations

from pathlib import Path

import pytest
from mnist_fixture import write_mnist_fixture

from tasks import colorize, glow, mnist

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def mnist_data_root(tmp_path_factory) -> Path:
    """An MNIST-format fixture of 96 training and 32 test digits (read only)."""
    return write_mnist_fixture(tmp_path_factory.mktemp("mnist"), n_train=96, n_test=32)


def train_tiny(name: str, run_dir: Path, *extra: str) -> Path:
    """``python -m tasks.NAME train --config configs/NAME/tiny.yaml`` (in this process) into ``run_dir``."""
    task = {"colorize": colorize, "glow": glow, "mnist": mnist}[name]
    assert task.main(["train", "--config", str(ROOT / f"configs/{name}/tiny.yaml"), "--run_dir", str(run_dir),
                      *extra]) == 0
    return run_dir


@pytest.fixture(scope="session")
def tiny_colorize_run(tmp_path_factory) -> Path:
    """``configs/colorize/tiny.yaml`` trained on scikit-image's photos, as ``train`` with no --data does (read
    only)."""
    return train_tiny("colorize", tmp_path_factory.mktemp("colorize") / "run")


@pytest.fixture(scope="session")
def tiny_glow_run(mnist_data_root, tmp_path_factory) -> Path:
    """``configs/glow/tiny.yaml`` trained on :func:`mnist_data_root` (read only)."""
    return train_tiny("glow", tmp_path_factory.mktemp("glow") / "run", "--data.dataset", "mnist", "--data.root",
                      str(mnist_data_root))


@pytest.fixture(scope="session")
def tiny_mnist_run(mnist_data_root, tmp_path_factory) -> Path:
    """``configs/mnist/tiny.yaml`` trained on :func:`mnist_data_root` (read only)."""
    return train_tiny("mnist", tmp_path_factory.mktemp("mnist_run") / "run", "--data.root", str(mnist_data_root))
