"""A tiny MNIST-format data set in torchvision's layout, written by the tests themselves."""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np


def write_idx(path: Path, array: np.ndarray, compress: bool = False) -> Path:
    """Write ``array`` (uint8) as an idx file: magic ``0x0000 08 ndim``, big-endian dims, then the bytes."""
    header = struct.pack(">HBB", 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    payload = header + np.ascontiguousarray(array, dtype=np.uint8).tobytes()
    path = path.with_name(path.name + ".gz") if compress else path
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(gzip.compress(payload) if compress else payload)
    return path


def write_mnist_fixture(root: Path, n_train: int = 64, n_test: int = 32, seed: int = 0,
                        folder: str = "MNIST", compress: bool = False) -> Path:
    """Random digits-like images (a bright blob whose position depends on the label) under
    ``root/<folder>/raw/``; returns ``root``."""
    rng = np.random.default_rng(seed)
    raw = root / folder / "raw"
    for split, count in (("train", n_train), ("t10k", n_test)):
        labels = rng.integers(0, 10, size=count).astype(np.uint8)
        images = rng.integers(0, 40, size=(count, 28, 28)).astype(np.uint8)
        for image, label in zip(images, labels, strict=True):
            row, col = 4 + 2 * (label % 5), 6 + 8 * (label // 5)
            image[row:row + 10, col:col + 6] = 220
        write_idx(raw / f"{split}-images-idx3-ubyte", images, compress)
        write_idx(raw / f"{split}-labels-idx1-ubyte", labels, compress)
    return root
