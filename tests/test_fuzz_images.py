"""Randomly corrupted image files reach the image loader: it returns an image or raises DataError, nothing else."""

from __future__ import annotations

import io
import random
import warnings

import numpy as np
import pytest
from PIL import Image

from cinn.data import DataError, fit_square, open_image

FUZZ_TRIES = 245
"""Corrupted files tried, from a seeded generator: 35 of each of the 7 formats, five kinds of corruption."""


def valid_files() -> dict[str, bytes]:
    rng = np.random.default_rng(0)
    image = Image.fromarray(rng.integers(0, 256, (3, 3, 3), dtype=np.uint8)).resize((37, 29), Image.BILINEAR)
    files = {}
    for name, mode, options in (("jpg", "RGB", {"quality": 80}), ("png", "RGBA", {}), ("png", "P", {}),
                                ("webp", "RGB", {}), ("tiff", "RGB", {}), ("bmp", "RGB", {}),
                                ("jpg", "CMYK", {})):
        buffer = io.BytesIO()
        image.convert(mode).save(buffer, format={"jpg": "JPEG"}.get(name, name.upper()), **options)
        files[f"{mode.lower()}.{name}"] = buffer.getvalue()
    return files


def corrupt(data: bytes, rng: random.Random) -> bytes:
    """One of: flip bytes, truncate, splice random bytes in, duplicate a chunk, zero a run."""
    data = bytearray(data)
    kind = rng.randrange(5)
    if kind == 0:
        for _ in range(rng.randint(1, 20)):
            data[rng.randrange(len(data))] = rng.randrange(256)
    elif kind == 1:
        del data[rng.randrange(1, len(data)):]
    elif kind == 2:
        at = rng.randrange(len(data))
        data[at:at] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 64)))
    elif kind == 3:
        start = rng.randrange(len(data))
        data[start:start] = data[start:start + rng.randint(1, 256)]
    else:
        start = rng.randrange(len(data))
        data[start:start + rng.randint(1, 128)] = bytes(min(128, len(data) - start))
    return bytes(data)


def test_corrupted_images_load_or_raise_a_data_error(tmp_path):
    rng = random.Random(0)
    files = valid_files()
    names = sorted(files)
    loaded = 0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # PIL warns about odd files it still reads
        for tried in range(FUZZ_TRIES):
            name = names[tried % len(names)]
            path = tmp_path / f"fuzz_{tried}.{name.split('.')[-1]}"
            path.write_bytes(corrupt(files[name], rng))
            try:
                image = fit_square(open_image(path), 16)
            except DataError as error:
                assert str(path) in str(error)
            except Exception as error:  # anything else is a crash the user would see as a traceback
                pytest.fail(f"{name} corrupted as {path.name} raised {type(error).__name__}: {error}")
            else:
                assert image.size == (16, 16) and image.mode == "RGB"
                loaded += 1
            path.unlink()
    assert 0 < loaded < FUZZ_TRIES  # the corruptions both break files and leave some readable
