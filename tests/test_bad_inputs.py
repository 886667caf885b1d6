"""Everything a user can get wrong gives one clear line on stderr and a non-zero exit code — driven through
each task's real command line (``run_command(main, argv)``, what ``python -m tasks.X`` runs).

The cases below are also the troubleshooting table of the README; a test keeps the two in step.
"""

from __future__ import annotations

import contextlib
import csv
import os
import pickle
import re
import shutil
import signal
import subprocess
import sys
import zipfile
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from mnist_fixture import write_mnist_fixture
from paused_train import start_paused
from PIL import Image

import cinn
from cinn.cli import run_command, writing_alone
from cinn.colorization import load_colorizer
from cinn.config import ConfigError
from cinn.engine import CheckpointError, load_checkpoint, resolve_device, trained_weights
from cinn.engine.run import RunDirectory
from tasks import colorize, glow, mnist

ROOT = Path(__file__).resolve().parents[1]
COLORIZE_TINY = str(ROOT / "configs/colorize/tiny.yaml")
GLOW_TINY = str(ROOT / "configs/glow/tiny.yaml")
MNIST_TINY = str(ROOT / "configs/mnist/tiny.yaml")


def colour_photo(width: int = 48, height: int = 40, seed: int = 0) -> Image.Image:
    rng = np.random.default_rng(seed)
    coarse = Image.fromarray(rng.integers(0, 256, (3, 3, 3), dtype=np.uint8))
    return coarse.resize((width, height), Image.BILINEAR)


def photo_folder(path: Path, count: int = 4, **kwargs) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    for index in range(count):
        colour_photo(seed=index, **kwargs).save(path / f"photo_{index}.jpg")
    return path


