"""Command-line plumbing of the task kernel (:mod:`cinn.task`): one-line user errors, run configs and
their resume rules, the run directory, the invertibility check's verdict."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any, TypeVar

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
from cinn.engine.checkpoint import CHECKPOINT_NAME, CheckpointError, load_checkpoint
from cinn.engine.trainer import NonFiniteTrainingError
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


class InvertibilityError(RuntimeError):
    """A trained model failed ``check``: it no longer inverts its own output within tolerance."""


def run_command(main: Callable[[Sequence[str] | None], int | None], argv: Sequence[str] | None = None) -> None:
    """Run a task's ``main`` and turn user errors into one line on stderr and exit code 2 (a model
    that fails ``check``: exit code 1)."""
    try:
        sys.exit(main(argv) or 0)
    except USER_ERRORS as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(2)
    except InvertibilityError as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(1)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(130)


def add_train_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", type=Path, help="YAML config (see configs/); defaults apply without one")
    parser.add_argument("--resume", action="store_true",
                        help="continue the run in run_dir from its checkpoint.pt, exactly where it stopped")
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
    if state.get("task") != task:
        raise CheckpointError(f"{checkpoint} is a checkpoint of the '{state.get('task')}' task, not '{task}'")
    saved = config_from_dict(cls, state["config"])
    if args.config is None:
        config = apply_overrides(saved, overrides)
    changed = [key for key in config_differences(config_to_dict(saved), config_to_dict(config))
               if key not in RESUMABLE_CHANGES]
    if changed and not args.force:
        raise ConfigError(f"cannot resume {checkpoint}: the config differs from the checkpoint's in "
                          f"{', '.join(changed)}; undo those changes or pass --force")
    return config


def start_run_dir(config: Any, is_main: bool = True) -> Path:
    """Create the run directory ``config.run_dir`` and write the resolved ``config.yaml`` into it (on the
    main process); a folder that cannot be created or written is a one-line :class:`ConfigError`."""
    run_dir = Path(config.run_dir)
    if is_main:
        try:
            run_dir.mkdir(parents=True, exist_ok=True)
            save_config(config, run_dir / "config.yaml")
        except OSError as error:
            raise ConfigError(f"run directory {run_dir} cannot be written ({error.strerror or error}); choose "
                              "another --run_dir") from None
    return run_dir


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
