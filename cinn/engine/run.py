"""A training run's directory and the rules for starting, continuing and replacing one.

A run lives in one folder (``run_dir``): the checkpoint, the resolved ``config.yaml``, ``metrics.csv`` and the
figures. :class:`RunDirectory` guards it — locked while a process trains in it, an existing run continued
(``resume``) or replaced (``overwrite``) but never silently, the run's own files written only once the run has
started — and :func:`resumed_config` / :func:`require_resumable` are the rules for continuing one.
"""

from __future__ import annotations

import fcntl
import os
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import IO, Any, TypeVar

from torch import Tensor, nn

from cinn.config import (
    ConfigError,
    apply_overrides,
    config_differences,
    config_from_dict,
    config_to_dict,
    load_config,
    save_config,
)
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
from cinn.engine.hooks import Hook, TrainingRun
from cinn.engine.metrics import METRICS_NAME

T = TypeVar("T")

RESUMABLE_CHANGES = {"run_dir", "train.steps", "train.max_minutes", "train.log_every", "train.eval_every",
                     "train.eval_images", "train.sample_every", "train.checkpoint_every", "train.num_workers",
                     "train.backprop", "train.retain_freed_memory"}
"""Settings that may change when a run is resumed: where the run lives, how long to train, what to log, how
gradients are computed (backprop by inversion gives the same gradients) and how memory is allocated — not what
the steps compute."""

CONFIG_NAME = "config.yaml"
LOCK_NAME = ".train.lock"
RUN_MARKERS = (CHECKPOINT_NAME, METRICS_NAME)
"""Files that make a folder hold a run, which a new run replaces only when asked to (``overwrite``)."""
RUN_OUTPUTS = (*RUN_MARKERS, CONFIG_NAME, "learning_curve.png", "tensorboard", "samples")
"""The files of a run that ``overwrite`` deletes before the new run writes its own."""


def resumed_config(cls: type[T], config_file: str | Path | None, overrides: Sequence[str], task: str, *,
                   resume: bool, force: bool = False) -> T:
    """The run's config: from ``config_file`` and ``overrides``, or, when resuming, from the checkpoint in its
    ``run_dir`` (with the ``overrides`` applied; a ``config_file`` given replaces it).

    Resuming with a config that differs from the checkpoint's in anything but :data:`RESUMABLE_CHANGES` is a
    :class:`ConfigError` naming the keys, unless ``force``; a changed optimiser is refused even then (its state
    cannot be carried over).
    """
    config = load_config(cls, config_file, overrides)
    if not resume:
        return config
    checkpoint = Path(config.run_dir) / CHECKPOINT_NAME
    state = load_checkpoint(checkpoint)
    require_task(state.get("task"), task, checkpoint)
    require_entries(state, ("config", *TRAINING_ENTRIES), checkpoint)
    saved = config_from_dict(cls, state["config"])
    if config_file is None:
        config = apply_overrides(saved, overrides)
    changed = [key for key in config_differences(config_to_dict(saved), config_to_dict(config))
               if key not in RESUMABLE_CHANGES]
    if changed and not force:
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
    """The shape of every tensor of a ``state_dict`` (nothing for what is not one).

    Example:
        >>> weight_shapes(nn.Linear(3, 2).state_dict())
        {'weight': (2, 3), 'bias': (2,)}
    """
    if not isinstance(weights, dict):
        return {}
    return {name: tuple(value.shape) for name, value in weights.items() if isinstance(value, Tensor)}


def check_batch_size(batch_size: int, train_set_size: int) -> None:
    """A training set smaller than one batch is a one-line :class:`ConfigError`.

    Example:
        >>> check_batch_size(64, 10)
        Traceback (most recent call last):
        cinn.config.ConfigError: train.batch_size is 64 but the training set has only 10 items; use a smaller \
train.batch_size or more data
    """
    if train_set_size < batch_size:
        raise ConfigError(f"train.batch_size is {batch_size} but the training set has only {train_set_size} "
                          "items; use a smaller train.batch_size or more data")


class RunDirectory:
    """The run directory of one training process, a unit: it is locked while the process trains in it
    (``fcntl.flock``, released when the process ends, however it ends), a run it already holds is continued
    (``resume``) or replaced (``overwrite``) but never silently, the run's own files (``config.yaml``, and
    the trainer's ``metrics.csv``) are written only once the run has started, and a run whose writes fail
    before its first checkpoint (a full disk, say) takes them away again: no half run is left to be resumed.

    Use it as a context manager around the whole of a training; only the main process (``is_main``) touches
    the folder.

    Example:
        >>> import tempfile
        >>> from types import SimpleNamespace
        >>> with RunDirectory(SimpleNamespace(run_dir=tempfile.mkdtemp()), resume=False, overwrite=False) as run:
        ...     (run.create() / LOCK_NAME).exists()
        True
    """

    def __init__(self, config: Any, resume: bool, overwrite: bool, is_main: bool = True):
        self.path = Path(config.run_dir)
        self.resume, self.overwrite, self.is_main = resume, overwrite, is_main
        self._lock: IO[str] | None = None
        self._started = False

    def __enter__(self) -> RunDirectory:
        """Refuse an existing run without ``resume``/``overwrite`` and lock an existing folder, before anything
        is read or written."""
        if self.is_main and self.path.is_dir():
            self._refuse_unannounced_replacement()
            self._acquire_lock()
        return self

    def __exit__(self, error_type: type[BaseException] | None, *exc_info: object) -> None:
        failed_to_write = error_type is not None and issubclass(error_type, (OSError, CheckpointError))
        if failed_to_write and self._started and not (self.path / CHECKPOINT_NAME).exists():
            self._remove_old_run()  # storage refused the run before its first checkpoint: nothing to resume
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
        (``overwrite``) and write the resolved ``config.yaml``."""
        if not self.is_main:
            return
        self._started = True
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
            self._lock = lock_folder(self.path / LOCK_NAME, f"run directory {self.path}", "train",
                                     "choose another --run_dir")
        except OSError as error:
            raise self._unwritable(error) from None

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


def lock_folder(lock_file: Path, what: str, command: str, otherwise: str) -> IO[str]:
    """Take the lock ``lock_file`` (``fcntl.flock``, released when the returned file is closed or the process ends,
    however it ends) and write this process's id into it; when another process holds it, a one-line
    :class:`ConfigError`: ``what`` is in use by another ``command`` process (its pid), wait or ``otherwise``.

    Example:
        >>> import tempfile
        >>> lock = lock_folder(Path(tempfile.mkdtemp()) / ".lock", "out", "colorize", "choose another --out")
        >>> lock_folder(Path(lock.name), "out", "colorize", "choose another --out")  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        cinn.config.ConfigError: out is in use by another colorize process (pid ...); wait for it to end or ...
        >>> lock.close()
    """
    lock = open(lock_file, "a+")  # noqa: SIM115 (held until the caller closes it)
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        lock.seek(0)
        holder = lock.read().strip()[:20] or "?"
        lock.close()
        raise ConfigError(f"{what} is in use by another {command} process (pid {holder}); wait for it to end or "
                          f"{otherwise}") from None
    lock.truncate(0)
    lock.write(f"{os.getpid()}\n")
    lock.flush()
    return lock


class RunStart(Hook):
    """Calls :meth:`RunDirectory.start` once the trainer has started, before the first step."""

    def __init__(self, run_dir: RunDirectory, config: Any):
        self.run_dir, self.config = run_dir, config

    def on_start(self, run: TrainingRun) -> None:
        self.run_dir.start(self.config)