def truncated(path: Path, image_format: str) -> Path:
    """A photo folder whose last file is cut to half its bytes."""
    photo_folder(path, 3)
    buffer = path / f"cut.{image_format}"
    colour_photo(seed=9).save(buffer)
    buffer.write_bytes(buffer.read_bytes()[: buffer.stat().st_size // 2])
    return path


@dataclass
class Fixtures:
    tmp: Path
    mnist_root: Path
    colorize_checkpoint: Path
    glow_checkpoint: Path
    mnist_checkpoint: Path


@dataclass
class Case:
    """``args(fixtures)`` → the argv of ``main``; the run must exit with ``code`` and print ``message``."""

    name: str
    main: Callable
    args: Callable[[Fixtures], list[str]]
    message: str
    code: int = 2


def mnist_with(tmp: Path, damage: Callable[[Path], None]) -> Path:
    root = write_mnist_fixture(tmp / "broken_mnist", n_train=64, n_test=16)
    damage(root / "MNIST" / "raw")
    return root


def wrong_magic(raw: Path) -> None:
    data = bytearray((raw / "train-images-idx3-ubyte").read_bytes())
    data[2:4] = b"\x08\x01"  # claims to be a 1-D label file
    (raw / "train-images-idx3-ubyte").write_bytes(bytes(data))


def cut_images(raw: Path) -> None:
    path = raw / "train-images-idx3-ubyte"
    path.write_bytes(path.read_bytes()[:-100])


def label_eleven(raw: Path) -> None:
    data = bytearray((raw / "train-labels-idx1-ubyte").read_bytes())
    data[-1] = 11
    (raw / "train-labels-idx1-ubyte").write_bytes(bytes(data))


def crafted_pickle(tmp: Path) -> Path:
    class Exploit:
        def __reduce__(self):
            return (Path.touch, (tmp / "code_ran",))

    torch.save({"format": "cinn-checkpoint-1", "payload": Exploit()}, tmp / "crafted.pt")
    return tmp / "crafted.pt"


def colorize_train(*args: str) -> Callable[[Fixtures], list[str]]:
    return lambda f: ["train", "--config", COLORIZE_TINY, "--run_dir", str(f.tmp / "run"), *args]


def mnist_train(root: Callable[[Path], Path] | None = None, *args: str) -> Callable[[Fixtures], list[str]]:
    def argv(f: Fixtures) -> list[str]:
        data_root = [] if root is None else ["--data.root", str(root(f.tmp))]
        return ["train", "--config", MNIST_TINY, "--run_dir", str(f.tmp / "run"), *data_root, *args]
    return argv


def glow_train(*args: str) -> Callable[[Fixtures], list[str]]:
    return lambda f: ["train", "--config", GLOW_TINY, "--data.dataset", "mnist", "--data.root", str(f.mnist_root),
                      "--run_dir", str(f.tmp / "run"), *args]


def colorize_on(folder: Callable[[Path], Path]) -> Callable[[Fixtures], list[str]]:
    return lambda f: ["train", "--config", COLORIZE_TINY, "--run_dir", str(f.tmp / "run"),
                      "--data", str(folder(f.tmp))]


def empty(path: Path) -> Path:
    path.mkdir()
    return path


def text_only(path: Path) -> Path:
    path.mkdir()
    (path / "notes.txt").write_text("no photos here")
    return path


def text_named_png(path: Path) -> Path:
    photo_folder(path, 3)
    (path / "fake.png").write_text("this is not a PNG")
    return path


def greyscale(path: Path) -> Path:
    path.mkdir()
    for index in range(4):
        colour_photo(seed=index).convert("L").save(path / f"grey_{index}.png")
    return path


def too_small(path: Path) -> Path:
    photo_folder(path, 3)
    colour_photo(width=12, height=9).save(path / "thumbnail.png")
    return path


def thin_strip(path: Path, width: int = 20000, height: int = 1) -> Path:
    """A photo ``width × height`` pixels at ``path``: a few hundred bytes that a model would see as gigapixels."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (width, height), (200, 90, 40)).save(path)
    return path


def claiming_size(path: Path, width: int, height: int) -> Path:
    """A tiny PNG whose header claims ``width × height`` pixels (its IHDR rewritten, CRC fixed)."""
    Image.new("RGB", (1, 1)).save(path)
    data = bytearray(path.read_bytes())
    data[16:24] = width.to_bytes(4, "big") + height.to_bytes(4, "big")
    data[29:33] = zlib.crc32(bytes(data[12:29])).to_bytes(4, "big")
    path.write_bytes(bytes(data))
    return path


def opening(command: str, checkpoint: str, *args: str) -> Callable[[Fixtures], list[str]]:
    """``command --checkpoint CK ARGS`` with the fixtures' checkpoint ``checkpoint`` (``colorize`` or ``glow``)."""
    return lambda f: [command, "--checkpoint", str(getattr(f, f"{checkpoint}_checkpoint")), *args]


def eval_checkpoint(checkpoint: Callable[[Fixtures], Path]) -> Callable[[Fixtures], list[str]]:
    return lambda f: ["eval", "--checkpoint", str(checkpoint(f))]


def bad_yaml(tmp: Path) -> Path:
    (tmp / "bad.yaml").write_text("model: [unclosed")
    return tmp / "bad.yaml"


def truncated_checkpoint(f: Fixtures) -> Path:
    path = f.tmp / "truncated.pt"
    path.write_bytes(f.colorize_checkpoint.read_bytes()[:5000])
    return path


def non_finite_checkpoint(f: Fixtures, checkpoint: str = "glow") -> Path:
    """A copy of the fixtures' checkpoint of ``checkpoint`` whose first trained floating-point weight is NaN."""
    state = torch.load(getattr(f, f"{checkpoint}_checkpoint"), weights_only=True)
    weight = next(value for value in trained_weights(state).values() if value.is_floating_point())
    weight.view(-1)[0] = float("nan")
    torch.save(state, f.tmp / f"nan_{checkpoint}.pt")
    return f.tmp / f"nan_{checkpoint}.pt"


def copied_run(f: Fixtures, checkpoint: str = "glow") -> Path:
    """A copy of the fixtures' run of ``checkpoint`` (``glow`` or ``mnist``), to change or train on."""
    copy = f.tmp / f"{checkpoint}_copy"
    shutil.copytree(getattr(f, f"{checkpoint}_checkpoint").parent, copy)
    return copy


def diverged_run(f: Fixtures) -> Path:
    """A copy of the fixtures' Glow run whose training weights (not only the trained ones) hold a NaN."""
    run_dir = copied_run(f)
    state = torch.load(run_dir / "checkpoint.pt", weights_only=True)
    next(value for value in state["model"].values() if value.is_floating_point()).view(-1)[0] = float("nan")
    torch.save(state, run_dir / "checkpoint.pt")
    return run_dir


def without_entry(f: Fixtures, entry: str) -> Path:
    """The run directory of a copy of the fixtures' Glow run whose checkpoint lacks ``entry``."""
    run_dir = copied_run(f)
    state = torch.load(run_dir / "checkpoint.pt", weights_only=True)
    del state[entry]
    torch.save(state, run_dir / "checkpoint.pt")
    return run_dir


def other_architecture(f: Fixtures) -> Path:
    """A copy of the Glow checkpoint whose model spec asks for wider couplings than its weights have."""
    state = torch.load(f.glow_checkpoint, weights_only=True)
    state["model_spec"]["arguments"]["hidden_channels"] *= 2
    torch.save(state, f.tmp / "other.pt")
    return f.tmp / "other.pt"


def edited(change: Callable[[dict], object], checkpoint: str = "glow") -> Callable[[Fixtures], Path]:
    """A copy of the fixtures' ``checkpoint`` whose loaded state ``change`` edited in place, saved as torch does
    (so its checksums are right: only the content is wrong)."""
    def write(f: Fixtures) -> Path:
        state = torch.load(getattr(f, f"{checkpoint}_checkpoint"), weights_only=True)
        change(state)
        torch.save(state, f.tmp / "edited.pt")
        return f.tmp / "edited.pt"
    return write


def nested(depth: int) -> list:
    """A list nested ``depth`` deep: a few bytes in a file, a huge text if ever formatted in full."""
    value: list = []
    for _ in range(depth):
        value = [value, value]
    return value


def flipped_weights(f: Fixtures) -> Path:
    """A copy of the Glow checkpoint with 16 bytes flipped inside one of its weight tensors (torch loads it and
    every value stays finite)."""
    data = bytearray(f.glow_checkpoint.read_bytes())
    with zipfile.ZipFile(f.glow_checkpoint) as archive:
        entry = max(archive.infolist(), key=lambda info: info.file_size)
        with archive.open(entry) as member:
            start = data.index(member.read(64))
    for offset in range(start + 4, start + 20):
        data[offset] ^= 0x01  # the lowest mantissa bit: values change, none becomes NaN
    (f.tmp / "flipped.pt").write_bytes(data)
    return f.tmp / "flipped.pt"


def lacking(command: str, entry: str, *args: str) -> Callable[[Fixtures], list[str]]:
    """``command --checkpoint CK ARGS`` with a Glow checkpoint that lacks ``entry``; ``{tmp}`` in ``args`` is the
    test's folder."""
    return lambda f: [command, "--checkpoint", str(without_entry(f, entry) / "checkpoint.pt"),
                      *(arg.format(tmp=f.tmp) for arg in args)]


def resumed_copy(*args: str) -> Callable[[Fixtures], list[str]]:
    """``train --resume`` of a copy of the fixtures' Glow run, with ``args``."""
    return lambda f: ["train", "--resume", "--run_dir", str(copied_run(f)), *args]


def classifier_over_checkpoint(f: Fixtures) -> list[str]:
    """``eval`` of a copy of the MNIST run, given its own checkpoint as the classifier cache."""
    checkpoint = str(copied_run(f, "mnist") / "checkpoint.pt")
    return ["eval", "--checkpoint", checkpoint, "--classifier", checkpoint]


def plain_pickle(tmp: Path) -> Path:
    with open(tmp / "plain.pkl", "wb") as file:
        pickle.dump({"weights": [1.0, 2.0]}, file)
    return tmp / "plain.pkl"


def written(path: Path, content: bytes | str) -> Path:
    path.write_bytes(content.encode() if isinstance(content, str) else content)
    return path


def fifo(path: Path) -> Path:
    """A named pipe at ``path``: reading it blocks until something writes to it, here never."""
    path.parent.mkdir(parents=True, exist_ok=True)
    os.mkfifo(path)
    return path


def sparse_file(path: Path, size: int) -> Path:
    with open(path, "wb") as file:
        file.truncate(size)
    return path


def nested_aliases(level: int) -> str:
    """YAML of 9^(level + 1) ones in nested lists, each level nine aliases of the one below: a few hundred
    bytes that stand for a value millions of items long."""
    if level == 0:
        return "&a0 [1, 1, 1, 1, 1, 1, 1, 1, 1]"
    return f"&a{level} [{nested_aliases(level - 1)}, " + ", ".join([f"*a{level - 1}"] * 8) + "]"


def alias_bomb(tmp: Path) -> Path:
    return written(tmp / "bomb.yaml", f"train:\n  lr: {nested_aliases(6)}\n")


HELD_RUN_DIRECTORIES: list[RunDirectory] = []  # locked as another live train process would hold them
HELD_FOLDERS: list[contextlib.AbstractContextManager] = []  # held as another live colorize process would hold them


def held(folder: Path) -> Path:
    """``folder``, locked as a ``colorize`` writing into it holds it."""
    folder.mkdir(parents=True, exist_ok=True)
    lock = writing_alone(folder, "--out", "colorize")
    lock.__enter__()
    HELD_FOLDERS.append(lock)
    return folder


def in_use(run_dir: Path) -> Path:
    run_directory = RunDirectory(SimpleNamespace(run_dir=str(run_dir)), resume=False, overwrite=False)
    run_directory.create()
    HELD_RUN_DIRECTORIES.append(run_directory)
    return run_dir


def colorize_into(out: Callable[[Path], Path]) -> Callable[[Fixtures], list[str]]:
    """``colorize`` of a photo folder into ``out(folder)``."""
    def argv(f: Fixtures) -> list[str]:
        photos = photo_folder(f.tmp / "photos", 1)
        return ["colorize", "--checkpoint", str(f.colorize_checkpoint), "--input", str(photos), "--out",
                str(out(photos))]
    return argv


def colorized_already(f: Fixtures) -> list[str]:
    photos, out = photo_folder(f.tmp / "photos", 1), f.tmp / "out"
    out.mkdir()
    (out / "photo_0_jpg_contact.png").write_bytes(b"an earlier contact sheet")
    return ["colorize", "--checkpoint", str(f.colorize_checkpoint), "--input", str(photos), "--out", str(out)]


CASES = [
    # data
    Case("missing photo folder", colorize.main, lambda f: colorize_train("--data", str(f.tmp / "nowhere"))(f),
         "does not exist; check the path"),
    Case("empty photo folder", colorize.main, colorize_on(lambda t: empty(t / "empty")), "contains no images"),
    Case("folder without images", colorize.main, colorize_on(lambda t: text_only(t / "texts")),
         "contains no images"),
    Case("truncated JPEG", colorize.main, colorize_on(lambda t: truncated(t / "jpeg", "jpg")),
         "cannot read image"),
    Case("truncated PNG", colorize.main, colorize_on(lambda t: truncated(t / "png", "png")),
         "cannot read image"),
    Case("text file named .png", colorize.main, colorize_on(lambda t: text_named_png(t / "fake")),
         "cannot read image"),
    Case("greyscale photos for colourisation training", colorize.main, colorize_on(lambda t: greyscale(t / "g")),
         "training photos are greyscale"),
    Case("photo smaller than the model's input", colorize.main, colorize_on(lambda t: too_small(t / "small")),
         "smaller than the model's 16x16 input"),
    Case("photo a thin strip", colorize.main,
         lambda f: ["colorize", "--checkpoint", str(f.colorize_checkpoint), "--input",
                    str(thin_strip(f.tmp / "strip.png")), "--out", str(f.tmp / "out")],
         "is 20000x1 pixels, its longer side more than 10 times its shorter side"),
    Case("photo to colourise of 1x1 pixels", colorize.main,
         lambda f: ["colorize", "--checkpoint", str(f.colorize_checkpoint), "--input",
                    str(thin_strip(f.tmp / "dot.png", 1, 1)), "--out", str(f.tmp / "out")],
         "the photo is 1x1 pixels; a photo may have at most"),
    Case("training photo a thin strip", colorize.main,
         colorize_on(lambda t: thin_strip(photo_folder(t / "thin", 3) / "strip.png", 1, 20000).parent),
         "is 1x20000 pixels, its longer side more than 10 times its shorter side"),
    Case("photo with more pixels than an image may have", colorize.main,
         lambda f: ["colorize", "--checkpoint", str(f.colorize_checkpoint), "--input",
                    str(claiming_size(f.tmp / "bomb.png", 20000, 20000)), "--out", str(f.tmp / "out")],
         "has more than the 178956970 pixels an image may have"),
    Case("photo to colourise does not exist", colorize.main,
         lambda f: ["colorize", "--checkpoint", str(f.colorize_checkpoint), "--input", str(f.tmp / "no.jpg")],
         "does not exist; pass a photo or a folder"),
    Case("photo to colourise is corrupt", colorize.main,
         lambda f: ["colorize", "--checkpoint", str(f.colorize_checkpoint), "--input",
                    str(truncated(f.tmp / "cut", "jpg") / "cut.jpg")], "cannot read image"),
    Case("folder to colourise holds only a named pipe", colorize.main,
         lambda f: ["colorize", "--checkpoint", str(f.colorize_checkpoint), "--input",
                    str(fifo(f.tmp / "pipes" / "photo.jpg").parent)], "contains no photos"),
    Case("photo to colourise is a named pipe", colorize.main,
         lambda f: ["colorize", "--checkpoint", str(f.colorize_checkpoint), "--input", str(fifo(f.tmp / "p.jpg"))],
         "is not a regular file; pass a photo or a folder"),
    Case("folder to colourise has no photos", colorize.main,
         lambda f: ["colorize", "--checkpoint", str(f.colorize_checkpoint), "--input", str(empty(f.tmp / "e"))],
         "contains no photos"),
    Case("colourings exist already in the output folder", colorize.main, colorized_already,
         "already exists (1 of the 9 outputs do); pass --overwrite"),
    Case("MNIST file with a wrong magic number", mnist.main, mnist_train(lambda t: mnist_with(t, wrong_magic)),
         "magic number"),
    Case("truncated MNIST file", mnist.main, mnist_train(lambda t: mnist_with(t, cut_images)),
         "the file is truncated or corrupt"),
    Case("MNIST labels out of range", mnist.main, mnist_train(lambda t: mnist_with(t, label_eleven)),
         "must lie in 0..9 but reach 11"),
    Case("MNIST files missing", mnist.main, mnist_train(lambda t: empty(t / "no_mnist")), "were not found"),
    Case("dataset neither a name nor a folder", glow.main,
         lambda f: [*glow_train()(f), "--data.dataset", str(f.tmp / "nowhere")], "is neither a dataset name"),
    # configs
    Case("unknown config key", colorize.main, colorize_train("--model.depth=3"), "unknown key 'model.depth'"),
    Case("wrong config type", colorize.main, colorize_train("--train.batch_size=four"),
         "train.batch_size must be an int"),
    Case("image size not divisible by 2^levels", glow.main, glow_train("--model.n_levels=3"),
         "must be divisible by 2^n_levels"),
    Case("crop not a multiple of the model's scales", colorize.main, colorize_train("--data.crop_size=12"),
         "must be a multiple of 2^model.n_levels"),
    Case("image size beyond the limit", colorize.main, colorize_train("--data.image_size=1000000"),
         "data.image_size must be at most 4096, got 1000000"),
    Case("more couplings than the limit", mnist.main, mnist_train(None, "--model.n_blocks=100000000"),
         "model.n_blocks must be at most 1024, got 100000000"),
    Case("an FC-only option on the conv cINN", mnist.main,
         mnist_train(None, "--model.architecture=conv", "--model.subnet_inputs=asinh"),
         "model.subnet_inputs=asinh: only the fc architecture has this; model.architecture is conv"),
    Case("more Glow flow steps than the limit", glow.main, glow_train("--model.steps_per_level=100000000"),
         "model.n_levels x model.steps_per_level must be at most 1024 flow steps"),
    Case("zero batch size", colorize.main, colorize_train("--train.batch_size=0"),
         "train.batch_size must be positive"),
    Case("negative learning rate", mnist.main, mnist_train(None, "--train.lr=-0.001"),
         "train.lr must be positive"),
    Case("learning rate NaN", mnist.main, mnist_train(None, "--train.lr=nan"),
         "train.lr must be a finite number, got 'nan'"),
    Case("infinite clamp", colorize.main, colorize_train("--model.coupling.clamp=inf"),
         "model.coupling must be a finite number, got 'inf'"),
    Case("infinite weight decay", glow.main, glow_train("--train.weight_decay=.inf"),
         "train.weight_decay must be a finite number"),
    Case("negative gradient clip", colorize.main, colorize_train("--train.grad_clip=-1"),
         "train.grad_clip must not be negative"),
    Case("evaluations of no held-out images", colorize.main,
         colorize_train("--train.eval_every=2", "--train.eval_images=0"),
         "train.eval_images must be positive when train.eval_every is set"),
    Case("negative interval of a periodic task", glow.main, glow_train("--train.sample_every=-1"),
         "train.sample_every must not be negative"),
    Case("seed out of range", glow.main, glow_train("--train.seed=-1"), "train.seed must be from 0 to 2**63 - 1"),
    Case("more colourings per photo in eval than the limit", colorize.main, colorize_train("--eval.samples=100"),
         "eval.samples must be from 1 to 64"),
    Case("output directory not writable", colorize.main,  # a folder inside a file: cannot be created, even by root
         lambda f: colorize_train("--run_dir", str(f.colorize_checkpoint / "run"))(f), "cannot be written"),
    Case("batch larger than the training set", colorize.main, colorize_train("--train.batch_size=1000"),
         "but the training set has only"),
    Case("config file missing", colorize.main, lambda f: ["train", "--config", str(f.tmp / "none.yaml")],
         "does not exist; check the path given to --config"),
    Case("config file not YAML", colorize.main, lambda f: ["train", "--config", str(bad_yaml(f.tmp))],
         "is not valid YAML"),
    Case("config file is a folder", colorize.main, lambda f: ["train", "--config", str(f.tmp)],
         "is a folder, not a file; pass a YAML file"),
    Case("config file not text", colorize.main,
         lambda f: ["train", "--config", str(written(f.tmp / "photo.yaml", b"\x89PNG\r\n\x1a\n\x00\xff\xfe"))],
         "is not text (byte 0 is not UTF-8)"),
    Case("config file larger than 1 MiB", colorize.main,
         lambda f: ["train", "--config", str(sparse_file(f.tmp / "huge.yaml", 100 * 2**20))],
         "is larger than a config file can be (1 MiB)"),
    Case("config file a named pipe", colorize.main, lambda f: ["train", "--config", str(fifo(f.tmp / "c.yaml"))],
         "is not a regular file; pass a YAML file to --config"),
    Case("config value a YAML alias bomb", colorize.main, lambda f: ["train", "--config", str(alias_bomb(f.tmp))],
         "train.lr must be a float, got [[[[...], [...], [...], [...], [...], [...], [...], [...], ...], [[...], "
         "[...], ... (cut to 80 characters)"),
    Case("unavailable training device", colorize.main, colorize_train("--train.device=cuda:64"),
         "train.device 'cuda:64' is not available on this machine"),
    Case("malformed training device", glow.main, glow_train("--train.device=gpu"),
         "train.device must be auto, cpu, cuda or cuda:N, got 'gpu'"),
    # command options
    Case("zero samples to draw", glow.main, opening("sample", "glow", "--n", "0"),
         "argument --n: must be an integer from 1 to 1024, got '0'"),
    Case("zero colourings per photo", colorize.main, opening("eval", "colorize", "--samples", "0"),
         "argument --samples: must be an integer from 1 to 64, got '0'"),
    Case("negative colourings per photo", colorize.main,
         opening("colorize", "colorize", "--input", "photo.jpg", "--samples", "-1"),
         "argument --samples: must be an integer from 1 to 64, got '-1'"),
    Case("more colourings per photo than the limit", colorize.main,
         opening("colorize", "colorize", "--input", "photo.jpg", "--samples", "100"),
         "argument --samples: must be an integer from 1 to 64, got '100'"),
    Case("zero evaluation batch size", colorize.main, opening("eval", "colorize", "--batch-size", "0"),
         "argument --batch-size: must be an integer >= 1, got '0'"),
    Case("interpolation grid written to a text file", glow.main,
         lambda f: opening("interpolate", "glow", "--out", str(f.tmp / "grid.txt"))(f),
         "does not end in an image format"),
    Case("manipulation grid written to a text file", glow.main,
         lambda f: opening("manipulate", "glow", "--attribute", "0", "--out", str(f.tmp / "grid.txt"))(f),
         "does not end in an image format"),
    Case("more interpolation pairs than test images", glow.main, opening("interpolate", "glow", "--pairs", "1000"),
         "--pairs 1000 needs 2000 test images"),
    Case("more images per interpolation than the limit", glow.main,
         opening("interpolate", "glow", "--steps", "100000"),
         "argument --steps: must be an integer from 2 to 64, got '100000'"),
    Case("zero held-out image limit", glow.main, opening("check", "glow", "--limit", "0"),
         "argument --limit: must be an integer >= 1, got '0'"),
    Case("option value not a number", glow.main, opening("sample", "glow", "--n", "ten"),
         "argument --n: must be an integer from 1 to 1024, got 'ten'"),
    Case("NaN sampling temperature", colorize.main,
         opening("colorize", "colorize", "--input", "photo.jpg", "--temperature", "nan"),
         "argument --temperature: must be a finite number >= 0 and <= 10, got 'nan'"),
    Case("infinite sampling temperature", glow.main, opening("sample", "glow", "--temperatures", "0.7", "inf"),
         "argument --temperatures: must be a finite number >= 0 and <= 10, got 'inf'"),
    Case("negative sampling temperature", colorize.main, opening("eval", "colorize", "--temperature", "-1"),
         "argument --temperature: must be a finite number >= 0 and <= 10, got '-1'"),
    Case("zero benchmark steps", glow.main, lambda f: ["bench", "--config", GLOW_TINY, "--steps", "0"],
         "argument --steps: must be an integer >= 1, got '0'"),
    Case("interpolation of one step", glow.main, opening("interpolate", "glow", "--steps", "1"),
         "argument --steps: must be an integer from 2 to 64, got '1'"),
    Case("negative PCA label", mnist.main,
         lambda f: ["pca", "--checkpoint", str(f.tmp / "none.pt"), "--label", "-1"],
         "argument --label: must be an integer >= 0, got '-1'"),
    Case("seed option out of range", glow.main, opening("sample", "glow", "--seed", "-5"),
         "argument --seed: must be an integer from 0 to 9223372036854775807, got '-5'"),
    Case("more samples to draw than the limit", glow.main, opening("sample", "glow", "--n", "100000000"),
         "argument --n: must be an integer from 1 to 1024, got '100000000'"),
    Case("sampling temperature beyond the limit", colorize.main,
         opening("colorize", "colorize", "--input", "photo.jpg", "--temperature", "1e30"),
         "argument --temperature: must be a finite number >= 0 and <= 10, got '1e30'"),
    Case("PCA walk of more steps than the limit", mnist.main,
         lambda f: ["pca", "--checkpoint", str(f.tmp / "none.pt"), "--steps", "100000000"],
         "argument --steps: must be an integer from 1 to 64, got '100000000'"),
    Case("PCA walk that would overflow", mnist.main,
         lambda f: ["pca", "--checkpoint", str(f.tmp / "none.pt"), "--range", "1e308"],
         "argument --range: must be a finite number > 0 and <= 100, got '1e308'"),
    Case("sizes beyond the machine's memory", glow.main,
         lambda f: ["bench", "--config", GLOW_TINY, "--shape", "3", "4096", "4096", "--steps", "1",
                    "--train.batch_size=100000"],
         "out of memory (an allocation of"),
    Case("image sizes beyond any model", glow.main,
         lambda f: ["bench", "--config", GLOW_TINY, "--shape", "3", "1000000", "1000000", "--steps", "1"],
         "impossible model for this data: input_shape must be 1 to 3 sizes from 1 to 4096"),
    Case("required option missing", colorize.main, opening("colorize", "colorize"),
         "the following arguments are required: --input"),
    Case("unavailable device", colorize.main, opening("eval", "colorize", "--device", "cuda:64"),
         "--device 'cuda:64' is not available on this machine"),
    Case("malformed device", glow.main, opening("sample", "glow", "--device", "gpu"),
         "--device must be auto, cpu, cuda or cuda:N, got 'gpu'"),
    # output paths
    Case("output folder of colorize is a file", colorize.main,
         lambda f: ["colorize", "--checkpoint", str(f.colorize_checkpoint), "--input", "photo.jpg", "--out",
                    str(written(f.tmp / "out.png", "a file"))],
         "out.png is a file, not a folder; pass a folder to write into"),
    Case("output file of export is a folder", glow.main,
         lambda f: ["export", "--checkpoint", str(f.glow_checkpoint), "--out", str(f.tmp)],
         "is a folder, not a file; pass the path of the file to write"),
    Case("output file of table is a folder", colorize.main,
         lambda f: ["table", "--checkpoint", str(f.colorize_checkpoint), "--input", "photos", "--out", str(f.tmp)],
         "is a folder, not a file; pass the path of the file to write"),
    Case("output image without an image ending", mnist.main,
         lambda f: ["transfer", "--checkpoint", str(f.mnist_checkpoint), "--out", str(f.tmp / "transfer")],
         "does not end in an image format this figure can be written in"),
    Case("output figure of table in a format it cannot be written in", colorize.main,
         lambda f: ["table", "--checkpoint", str(f.colorize_checkpoint), "--input", "photos", "--out",
                    str(f.tmp / "table.txt")],
         "table.txt does not end in an image format this figure can be written in"),
    Case("classifier cache path is a folder", mnist.main,
         lambda f: ["eval", "--checkpoint", str(copied_run(f, "mnist") / "checkpoint.pt"), "--classifier",
                    str(empty(f.tmp / "cache"))],
         "cache is a folder, not a file; pass the path of the file to write"),
    Case("output folder of colorize is its input folder", colorize.main, colorize_into(lambda photos: photos),
         "is the --input folder: the next run on"),
    Case("output folder of colorize inside its input folder", colorize.main,
         colorize_into(lambda photos: photos / "colorized"), "lies inside the --input folder"),
    Case("run directory inside the training photo folder", colorize.main,
         lambda f: colorize_train("--data", str(photo_folder(f.tmp / "photos")), "--run_dir",
                                  str(f.tmp / "photos" / "run"))(f),
         "lies inside the data.path folder"),
    Case("output file inside a file", glow.main,  # cannot be created, even by root
         lambda f: ["upgrade", "--checkpoint", str(f.glow_checkpoint), "--out", str(f.glow_checkpoint / "up.pt")],
         "checkpoint.pt is a file, not a folder; choose another --out"),
    # checkpoints
    Case("checkpoint missing", colorize.main, eval_checkpoint(lambda f: f.tmp / "none.pt"),
         "does not exist; pass the checkpoint.pt of a run directory"),
    Case("checkpoint truncated", colorize.main, eval_checkpoint(truncated_checkpoint),
         "is corrupt, truncated or not a cinn checkpoint"),
    Case("checkpoint is a folder", glow.main, eval_checkpoint(lambda f: f.glow_checkpoint.parent),
         "is a folder, not a file; pass"),
    Case("checkpoint a plain pickle", glow.main, eval_checkpoint(lambda f: plain_pickle(f.tmp)),
         "is corrupt, truncated or not a cinn checkpoint (UnpicklingError: Unsupported operand"),
    Case("checkpoint a text file", glow.main, eval_checkpoint(lambda f: written(f.tmp / "notes.pt", "hello")),
         "is corrupt, truncated or not a cinn checkpoint (KeyError"),
    Case("checkpoint without its model spec", glow.main, lacking("sample", "model_spec"),
         "lacks its 'model_spec' entry"),
    Case("checkpoint without its config", glow.main, lacking("upgrade", "config", "--out", "{tmp}/up.pt"),
         "lacks its 'config' entry"),
    Case("checkpoint without its task", glow.main, lacking("check", "task"), "does not record its task"),
    Case("checkpoint without its step", glow.main, lacking("export", "step", "--out", "{tmp}/out.pt"),
         "lacks its 'step' entry"),
    Case("resumed checkpoint without its optimiser state", glow.main,
         lambda f: ["train", "--resume", "--run_dir", str(without_entry(f, "optimizer"))],
         "lacks its 'optimizer' entry"),
    Case("checkpoint with weights of another architecture", glow.main, eval_checkpoint(other_architecture),
         "describes a model that cannot be rebuilt (RuntimeError: Error(s) in loading state_dict"),
    Case("checkpoint of another task", colorize.main, eval_checkpoint(lambda f: f.glow_checkpoint),
         "checkpoint of the 'glow' task"),
    Case("checkpoint whose task name is a shell command", colorize.main,
         eval_checkpoint(edited(lambda s: s.update(task="glow; rm -rf ~"))),
         "is a checkpoint of the 'glow; rm -rf ~' task, not 'colorize'; pass a checkpoint of 'colorize'"),
    Case("checkpoint with flipped bytes in its weights", glow.main, eval_checkpoint(flipped_weights),
         "is damaged: its entry"),
    Case("checkpoint whose spec asks for thousands of flow steps", glow.main,
         eval_checkpoint(edited(lambda s: s["model_spec"]["arguments"].update(steps_per_level=5000))),
         "the model would have 10000 flow steps or couplings, more than the 1024 allowed"),
    Case("checkpoint whose spec holds deeply nested lists", glow.main,
         eval_checkpoint(edited(lambda s: s["model_spec"]["arguments"].update(input_shape=nested(40)))),
         "hold more than 256 values or are nested more than 5 deep"),
    Case("checkpoint whose header entries have wrong types", glow.main,
         eval_checkpoint(edited(lambda s: s.update(step="six", conventions={**s["conventions"], "n_bits": 0}))),
         "is malformed: step is 'six', not an integer from 0 up; conventions.n_bits is 0"),
    Case("checkpoint whose text holds deeply nested lists", glow.main,
         eval_checkpoint(edited(lambda s: s["conventions"].update(dataset=nested(40)))),
         "is malformed: conventions.dataset is [[[[...], [...]], [[...], [...]]], [[[...], [...]], [[...], "),
    Case("checkpoint whose conventions disagree with its model", glow.main,
         eval_checkpoint(edited(lambda s: s["conventions"].update(image_shape=[3, 32, 32]))),
         "its conventions give image_shape [3, 32, 32] (the model takes [1, 28, 28])"),
    Case("checkpoint whose config holds a wrong type", glow.main,
         eval_checkpoint(edited(lambda s: s["config"]["train"].update(lr="fast"))),
         "holds a config this task cannot use (train.lr must be a float"),
    Case("checkpoint on a CUDA device that is not there", glow.main,
         lambda f: ["eval", "--checkpoint", str(f.glow_checkpoint), "--device", "cuda:7"],
         "--device 'cuda:7' is not available on this machine"),
    Case("export over an existing file", glow.main,
         lambda f: ["export", "--checkpoint", str(f.glow_checkpoint), "--out", str(written(f.tmp / "notes.txt",
                                                                                             "hello"))],
         "notes.txt already exists; pass --overwrite to replace it or choose another --out"),
    Case("upgrade over another run's checkpoint", glow.main,
         lambda f: ["upgrade", "--checkpoint", str(f.glow_checkpoint), "--out",
                    str(copied_run(f, "mnist") / "checkpoint.pt")],
         "checkpoint.pt already exists; pass --overwrite to replace it"),
    Case("output folder in use by another colorize", colorize.main,
         colorize_into(lambda photos: held(photos.parent / "busy_out")),
         "is in use by another colorize process; wait for it to end or choose another --out"),
    Case("checkpoint crafted to run code", glow.main, eval_checkpoint(lambda f: crafted_pickle(f.tmp)),
         "could run code, so it was not loaded"),
    Case("checkpoint with non-finite weights", glow.main, eval_checkpoint(non_finite_checkpoint),
         "holds non-finite weights"),
    Case("resume of a run whose weights diverged", glow.main,
         lambda f: ["train", "--resume", "--run_dir", str(diverged_run(f))], "holds non-finite weights"),
    Case("resume with a changed config", glow.main,
         lambda f: ["train", "--resume", "--run_dir", str(f.glow_checkpoint.parent), "--train.lr=0.5"],
         "differs from the checkpoint's in train.lr; undo those changes or pass --force"),
    Case("resume with --force and another architecture", glow.main,
         resumed_copy("--force", "--model.hidden_channels=16"), "its weights do not fit the model of this config"),
    Case("resume with --force and another optimiser", glow.main, resumed_copy("--force", "--train.optimizer=adam"),
         "its optimiser state is adamax's, even --force cannot carry it over"),
    Case("classifier cache path holds a model's checkpoint", mnist.main,
         classifier_over_checkpoint,
         "is not a classifier cache but a checkpoint of the 'mnist' task; it was left as it is"),
    Case("classifier cache path holds a text file", mnist.main,
         lambda f: ["eval", "--checkpoint", str(f.mnist_checkpoint), "--classifier",
                    str(written(f.tmp / "notes.txt", "hello"))],
         "notes.txt is not a classifier cache (checkpoint"),
    # run directories
    Case("train into a folder that holds a run", glow.main,
         lambda f: ["train", "--run_dir", str(f.glow_checkpoint.parent)],
         "already holds a run (checkpoint.pt, metrics.csv); continue it with --resume"),
    Case("run directory in use by another train", glow.main,
         lambda f: glow_train("--run_dir", str(in_use(f.tmp / "busy")))(f), "is in use by another train process"),
]


@pytest.fixture(scope="module")
def trained(mnist_data_root, tiny_colorize_run, tiny_glow_run, tiny_mnist_run) -> tuple[Path, Path, Path, Path]:
    """(MNIST-format data root, tiny colourisation, Glow and class-conditional checkpoints)."""
    return (mnist_data_root, tiny_colorize_run / "checkpoint.pt", tiny_glow_run / "checkpoint.pt",
            tiny_mnist_run / "checkpoint.pt")


@pytest.mark.parametrize("case", CASES, ids=lambda case: case.name)
def test_bad_input_gives_one_clear_line_and_an_exit_code(case, trained, tmp_path, capsys):
    fixtures = Fixtures(tmp_path, *trained)
    args = case.args(fixtures)
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_info:
        run_command(case.main, args)
    err = capsys.readouterr().err
    assert exit_info.value.code == case.code
    assert err.startswith("error: ") and err.count("\n") == 1 and "Traceback" not in err, err
    assert case.message in err
    assert not (tmp_path / "code_ran").exists()


IN_SUBPROCESSES = ["infinite weight decay", "more couplings than the limit", "truncated MNIST file",
                   "NaN sampling temperature", "more interpolation pairs than test images",
                   "classifier cache path holds a text file", "checkpoint with flipped bytes in its weights",
                   "output folder in use by another colorize"]
"""One case of each kind (a config value, a bound, damaged data, an option, an option against the data, a file
that must not be overwritten), also run as ``python -m tasks.X`` in a process of its own: the exit code and
the one line on stderr are what the process boundary shows."""


@pytest.mark.parametrize("name", IN_SUBPROCESSES)
def test_bad_input_gives_one_line_and_exit_code_2_from_a_real_process(name, trained, tmp_path):
    case = next(case for case in CASES if case.name == name)
    module = {colorize.main: "tasks.colorize", glow.main: "tasks.glow", mnist.main: "tasks.mnist"}[case.main]
    result = subprocess.run([sys.executable, "-m", module, *case.args(Fixtures(tmp_path, *trained))], cwd=ROOT,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == case.code, result.stderr
    assert result.stderr.startswith("error: ") and result.stderr.count("\n") == 1, result.stderr
    assert case.message in result.stderr


def test_every_case_is_in_the_troubleshooting_table():
    page = (ROOT / "docs" / "TROUBLESHOOTING.md").read_text()
    table = page[page.index("## Mistakes in the input"):]
    for case in CASES:
        assert re.search(rf"\| {re.escape(case.name)} \|.*{re.escape(case.message)}", table), case.name


def test_a_refused_resume_writes_nothing(trained, tmp_path):
    run_dir = copied_run(Fixtures(tmp_path, *trained))
    before = {path.name: path.read_bytes() for path in run_dir.iterdir() if path.is_file()}
    with pytest.raises(SystemExit):
        run_command(glow.main, ["train", "--resume", "--force", "--run_dir", str(run_dir), "--model.n_levels=1"])
    assert {path.name: path.read_bytes() for path in run_dir.iterdir() if path.is_file()} == before


@pytest.mark.parametrize("cache", ["text", "glow checkpoint", "named pipe"])
def test_a_wrong_classifier_cache_is_refused_before_any_work(trained, tmp_path, capsys, cache):
    fixtures = Fixtures(tmp_path, *trained)
    path = {"text": lambda: written(tmp_path / "notes.txt", "hello"), "named pipe": lambda: fifo(tmp_path / "p"),
            "glow checkpoint": lambda: fixtures.glow_checkpoint}[cache]()
    run_dir = copied_run(fixtures, "mnist")
    before = {file: file.read_bytes() for file in run_dir.rglob("*") if file.is_file()}
    with pytest.raises(SystemExit) as exit_info:
        run_command(mnist.main, ["eval", "--checkpoint", str(run_dir / "checkpoint.pt"), "--classifier",
                                 str(path)])
    out, err = capsys.readouterr()
    assert exit_info.value.code == 2 and err.count("\n") == 1 and "is not a classifier cache" in err, err
    assert out == ""  # no bits/dim line: refused before the evaluation, and before any classifier training
    assert {file: file.read_bytes() for file in run_dir.rglob("*") if file.is_file()} == before
    assert path.is_fifo() if cache == "named pipe" else path.read_bytes()


NAN_COMMANDS = {  # every command that opens a model, with what else it requires; {tmp}: the test's folder
    "glow": {"eval": [], "check": [], "sample": ["--out", "{tmp}/s"], "interpolate": [], "upgrade": ["--out",
             "{tmp}/u.pt"], "export": ["--out", "{tmp}/e.pt"], "manipulate": ["--attribute", "0"],
             "serve": ["--port", "0"]},
    "mnist": {"eval": [], "check": [], "sample": ["--out", "{tmp}/s"], "transfer": [], "pca": [], "upgrade":
              ["--out", "{tmp}/u.pt"], "export": ["--out", "{tmp}/e.pt"], "serve": ["--port", "0"]},
    "colorize": {"eval": [], "check": [], "colorize": ["--input", "photo.jpg", "--out", "{tmp}/c"],
                 "table": ["--input", "photos", "--out", "{tmp}/t.png"], "upgrade": ["--out", "{tmp}/u.pt"],
                 "export": ["--out", "{tmp}/e.pt"], "serve": ["--port", "0"]},
}
TASK_MAINS = {"glow": glow, "mnist": mnist, "colorize": colorize}


def commands_opening_a_checkpoint(task) -> set[str]:
    subparsers = next(action for action in task.parser()._actions if action.dest == "command")
    return {name for name, parser in subparsers.choices.items()
            if any("--checkpoint" in action.option_strings for action in parser._actions)}


@pytest.mark.parametrize("task", NAN_COMMANDS)
def test_every_command_that_opens_a_model_is_listed(task):
    tasks = {"glow": glow.GlowTask(), "mnist": mnist.ClassConditionalTask(), "colorize": colorize.ColorizeTask()}
    assert commands_opening_a_checkpoint(tasks[task]) == set(NAN_COMMANDS[task])


@pytest.mark.parametrize("task, command", [(task, command) for task, commands in NAN_COMMANDS.items()
                                           for command in commands])
def test_every_command_refuses_non_finite_weights(trained, tmp_path, capsys, task, command):
    checkpoint = non_finite_checkpoint(Fixtures(tmp_path, *trained), task)
    extra = [arg.format(tmp=tmp_path) for arg in NAN_COMMANDS[task][command]]
    with pytest.raises(SystemExit) as exit_info:
        run_command(TASK_MAINS[task].main, [command, "--checkpoint", str(checkpoint), *extra])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and err.count("\n") == 1 and "holds non-finite weights" in err, err
    assert sorted(path.name for path in tmp_path.iterdir()) == [checkpoint.name]  # nothing written


def test_the_library_loaders_refuse_non_finite_weights(trained, tmp_path):
    fixtures = Fixtures(tmp_path, *trained)
    for loader, checkpoint in ((cinn.load, "glow"), (cinn.load_trained, "mnist"), (load_colorizer, "colorize")):
        with pytest.raises(CheckpointError, match=r"holds non-finite weights .* its training diverged"):
            loader(non_finite_checkpoint(fixtures, checkpoint))


def test_eval_limit_applies_to_every_measure_of_eval(trained, tmp_path, capsys):
    photos = photo_folder(tmp_path / "photos", 2)
    assert colorize.main(["eval", "--checkpoint", str(trained[1]), "--data", str(photos), "--limit", "1"]) == 0
    header, bits, *measures = capsys.readouterr().out.splitlines()
    assert header.endswith("only the first 1 (--limit):") and bits.endswith("(1 image)")
    assert len(measures) == 4 and not any("±" in line for line in measures)  # of that one photo too, not both


def test_a_pca_of_fewer_than_two_test_images_is_refused(trained, tmp_path, monkeypatch, capsys):
    one_image = [(torch.zeros(1, 28, 28, dtype=torch.uint8), torch.tensor(3))]
    monkeypatch.setattr(mnist.ClassConditionalTask, "eval_data", lambda self, config, data: (one_image, "one"))
    with pytest.raises(SystemExit) as exit_info:
        run_command(mnist.main, ["pca", "--checkpoint", str(trained[3]), "--out", str(tmp_path / "pca")])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and "the test split holds 1 image(s) and a PCA needs at least 2" in err, err
    assert not (tmp_path / "pca").exists()


def test_cuda_on_a_machine_without_it_is_refused(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ConfigError, match="--device 'cuda' is not available on this machine"):
        resolve_device("cuda")
    assert resolve_device("auto") == torch.device("cpu")


@pytest.mark.parametrize("damage", [b"step,train_bpd\n2,1.5\nsix,1.0\n\n4,oops,1,2,3,4,5,6,7,8,9\n",
                                    bytes(range(256)) * 4], ids=["rows without a step", "binary"])
def test_a_damaged_metrics_file_is_rewritten_on_resume(trained, tmp_path, capsys, damage):
    run_dir = copied_run(Fixtures(tmp_path, *trained))
    (run_dir / "metrics.csv").write_bytes(damage)
    assert glow.main(["train", "--resume", "--run_dir", str(run_dir), "--train.steps=8"]) == 0
    assert "warning: " in capsys.readouterr().out
    with open(run_dir / "metrics.csv", newline="") as file:
        steps = [int(row["step"]) for row in csv.DictReader(file)]
    assert steps[-1] == 8 and steps == sorted(steps)


# ------------------------------------------------------------------------------------------ during training
def disk_full_on_calls(monkeypatch, failing: set[int]) -> None:
    """torch.save fails with ENOSPC (after writing a few bytes) on the given calls, counted from 1."""
    real_save, calls = torch.save, []

    def save(obj, file, *args, **kwargs):
        calls.append(1)
        if len(calls) in failing:
            file.write(b"partial")
            raise OSError(28, "No space left on device")
        return real_save(obj, file, *args, **kwargs)

    monkeypatch.setattr(torch, "save", save)


def test_disk_full_at_a_periodic_checkpoint_warns_and_training_goes_on(tmp_path, monkeypatch, capsys):
    disk_full_on_calls(monkeypatch, {1})  # the step-2 checkpoint; step 4 (the last) succeeds
    assert colorize.main(["train", "--config", COLORIZE_TINY, "--run_dir", str(tmp_path)]) == 0
    assert "could not write" in capsys.readouterr().out
    assert load_checkpoint(tmp_path / "checkpoint.pt")["step"] == 4
    assert sorted(p.name for p in tmp_path.glob("*.pt*")) == ["checkpoint.pt"]  # no temporary left behind


def test_disk_full_at_the_last_checkpoint_keeps_the_previous_one(tmp_path, monkeypatch, capsys):
    disk_full_on_calls(monkeypatch, {2})
    with pytest.raises(SystemExit) as exit_info:
        run_command(colorize.main, ["train", "--config", COLORIZE_TINY, "--run_dir", str(tmp_path)])
    err = "".join(line for line in capsys.readouterr().err.splitlines(keepends=True)
                  if not line.startswith("colorize: "))  # progress lines, every few seconds on a slow machine
    assert exit_info.value.code == 2 and err.count("\n") == 1
    assert "No space left on device" in err and "free space, then train --resume" in err
    assert load_checkpoint(tmp_path / "checkpoint.pt")["step"] == 2


def test_nan_batches_are_skipped_and_the_run_goes_on(tmp_path, monkeypatch, capsys):
    from cinn.colorization import LabColorization

    real_prepare, calls = LabColorization.prepare, []

    def poisoned(self, images, labels, generator):
        x, c = real_prepare(self, images, labels, generator)
        calls.append(1)
        if len(calls) == 3:  # call 1 is the ActNorm init batch: this is training step 2
            x = x.clone()
            x[0, 0, 0, 0] = float("nan")
        return x, c

    monkeypatch.setattr(LabColorization, "prepare", poisoned)
    assert colorize.main(["train", "--config", COLORIZE_TINY, "--run_dir", str(tmp_path)]) == 0
    assert "step 1: non-finite loss or gradient, step skipped" in capsys.readouterr().out
    state = load_checkpoint(tmp_path / "checkpoint.pt")
    assert state["step"] == 4 and all(torch.isfinite(v).all() for v in state["model"].values()
                                      if v.is_floating_point())


@pytest.mark.parametrize("stop, said", [(signal.SIGINT, "interrupted"), (signal.SIGTERM, "stopped by SIGTERM"),
                                        (signal.SIGHUP, "stopped by SIGHUP")])
def test_ctrl_c_sigterm_and_sighup_write_a_final_checkpoint_and_exit_cleanly(tmp_path, stop, said):
    run_dir = tmp_path / "run"
    process = start_paused(4, "tasks.colorize", [
        "train", "--config", COLORIZE_TINY, "--run_dir", str(run_dir), "--train.steps=100000",
        "--train.checkpoint_every=100000", "--train.eval_every=0", "--train.keep=last"])
    process.send_signal(stop)  # the run goes on when its stdin closes: it finishes step 4, then stops
    out, err = process.communicate(timeout=120)
    assert process.returncode == 0, err
    stopped = int(re.search(rf"{said} at step (\d+); checkpoint written", out + err).group(1))
    assert load_checkpoint(run_dir / "checkpoint.pt")["step"] == stopped == 4


# ------------------------------------------------------------------------------------------ file names
@pytest.mark.parametrize("environment", [{"PYTHONIOENCODING": "ascii"}, {"LC_ALL": "C", "PYTHONUTF8": "0"}],
                         ids=["ascii output", "C locale"])
def test_names_the_terminal_cannot_print_are_escaped(trained, tmp_path, environment):
    photos = tmp_path / os.fsdecode(b"f\xc3\xa9rias_\xff")  # "férias_" and a byte invalid in UTF-8
    photo_folder(photos, 1)
    (photos / os.fsdecode(b"cut_\xfe.jpg")).write_bytes(b"not a photo")
    argv = [sys.executable, "-m", "tasks.colorize", "colorize", "--checkpoint", str(trained[1]), "--samples", "1"]
    env = {**os.environ, **environment}
    good = subprocess.run([*argv, "--input", str(photos / "photo_0.jpg"), "--out", str(tmp_path / "good")],
                          cwd=ROOT, capture_output=True, env=env)
    bad = subprocess.run([*argv, "--input", str(photos), "--out", str(tmp_path / "bad")], cwd=ROOT,
                         capture_output=True, env=env)
    assert good.returncode == 0 and b"Traceback" not in good.stderr, good.stderr
    assert b"rias_\\udcff/photo_0.jpg: " in good.stdout, good.stdout
    assert bad.returncode == 2 and bad.stderr.startswith(b"error: ") and bad.stderr.count(b"\n") == 1, bad.stderr
    assert b"cut_\\udcfe.jpg" in bad.stderr


def test_an_output_in_a_read_only_folder_is_refused_before_anything_is_written(trained, tmp_path, monkeypatch,
                                                                                capsys):
    read_only = tmp_path / "read_only"
    read_only.mkdir(mode=0o555)
    if os.geteuid() == 0:  # root writes whatever the mode says; a read-only mount refuses even root
        real_access = os.access
        monkeypatch.setattr(os, "access", lambda path, mode: Path(path) != read_only and real_access(path, mode))
    with pytest.raises(SystemExit) as exit_info:
        run_command(glow.main, ["sample", "--checkpoint", str(trained[2]), "--out", str(read_only / "samples")])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and err.count("\n") == 1
    assert f"error: --out {read_only / 'samples'} cannot be written: {read_only} is read-only" in err
    assert list(read_only.iterdir()) == []
