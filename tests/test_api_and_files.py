"""What reaches cinn from outside and could lie or fail: checkpoint headers of every wrong type (one line, in
bounded time and memory), writes the storage refuses (one line, no half run left), float images, the files
cinn writes (readable by others), and the Python API's arguments (one ValueError or TypeError that says what
was expected). The command-line cases are rows of ``tests/test_bad_inputs.py``."""

from __future__ import annotations

import math
import os
import resource
import subprocess
import sys
import time
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import cinn
from cinn import build_cinn, build_glow
from cinn.colorization import build_colorization_model
from cinn.colorization.colorizer import Colorizer
from cinn.config import ConfigError
from cinn.data import DataError, open_image
from cinn.engine import CheckpointError, save_checkpoint
from cinn.engine.checkpoint import current_umask
from cinn.models import build_regressor
from tasks import glow

ROOT = Path(__file__).resolve().parents[1]


# ------------------------------------------------------------------------------------ checkpoint headers
def nested(depth: int) -> list:
    value: list = []
    for _ in range(depth):
        value = [value, value]
    return value


WRONG = [None, -1, "x" * 10_000, math.nan, nested(60), 1e300, True]
"""Values every header entry below is set to in turn: nothing, a negative number, a long text, NaN, a nested list
that would take gigabytes to print, a huge number, a boolean."""

ENTRIES = {
    "step": WRONG, "task": [None, -1, nested(60), 1.5], "cinn_version": [None, nested(60)],
    "model_spec": [None, -1, "x" * 10_000, nested(60), {"builder": nested(60)}, {"builder": "build_glow",
                                                                                 "arguments": nested(60)}],
    "conventions": [None, -1, "x", nested(60)], "conventions.n_bits": WRONG,
    "conventions.image_shape": [None, -1, [0, 28, 28], [1, 10**9, 28], nested(60), "x"],
    "conventions.n_classes": [-1, "x", nested(60), 1e300], "config": [None, -1, nested(60)],
    "config.train": [-1, nested(60)], "ema": [-1, "x", nested(60)], "best": [-1, "x", nested(60), {"step": -1}],
    "model": [None, -1, "x", nested(60)], "layout": [-1, nested(60)], "format": [None, -1, nested(60)],
}
"""Each header entry of a checkpoint (``a.b`` is key ``b`` of entry ``a``) and its wrong values."""


def mutated(state: dict, entry: str, value: object) -> dict:
    state = {**state, "conventions": dict(state["conventions"]), "config": dict(state["config"])}
    if "." in entry:
        outer, inner = entry.split(".")
        state[outer][inner] = value
    else:
        state[entry] = value
    return state


@pytest.fixture(scope="module")
def glow_state(tiny_glow_run) -> dict:
    return torch.load(tiny_glow_run / "checkpoint.pt", weights_only=True)


@pytest.mark.parametrize("entry", ENTRIES)
def test_every_wrong_header_entry_is_one_line_in_bounded_time_and_memory(entry, glow_state, tmp_path):
    for index, value in enumerate(ENTRIES[entry]):
        path = tmp_path / f"{index}.pt"
        torch.save(mutated(glow_state, entry, value), path)
        tracemalloc.start()
        started = time.process_time()
        with pytest.raises(CheckpointError) as error:
            glow.GlowTask().open(path, torch.device("cpu"))
        seconds = time.process_time() - started
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        message = str(error.value)
        assert "\n" not in message and len(message) < 1000, (entry, index, message[:300])
        assert seconds < 10 and peak < 200 * 2**20, (entry, index, seconds, peak)  # the file's own size: ~1 MiB


def test_a_valid_checkpoint_opens(glow_state, tmp_path):
    torch.save(glow_state, tmp_path / "same.pt")
    assert glow.GlowTask().open(tmp_path / "same.pt", torch.device("cpu")).model.input_shape == (1, 28, 28)


def test_a_class_count_that_disagrees_with_the_model_is_refused(tiny_mnist_run, tmp_path):
    state = torch.load(tiny_mnist_run / "checkpoint.pt", weights_only=True)
    state["conventions"]["n_classes"] = 3  # sample would draw only three of the model's ten classes
    torch.save(state, tmp_path / "three.pt")
    with pytest.raises(CheckpointError, match=r"its conventions give n_classes 3 \(the model has 10 classes\)"):
        cinn.load(tmp_path / "three.pt")


