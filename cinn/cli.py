"""Command-line plumbing of the task kernel (:mod:`cinn.task`): one-line user errors, run configs and
their resume rules, the run directory, the invertibility check's verdict."""

from __future__ import annotations

import argparse
import fcntl
import math
import os
import re
import shutil
import sys
from collections.abc import Callable, Collection, Iterable, Sequence
from pathlib import Path
from typing import IO, Any, NoReturn, TypeVar

import torch
from torch import Tensor, nn

from cinn.check import check_invertibility
from cinn.config import (
    ConfigError,
    apply_overrides,
    config_differences,
    config_from_dict,
    config_to_dict,
    load_config,
    save_config,
)
from cinn.data import DataError
from cinn.engine.checkpoint import (
    CHECKPOINT_NAME,
    TRAINING_ENTRIES,
    CheckpointError,
    load_checkpoint,
    remove_interrupted_writes,
    require_entries,
    require_finite_weights,
    require_task,
    trained_weights,
)
from cinn.engine.hooks import METRICS_NAME, Hook
from cinn.engine.trainer import NonFiniteTrainingError, Trainer
from cinn.models.flow import Condition, Flow

T = TypeVar("T")
M = TypeVar("M", bound=nn.Module)

USER_ERRORS = (ConfigError, DataError, CheckpointError, NonFiniteTrainingError, FileNotFoundError,
               PermissionError)

# Settings that may change when a run is resumed: where the run lives, how long to train, what to log and how
# gradients are computed (backprop by inversion gives the same gradients) and how memory is allocated, not what the
# steps compute.
RESUMABLE_CHANGES = {"run_dir", "train.steps", "train.max_minutes", "train.log_every", "train.eval_every",
                     "train.eval_images", "train.sample_every", "train.checkpoint_every", "train.num_workers",
                     "train.backprop", "train.retain_freed_memory"}

CONFIG_NAME = "config.yaml"
LOCK_NAME = ".train.lock"
RUN_MARKERS = (CHECKPOINT_NAME, METRICS_NAME)
"""Files that make a folder hold a run, which a new ``train`` replaces only when given ``--overwrite``."""
RUN_OUTPUTS = (*RUN_MARKERS, CONFIG_NAME, "learning_curve.png", "tensorboard", "samples")
"""The files of a run that ``--overwrite`` deletes before the new run writes its own."""


class InvertibilityError(RuntimeError):
    """A trained model failed ``check``: it no longer inverts its own output within tolerance."""


