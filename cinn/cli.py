"""Command-line plumbing of the task kernel (:mod:`cinn.task`): one-line user errors and exit codes, argument
types, the training options, and checks of the paths a command will write before it does any work."""

from __future__ import annotations

import argparse
import errno
import fcntl
import math
import os
import re
import sys
from collections.abc import Callable, Collection, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import NoReturn

import torch

from cinn.check import InvertibilityError
from cinn.config import ConfigError
from cinn.data import DataError
from cinn.engine.checkpoint import CheckpointError
from cinn.engine.trainer import NonFiniteTrainingError

USER_ERRORS = (ConfigError, DataError, CheckpointError, NonFiniteTrainingError, FileNotFoundError,
               PermissionError)

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
    except OSError as error:
        if error.errno not in STORAGE_ERRORS:
            raise
        print(f"error: {storage_message(error)}", file=sys.stderr)
        sys.exit(2)
    except (MemoryError, RuntimeError) as error:
        if not is_out_of_memory(error):
            raise
        print(f"error: {out_of_memory_message(error)}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(130)


STORAGE_ERRORS = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS, errno.EIO}
"""The errors of a write the storage refused (full, over quota or a file-size limit, read-only, failing): the
user's to fix, so one line rather than a traceback."""


def storage_message(error: OSError) -> str:
    """The one line of a write the storage refused: which file, why, and what to do.

    Example:
        >>> storage_message(OSError(28, "No space left on device", "samples.png"))[:65]
        'could not write samples.png (No space left on device): free space'
    """
    where = f" {error.filename}" if error.filename else " a file"
    return (f"could not write{where} ({error.strerror or error}): free space or write elsewhere, then run the "
            "command again")


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


def writable_file(path: Path, option: str) -> Path:
    """``path``, the file an ``option`` writes: a folder there, or a place a file cannot be created in, is a
    one-line :class:`ConfigError` naming the option, before anything is written."""
    if path.is_dir():
        raise ConfigError(f"{option} {path} is a folder, not a file; pass the path of the file to write")
    require_creatable(path.parent, path, option)
    return path


def refuse_to_replace(path: Path, overwrite: bool, option: str = "--out") -> None:
    """A file at ``path`` (what ``option`` writes) is a one-line :class:`ConfigError` unless ``overwrite``: another
    run's checkpoint or any other file is never replaced without being asked to."""
    if path.exists() and not overwrite:
        raise ConfigError(f"{option} {path} already exists; pass --overwrite to replace it or choose another "
                          f"{option}")


@contextmanager
def writing_alone(folder: Path, option: str, command: str) -> Iterator[None]:
    """Hold an exclusive lock on the existing ``folder`` (what ``option`` writes into) while the block runs, so two
    ``command`` processes never interleave their outputs there (nor both pass the check that none exist yet); one
    started while another holds it is a one-line :class:`ConfigError`. The lock is the folder's own
    (``fcntl.flock``), so nothing is left in it, and it is released when the process ends, however it ends.

    Example:
        >>> import tempfile
        >>> out = Path(tempfile.mkdtemp())
        >>> with writing_alone(out, "--out", "colorize"), writing_alone(out, "--out", "colorize"):
        ...     pass  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        cinn.config.ConfigError: --out ... is in use by another colorize process; wait for it to end or choose ...
    """
    handle = os.open(folder, os.O_RDONLY)
    try:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise ConfigError(f"{option} {folder} is in use by another {command} process; wait for it to end or "
                              f"choose another {option}") from None
        yield
    finally:
        os.close(handle)


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
