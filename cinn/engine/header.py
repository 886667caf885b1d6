"""The entries of a checkpoint besides its tensors — its *header* — checked once, when the file is opened.

A checkpoint is read with ``torch.load(weights_only=True)``, so it holds only tensors and plain data; but that
data can still be of the wrong type or value (a damaged or hand-made file). :func:`header_problems` lists what
is wrong with each entry, in one phrase each, without formatting more than a bounded part of any value; the
loader turns them into one :class:`~cinn.engine.checkpoint.CheckpointError`.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable, Mapping
from typing import Any

import torch

from cinn.config import shown
from cinn.models.registry import IMAGE_SHAPE, MAX_IMAGE_SIZE, is_image_shape

Check = Callable[[Any], str | None]
"""A check of one value: None when it is fine, else what it should be."""


def _integer(low: int, high: int | None = None) -> Check:
    def check(value: Any) -> str | None:
        fine = isinstance(value, int) and not isinstance(value, bool) and value >= low and (
            high is None or value <= high)
        return None if fine else f"an integer from {low}" + (f" to {high}" if high is not None else " up")

    return check


def _finite(value: Any) -> str | None:
    fine = isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)
    return None if fine else "a finite number"


def _kind(kind: type | tuple[type, ...], what: str, optional: bool = False) -> Check:
    return lambda value: None if isinstance(value, kind) or (optional and value is None) else what


def _image_shape(value: Any) -> str | None:
    return None if is_image_shape(value) else f"a list of {IMAGE_SHAPE}"


def _tensors(optional: bool) -> Check:
    def check(value: Any) -> str | None:
        if optional and value is None:
            return None
        fine = isinstance(value, Mapping) and all(isinstance(key, str) and isinstance(tensor, torch.Tensor)
                                                  for key, tensor in value.items())
        return None if fine else "a mapping of names to tensors" + (" or null" if optional else "")

    return check


def _best(value: Any) -> str | None:
    if value is None:
        return None
    if not isinstance(value, Mapping):
        return "null or a mapping of step, eval_bpd and model"
    problems = [_integer(0)(value.get("step")), _finite(value.get("eval_bpd")),
                _tensors(False)(value.get("model"))]
    return None if not any(problems) else "null or a mapping of step, eval_bpd and model (weights)"


def _model_spec(value: Any) -> str | None:
    fine = (isinstance(value, Mapping) and isinstance(value.get("builder"), str)
            and isinstance(value.get("arguments", {}), Mapping))
    return None if fine else "a mapping of a builder's name and its arguments"


ENTRIES: dict[str, Check] = {
    "format": _kind(str, "a format name"),
    "task": _kind(str, "a task's name"),
    "cinn_version": _kind(str, "a version string"),
    "step": _integer(0),
    "elapsed_seconds": _finite,
    "model_spec": _model_spec,
    "conventions": _kind(Mapping, "a mapping"),
    "config": _kind(Mapping, "a mapping"),
    "model": _tensors(False),
    "ema": _tensors(True),
    "best": _best,
    "layout": _kind(str, "null or a layout name", optional=True),
    "optimizer": _kind(Mapping, "a mapping"),
    "scheduler": _kind(Mapping, "a mapping"),
    "rng": _kind(Mapping, "a mapping"),
}
"""The checks of the header's entries (an entry a file lacks is not checked here: commands that need it say so)."""

CONVENTIONS: dict[str, Check] = {
    "n_bits": _integer(1, 8),
    "n_classes": _integer(0, 100_000),
    "image_shape": _image_shape,
    "shorter_side": _integer(1, MAX_IMAGE_SIZE),
    "ab_downsample": _integer(1, 64),
    "size_multiple": _integer(1, MAX_IMAGE_SIZE),
    "dataset": _kind(str, "a dataset's name or folder"),
    "lab": _kind(Mapping, "a mapping of the Lab normalisation"),
}
"""The checks of the data conventions tasks write (the keys a task does not write are not checked)."""


def header_problems(state: Mapping[str, Any]) -> list[str]:
    """What is wrong with the header of the checkpoint ``state``, one phrase per entry (empty when nothing).

    Example:
        >>> header_problems({"step": -3, "conventions": {"n_bits": "8"}, "task": "glow"})
        ['step is -3, not an integer from 0 up', "conventions.n_bits is '8', not an integer from 1 to 8"]
    """
    problems = [_problem(name, state[name], check) for name, check in ENTRIES.items() if name in state]
    conventions = state.get("conventions")
    if isinstance(conventions, Mapping):
        problems += [_problem(f"conventions.{name}", conventions[name], check)
                     for name, check in CONVENTIONS.items() if name in conventions]
    return [problem for problem in problems if problem is not None]


def _problem(name: str, value: Any, check: Check) -> str | None:
    expected = check(value)
    if expected is None:
        return None
    shown_value = f"a {type(value).__name__}" if isinstance(value, (Mapping, torch.Tensor)) else shown(value)
    return f"{name} is {shown_value}, not {expected}"