def run_command(main: Callable[[Sequence[str] | None], int | None], argv: Sequence[str] | None = None) -> None:
    """Run a task's ``main`` and turn user errors into one line on stderr and exit code 2 (a model
    that fails ``check``: exit code 1)."""
    print_unprintable_escaped()
    try:
        sys.exit(main(argv) or 0)
    except USER_ERRORS as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(2)
    except InvertibilityError as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(1)
    except (MemoryError, RuntimeError) as error:
        if not is_out_of_memory(error):
            raise
        print(f"error: {out_of_memory_message(error)}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(130)


def is_out_of_memory(error: BaseException) -> bool:
    """Whether ``error`` is an allocation that failed: Python's :class:`MemoryError`, CUDA's
    :class:`torch.OutOfMemoryError`, or the CPU allocator's ``RuntimeError`` ("can't allocate memory")."""
    return (isinstance(error, (MemoryError, torch.OutOfMemoryError))
            or "can't allocate memory" in str(error) or "out of memory" in str(error).lower())


def out_of_memory_message(error: BaseException) -> str:
    """The one line of a failed allocation: how much was asked for, when the error says, and what to do.

    Example:
        >>> out_of_memory_message(RuntimeError("[enforce fail] DefaultCPUAllocator: can't allocate memory: you "
        ...                                    "tried to allocate 60000000000 bytes. Error code 12"))[:50]
        'out of memory (an allocation of 55.9 GiB failed): '
    """
    asked = re.search(r"allocate (\d+) bytes", str(error))
    cuda = re.search(r"[Tt]ried to allocate ([\d.]+ [KMGT]iB)", str(error))
    size = f"{int(asked.group(1)) / 2**30:.1f} GiB" if asked else cuda.group(1) if cuda else None
    detail = f" (an allocation of {size} failed)" if size else ""
    return (f"out of memory{detail}: the sizes asked for need more memory than this machine has; use smaller "
            "ones (a smaller batch, fewer samples, smaller images) or a machine with more memory")


def print_unprintable_escaped() -> None:
    """Characters stdout and stderr cannot encode (a file name with bytes invalid in UTF-8, or any non-ASCII
    name under ``PYTHONIOENCODING=ascii``) are printed as backslash escapes rather than raising
    :class:`UnicodeEncodeError`."""
    for stream in (sys.stdout, sys.stderr):
        if hasattr(stream, "reconfigure"):
            stream.reconfigure(errors="backslashreplace")


class OneLineArgumentParser(argparse.ArgumentParser):
    """An argument parser whose usage errors (a missing, unknown or out-of-range option) are one line on
    stderr and exit code 2, like every other user error; subcommand parsers inherit the class."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"error: {self.prog}: {message}; {self.prog} --help lists the options\n")


def int_in_range(low: int, high: int | None = None) -> Callable[[str], int]:
    """An argparse ``type`` for integers from ``low`` to ``high`` (no upper bound when None)."""
    allowed = f">= {low}" if high is None else f"from {low} to {high}"

    def in_range(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = None
        if value is None or value < low or (high is not None and value > high):
            raise argparse.ArgumentTypeError(f"must be an integer {allowed}, got {text!r}")
        return value

    return in_range


positive_int = int_in_range(1)


def non_negative_float(text: str) -> float:
    """An argparse ``type`` for finite numbers >= 0 (NaN and inf refused)."""
    return _finite_float(text, lambda value: value >= 0, "a finite number >= 0")


def positive_float(text: str) -> float:
    """An argparse ``type`` for finite numbers > 0 (NaN and inf refused)."""
    return _finite_float(text, lambda value: value > 0, "a finite number > 0")


MAX_TEMPERATURE = 10.0
"""The highest sampling temperature an option accepts: beyond a few, samples are noise, and a value like 1e30
(a typo) overflows the latents into NaN images that would be written without a word."""


def float_in_range(low: float, high: float, *, above: bool = False) -> Callable[[str], float]:
    """An argparse ``type`` for finite numbers from ``low`` (excluded when ``above``) to ``high``."""
    expected = f"a finite number {'>' if above else '>='} {low:g} and <= {high:g}"

    def accepts(value: float) -> bool:
        return (value > low if above else value >= low) and value <= high

    return lambda text: _finite_float(text, accepts, expected)


temperature = float_in_range(0.0, MAX_TEMPERATURE)
"""An argparse ``type`` for sampling temperatures: finite, from 0 to :data:`MAX_TEMPERATURE`."""


def _finite_float(text: str, accepts: Callable[[float], bool], expected: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or not accepts(value):
        raise argparse.ArgumentTypeError(f"must be {expected}, got {text!r}")
    return value


def add_train_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", type=Path, help="YAML config (see configs/); defaults apply without one")
    start = parser.add_mutually_exclusive_group()
    start.add_argument("--resume", action="store_true",
                       help="continue the run in run_dir from its checkpoint.pt, exactly where it stopped")
    start.add_argument("--overwrite", action="store_true",
                       help="replace the run that run_dir holds (without it, train refuses to start there)")
    parser.add_argument("--force", action="store_true",
                        help="with --resume: accept config changes that alter the training computation")


def train_config(cls: type[T], args: argparse.Namespace, overrides: Sequence[str], task: str) -> T:
    """The run's config: from ``--config`` and overrides, or, with ``--resume``, from the checkpoint.

    Resuming with a config that differs from the checkpoint's in anything but :data:`RESUMABLE_CHANGES`
    is refused (naming the keys) unless ``--force`` is given.
    """
    config = load_config(cls, args.config, overrides)
    if not args.resume:
        return config
    checkpoint = Path(config.run_dir) / CHECKPOINT_NAME
    state = load_checkpoint(checkpoint)
    require_task(state.get("task"), task, checkpoint)
    require_entries(state, ("config", *TRAINING_ENTRIES), checkpoint)
    saved = config_from_dict(cls, state["config"])
    if args.config is None:
        config = apply_overrides(saved, overrides)
    changed = [key for key in config_differences(config_to_dict(saved), config_to_dict(config))
               if key not in RESUMABLE_CHANGES]
    if changed and not args.force:
        raise ConfigError(f"cannot resume {checkpoint}: the config differs from the checkpoint's in "
                          f"{', '.join(changed)}; undo those changes or pass --force")
    if "train.optimizer" in changed:
        raise ConfigError(f"cannot resume {checkpoint} with train.optimizer={config.train.optimizer}: its "
                          f"optimiser state is {saved.train.optimizer}'s, even --force cannot carry it over; keep "
                          f"train.optimizer={saved.train.optimizer}, or start a new run (--overwrite or another "
                          "--run_dir)")
    return config


def require_resumable(model: nn.Module, run_dir: str | Path) -> None:
    """The weights of the checkpoint in ``run_dir`` must fit ``model``, the model the config describes (same
    tensors, same shapes), and be finite; a config changed (with ``--force``) to another architecture, or a run
    that diverged, is a one-line error, before anything is written."""
    checkpoint = Path(run_dir) / CHECKPOINT_NAME
    state = load_checkpoint(checkpoint)
    found = weight_shapes(state["model"])
    expected = weight_shapes(model.state_dict())
    differing = sorted(name for name in expected.keys() | found.keys()
                       if expected.get(name) != found.get(name))
    if differing:
        first = differing[0]
        raise ConfigError(f"cannot resume {checkpoint}: its weights do not fit the model of this config "
                          f"({len(differing)} tensor(s) differ, first {first}: {found.get(first, 'absent')} in "
                          f"the checkpoint, {expected.get(first, 'absent')} here); undo the model changes, or "
                          "start a new run (--overwrite or another --run_dir)")
    for weights in (state["model"], trained_weights(state)):  # a diverged run: its steps would all be skipped
        require_finite_weights(weights, checkpoint)


def weight_shapes(weights: Any) -> dict[str, tuple[int, ...]]:
    """The shape of every tensor of a ``state_dict`` (nothing for what is not one)."""
    if not isinstance(weights, dict):
        return {}
    return {name: tuple(value.shape) for name, value in weights.items() if isinstance(value, Tensor)}


class RunDirectory:
    """The run directory of one ``train`` process, a unit: it is locked while the process trains in it
    (``fcntl.flock``, released when the process ends, however it ends), a run it already holds is continued
    (``--resume``) or replaced (``--overwrite``) but never silently, and the run's own files
    (``config.yaml``, and the trainer's ``metrics.csv``) are written only once the run has started.

    Use it as a context manager around the whole of ``train``; only the main process (``is_main``) touches
    the folder.
    """

    def __init__(self, config: Any, resume: bool, overwrite: bool, is_main: bool = True):
        self.path = Path(config.run_dir)
        self.resume, self.overwrite, self.is_main = resume, overwrite, is_main
        self._lock: IO[str] | None = None

    def __enter__(self) -> RunDirectory:
        """Refuse an existing run without ``--resume``/``--overwrite`` and lock an existing folder, before
        anything is read or written."""
        if self.is_main and self.path.is_dir():
            self._refuse_unannounced_replacement()
            self._acquire_lock()
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self._lock is not None:
            self._lock.close()  # releases the flock
            self._lock = None

    def create(self) -> Path:
        """Create the folder (once config and data are read), lock it and remove the temporary files of
        checkpoint writes an earlier process was killed in; a folder that cannot be created or written is a
        one-line :class:`ConfigError`."""
        if self.is_main:
            try:
                self.path.mkdir(parents=True, exist_ok=True)
                self._acquire_lock()
                remove_interrupted_writes(self.path / CHECKPOINT_NAME)
            except OSError as error:
                raise self._unwritable(error) from None
        return self.path

    def start(self, config: Any) -> None:
        """The run has started (data, model and first batch ready): delete the replaced run's files
        (``--overwrite``) and write the resolved ``config.yaml``."""
        if not self.is_main:
            return
        try:
            if self.overwrite:
                self._remove_old_run()
            save_config(config, self.path / CONFIG_NAME)
        except OSError as error:
            raise self._unwritable(error) from None

    def hook(self, config: Any) -> Hook:
        """The trainer hook that calls :meth:`start` before the first step (put it first)."""
        return RunStart(self, config)

    def _refuse_unannounced_replacement(self) -> None:
        held = [name for name in RUN_MARKERS if (self.path / name).exists()]
        if held and not (self.resume or self.overwrite):
            raise ConfigError(f"run directory {self.path} already holds a run ({', '.join(held)}); continue it "
                              "with --resume, train into a new --run_dir, or replace it with --overwrite")

    def _acquire_lock(self) -> None:
        if self._lock is not None:
            return
        try:
            lock = open(self.path / LOCK_NAME, "a+")  # noqa: SIM115 (held until __exit__)
        except OSError as error:
            raise self._unwritable(error) from None
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            lock.seek(0)
            holder = lock.read().strip() or "?"
            lock.close()
            raise ConfigError(f"run directory {self.path} is in use by another train process (pid {holder}); "
                              "wait for it to end or choose another --run_dir") from None
        lock.truncate(0)
        lock.write(f"{os.getpid()}\n")
        lock.flush()
        self._lock = lock

    def _remove_old_run(self) -> None:
        for name in RUN_OUTPUTS:
            old = self.path / name
            if old.is_dir():
                shutil.rmtree(old)
            else:
                old.unlink(missing_ok=True)

    def _unwritable(self, error: OSError) -> ConfigError:
        return ConfigError(f"run directory {self.path} cannot be written ({error.strerror or error}); choose "
                           "another --run_dir")


class RunStart(Hook):
    """Calls :meth:`RunDirectory.start` once the trainer has started, before the first step."""

    def __init__(self, run_dir: RunDirectory, config: Any):
        self.run_dir, self.config = run_dir, config

    def on_start(self, trainer: Trainer) -> None:
        self.run_dir.start(self.config)


def writable_file(path: Path, option: str) -> Path:
    """``path``, the file an ``option`` writes: a folder there, or a place a file cannot be created in, is a
    one-line :class:`ConfigError` naming the option, before anything is written."""
    if path.is_dir():
        raise ConfigError(f"{option} {path} is a folder, not a file; pass the path of the file to write")
    require_creatable(path.parent, path, option)
    return path


def writable_image(path: Path, option: str, formats: Collection[str]) -> Path:
    """``path``, the image file an ``option`` writes (:func:`writable_file`), whose ending must be one of the
    image ``formats`` (``"png"``, ...) its writer knows; else a one-line :class:`ConfigError`, before any work."""
    writable_file(path, option)
    if path.suffix.lower().removeprefix(".") not in formats:
        raise ConfigError(f"{option} {path} does not end in an image format this figure can be written in "
                          "(such as .png, .jpg, .tif); end it in .png")
    return path


def pillow_formats() -> set[str]:
    """The file endings (``"png"``, ``"jpg"``, ...) Pillow writes, what :func:`cinn.viz.save_grid` writes with."""
    from PIL import Image

    Image.init()
    return {ending.removeprefix(".") for ending, name in Image.registered_extensions().items()
            if name in Image.SAVE}


def matplotlib_formats() -> set[str]:
    """The file endings matplotlib writes figures in, what :func:`cinn.viz.save_image_table` writes with."""
    from matplotlib.backend_bases import FigureCanvasBase

    return set(FigureCanvasBase.get_supported_filetypes())


def writable_folder(path: Path, option: str) -> Path:
    """``path``, the folder an ``option`` writes into: a file there, or a place a folder cannot be created in, is
    a one-line :class:`ConfigError` naming the option, before anything is written."""
    if path.exists() and not path.is_dir():
        raise ConfigError(f"{option} {path} is a file, not a folder; pass a folder to write into")
    require_creatable(path, path, option)
    return path


def refuse_output_among_inputs(out: Path, folder: Path, out_option: str, folder_option: str) -> None:
    """``out``, what ``out_option`` writes (a file or a folder), that is the input folder ``folder`` of
    ``folder_option`` or lies below it is a one-line :class:`ConfigError`: input folders are read with all
    their sub-folders, so the next run on ``folder`` would take what this one writes for input."""
    inside, folder_path = out.resolve(), folder.resolve()
    if inside != folder_path and folder_path not in inside.parents:
        return
    where = (f"is the {folder_option} folder" if inside == folder_path
             else f"lies inside the {folder_option} folder {folder}")
    raise ConfigError(f"{out_option} {out} {where}: the next run on {folder} would read what is written there as "
                      f"input; choose {out_option} outside {folder}")


def require_creatable(folder: Path, target: Path, option: str) -> None:
    """``folder`` (the place ``target`` of ``option`` goes) exists and is writable, or can be created: its nearest
    existing ancestor is a writable folder."""
    existing = next(parent for parent in (folder, *folder.parents) if parent.exists() or parent == parent.parent)
    if not existing.is_dir():
        raise ConfigError(f"{option} {target} cannot be created: {existing} is a file, not a folder; choose "
                          f"another {option}")
    if not os.access(existing, os.W_OK):
        raise ConfigError(f"{option} {target} cannot be written: {existing} is read-only; choose another {option}")


def check_batch_size(batch_size: int, train_set_size: int) -> None:
    """A training set smaller than one batch is a one-line :class:`ConfigError`."""
    if train_set_size < batch_size:
        raise ConfigError(f"train.batch_size is {batch_size} but the training set has only {train_set_size} "
                          "items; use a smaller train.batch_size or more data")


def check_trained(model: Flow, batches: Iterable[tuple[Tensor, Condition]], checkpoint: Path) -> None:
    """Print :func:`~cinn.check.check_invertibility` of ``model`` on ``batches`` and raise
    :class:`InvertibilityError` when its reconstruction error exceeds the tolerance."""
    report = check_invertibility(model, batches)
    for line in report.lines():
        print(line)
    if not report.passed:
        raise InvertibilityError(f"{checkpoint} failed the invertibility check: the reconstruction error "
                                 f"{report.max_error:.3g} exceeds {report.tolerance:g}; the model is numerically "
                                 "unstable (look at the smallest |s| above, lower the learning rate or clamp "
                                 "harder, and retrain or go back to an earlier checkpoint)")
    print(f"check passed: {checkpoint} inverts its own output within {report.tolerance:g}")