# ------------------------------------------------------------------------------------ files cinn writes
def test_checkpoints_and_exports_are_readable_by_others(tiny_glow_run, tmp_path):
    expected = 0o666 & ~current_umask()
    save_checkpoint({"step": 1}, tmp_path / "checkpoint.pt")
    assert (tmp_path / "checkpoint.pt").stat().st_mode & 0o777 == expected
    assert glow.main(["export", "--checkpoint", str(tiny_glow_run / "checkpoint.pt"), "--out",
                      str(tmp_path / "shared.pt")]) == 0
    assert (tmp_path / "shared.pt").stat().st_mode & 0o777 == expected
    assert (tiny_glow_run / "checkpoint.pt").stat().st_mode & 0o777 == expected


def test_load_expands_the_home_folder_and_names_a_missing_device(tiny_glow_run, tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    (tmp_path / "glow.pt").write_bytes((tiny_glow_run / "checkpoint.pt").read_bytes())
    assert cinn.load("~/glow.pt").input_shape == (1, 28, 28)
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match=r"device 'cuda' is not available on this machine \(torch sees no"):
            cinn.load("~/glow.pt", device="cuda")


def font_cache_environment() -> dict[str, str]:
    """The environment with matplotlib's configuration and font cache where this process keeps them, so that a
    process whose writes are limited does not try (and fail, with a warning) to build the font cache anew."""
    import matplotlib

    return {**os.environ, "MPLCONFIGDIR": matplotlib.get_cachedir()}


def limited(size: int):
    """A ``preexec_fn`` that limits the files the process writes to ``size`` bytes (as a full disk would refuse
    the rest: Python ignores SIGXFSZ, so the write fails with EFBIG)."""
    return lambda: resource.setrlimit(resource.RLIMIT_FSIZE, (size, size))


def one_error_line(result: subprocess.CompletedProcess) -> str:
    assert result.returncode == 2, result.stderr[-3000:]
    assert result.stderr.startswith("error: ") and result.stderr.count("\n") == 1, result.stderr[-3000:]
    return result.stderr


def test_a_sample_grid_the_disk_refuses_is_one_line(tiny_glow_run, tmp_path):
    result = subprocess.run([sys.executable, "-m", "tasks.glow", "sample", "--checkpoint",
                             str(tiny_glow_run / "checkpoint.pt"), "--out", str(tmp_path / "grid.png"),
                             "--temperatures", "0.7"], cwd=ROOT, capture_output=True, text=True, timeout=300,
                            preexec_fn=limited(100), env=font_cache_environment())
    assert one_error_line(result).startswith(f"error: could not write {tmp_path / 'grid.png'} (File too large): "
                                             "free space or write elsewhere")


def test_a_run_the_disk_refuses_leaves_no_half_run(mnist_data_root, tmp_path):
    run_dir = tmp_path / "run"
    result = subprocess.run([sys.executable, "-m", "tasks.glow", "train", "--config", "configs/glow/tiny.yaml",
                             "--data.dataset", "mnist", "--data.root", str(mnist_data_root), "--run_dir",
                             str(run_dir)], cwd=ROOT, capture_output=True, text=True, timeout=300,
                            preexec_fn=limited(20_000), env=font_cache_environment())  # no room for a checkpoint
    assert "nor any checkpoint before it; free space, then train again" in one_error_line(result)
    assert not {"config.yaml", "metrics.csv", "checkpoint.pt", "tensorboard"} & {p.name for p in run_dir.iterdir()}


# ------------------------------------------------------------------------------------ images
@pytest.mark.parametrize("mode", ["1", "L", "LA", "P", "PA", "RGB", "RGBA", "RGBX", "CMYK", "YCbCr", "LAB", "I",
                                  "I;16", "I;16B", "I;16L", "F"])  # the modes image files open in (not RGBa, HSV)
def test_every_pillow_mode_keeps_its_brightness_or_is_refused(mode, tmp_path):
    grey = Image.new("RGB", (6, 4), (128, 128, 128))
    if mode.startswith("I;16"):
        image = Image.new(mode, (6, 4), 32896)  # 128/255 of the 16-bit range
    elif mode == "I":
        image = Image.new("I", (6, 4), 32896)  # 32-bit integers hold 16-bit data (PNG, TIFF)
    elif mode == "F":
        image = Image.new("F", (6, 4), 128 / 255)  # float pixels in [0, 1]
    else:
        try:
            image = grey.convert(mode)
        except ValueError:
            pytest.fail(f"Pillow cannot make mode {mode} from RGB")
    path = tmp_path / "image.tiff"
    try:
        image.save(path)
    except (OSError, ValueError, KeyError):
        path = tmp_path / "image.png"
        try:
            image.save(path)
        except (OSError, ValueError, KeyError):
            pytest.fail(f"no format Pillow writes holds mode {mode}")
    try:
        opened = open_image(path)
    except DataError as error:
        assert str(path) in str(error)
        return
    pixels = np.asarray(opened, dtype=np.float64)
    tolerance = 130 if mode == "1" else 30  # a 1-bit image is dithered; a palette quantised
    assert abs(pixels.mean() - 128) <= tolerance, (mode, pixels.mean())


@pytest.mark.parametrize("value, kept", [(0.5, 128), (128.0, 128), (1.0, 255), (0.0, 0)])
def test_float_pixels_keep_their_brightness(value, kept, tmp_path):
    Image.new("F", (4, 3), value).save(tmp_path / "float.tif")
    assert open_image(tmp_path / "float.tif").getpixel((0, 0)) == (kept, kept, kept)


@pytest.mark.parametrize("value", [300.0, -0.5, math.nan, math.inf])
def test_float_pixels_of_unknown_scale_are_refused(value, tmp_path):
    Image.new("F", (4, 3), value).save(tmp_path / "float.tif")
    with pytest.raises(DataError, match="float pixels"):
        open_image(tmp_path / "float.tif")


# ------------------------------------------------------------------------------------ the Python API
GLOW = build_glow((1, 8, 8), n_levels=2, steps_per_level=1, hidden_channels=8)
CINN = build_cinn((2, 8, 8), (1, 8, 8), n_levels=2, blocks_per_level=1, hidden_channels=8)
LABELLED = build_glow((1, 8, 8), n_levels=2, steps_per_level=1, hidden_channels=8, n_classes=3)
COLORIZER = Colorizer(build_colorization_model("cinn", 16, 2, n_levels=2, blocks_per_level=1,
                                               hidden_channels=8).eval(), shorter_side=16, multiple=8,
                      ab_downsample=2)
PHOTO = torch.randint(0, 256, (3, 20, 30), dtype=torch.uint8)
X = torch.rand(2, 1, 8, 8)

API_CASES = [
    ("sample at NaN temperature", lambda: GLOW.sample(2, temperature=math.nan), ValueError,
     "temperature must be a finite number >= 0, got nan"),
    ("sample at negative temperature", lambda: GLOW.sample(2, temperature=-1), ValueError,
     "temperature must be a finite number >= 0"),
    ("sample of -1 images", lambda: GLOW.sample(-1), ValueError, "n must be an integer >= 1, got -1"),
    ("sample of 2.5 images", lambda: GLOW.sample(2.5), ValueError, "n must be an integer >= 1, got 2.5"),
    ("log_prob of one image without a batch axis", lambda: GLOW.log_prob(X[0]), ValueError,
     "x must be a batch of shape (B, 1, 8, 8), got (1, 8, 8); add the batch axis: x.unsqueeze(0)"),
    ("log_prob of uint8 images", lambda: GLOW.log_prob((X * 255).to(torch.uint8)), TypeError,
     "x must hold floats (dequantised values in [0, 1]"),
    ("log_prob of float64 images", lambda: GLOW.log_prob(X.double()), TypeError,
     "x is torch.float64 but the model's weights are torch.float32"),
    ("log_prob of a NumPy array", lambda: GLOW.log_prob(X.numpy()), TypeError,
     "x must be a torch.Tensor, got a numpy.ndarray; convert it with torch.from_numpy(x)"),
    ("log_prob of the wrong channel count", lambda: GLOW.log_prob(torch.rand(2, 3, 8, 8)), ValueError,
     "x must be a batch of shape (B, 1, 8, 8), got (2, 3, 8, 8)"),
    ("log_prob with a condition of another batch size", lambda: CINN.log_prob(torch.rand(2, 2, 8, 8),
                                                                               torch.rand(3, 1, 8, 8)),
     ValueError, "c has 3 rows for a batch of 2"),
    ("log_prob with a NumPy condition", lambda: CINN.log_prob(torch.rand(2, 2, 8, 8), np.zeros((2, 1, 8, 8))),
     TypeError, "c must be a torch.Tensor, got a numpy.ndarray"),
    ("sample of a class model with too few labels", lambda: LABELLED.sample(4, torch.tensor([0, 1])), ValueError,
     "c has 2 rows for a batch of 4"),
    ("decode of one tensor instead of the latent list", lambda: GLOW.decode(torch.randn(2, 4, 4, 4)), ValueError,
     "expected a list of 2 latent tensors (one per scale, see latent_shapes), got a tensor"),
    ("decode of latents of the wrong shape",
     lambda: GLOW.decode([torch.randn(2, 2, 4, 4), torch.randn(2, 3, 2, 2)]),
     ValueError, "latents[1] must be a batch of shape (B, 8, 2, 2), got (2, 3, 2, 2)"),
    ("build_glow with zero width and negative depth", lambda: build_glow((1, 8, 8), hidden_channels=0,
                                                                         steps_per_level=-1),
     ValueError, "hidden_channels must be an integer >= 1, got 0"),
    ("build_cinn with a negative depth", lambda: build_cinn((2, 8, 8), (1, 8, 8), blocks_per_level=-2,
                                                            n_levels=2),
     ValueError, "blocks_per_level must be an integer >= 0, got -2"),
    ("regressor sample of 0 images", lambda: build_regressor((2, 8, 8), (1, 8, 8), n_levels=2).sample(
        0, torch.rand(1, 1, 8, 8)), ValueError, "n must be an integer >= 1, got 0"),
    ("colorize at NaN temperature", lambda: COLORIZER.colorize(PHOTO, 2, temperature=math.nan), ValueError,
     "temperature must be a finite number >= 0, got nan"),
    ("colorize into 0 colourings", lambda: COLORIZER.colorize(PHOTO, 0), ValueError,
     "n_samples must be an integer from 1 to 64, got 0"),
    ("colorize of a thin strip", lambda: COLORIZER.colorize(torch.zeros(3, 2, 400, dtype=torch.uint8), 1),
     ValueError, "the photo is 400x2 pixels; a photo may have at most"),
    ("colorize of a float photo", lambda: COLORIZER.colorize(PHOTO.float() / 255, 1), ValueError,
     "expected a uint8 RGB photo (3, H, W), got torch.float32"),
    ("colorize of a NumPy photo", lambda: COLORIZER.colorize(PHOTO.numpy(), 1), TypeError,
     "image must be a torch.Tensor, got a numpy.ndarray"),
]


@pytest.mark.parametrize("call, error, message", [case[1:] for case in API_CASES],
                         ids=[case[0] for case in API_CASES])
def test_the_api_says_what_it_expected(call, error, message):
    with pytest.raises(error) as raised:
        call()
    assert message in str(raised.value) and "\n" not in str(raised.value)


def test_the_checked_api_still_computes_what_it_did():
    torch.manual_seed(0)
    assert GLOW.log_prob(X).shape == (2,) and GLOW.sample(3, temperature=0.0).shape == (3, 1, 8, 8)
    assert CINN.log_prob(torch.rand(2, 2, 8, 12), torch.rand(2, 1, 8, 12)).shape == (2,)  # another width
    LABELLED.log_prob(X, torch.tensor([0, 2]))  # data-dependent initialisation of its ActNorm
    assert LABELLED.sample(3, torch.tensor([0, 1, 2])).shape == (3, 1, 8, 8)
    assert COLORIZER.colorize(PHOTO, 2).shape == (2, 3, 20, 30)


def test_every_api_case_is_in_the_troubleshooting_table():
    page = (ROOT / "docs" / "TROUBLESHOOTING.md").read_text()
    table = page[page.index("## The Python API"):]
    for name, _, error, message in API_CASES:
        assert f"| {name} | {error.__name__} | … {message} … |" in table, name
