"""Checks of what the public model API is given: one :class:`ValueError` or :class:`TypeError` that says what was
expected, raised where the value enters — not a shape error deep inside torch, and never NaN images from a NaN
temperature. Each check reads only shapes, dtypes and Python numbers, so none waits for a device or touches
every element.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor


def require_tensor(value: Any, name: str) -> Tensor:
    """``value`` if it is a :class:`torch.Tensor`, else a :class:`TypeError` (a NumPy array names
    ``torch.from_numpy``).

    Example:
        >>> import numpy as np
        >>> require_tensor(np.zeros(3), "x")
        Traceback (most recent call last):
        TypeError: x must be a torch.Tensor, got a numpy.ndarray; convert it with torch.from_numpy(x)
    """
    if isinstance(value, Tensor):
        return value
    kind = f"{type(value).__module__}.{type(value).__name__}" if type(value).__module__ != "builtins" else (
        type(value).__name__)
    hint = "; convert it with torch.from_numpy(x)" if type(value).__module__ == "numpy" else ""
    raise TypeError(f"{name} must be a torch.Tensor, got a {kind}{hint}")


def require_inputs(x: Any, input_shape: Sequence[int], dtype: torch.dtype | None, name: str = "x", *,
                   any_size: bool = False) -> Tensor:
    """A batch of model inputs: a floating tensor of the model's ``dtype`` (any, for None) and shape
    ``(B, *input_shape)``; with ``any_size`` (a fully convolutional image model, ``(C, H, W)``) also of other
    heights and widths.

    Example:
        >>> require_inputs(torch.zeros(1, 28, 28), (1, 28, 28), torch.float32)
        Traceback (most recent call last):
        ValueError: x must be a batch of shape (B, 1, 28, 28), got (1, 28, 28); add the batch axis: x.unsqueeze(0)
    """
    x = require_tensor(x, name)
    if not x.is_floating_point():
        raise TypeError(f"{name} must hold floats (dequantised values in [0, 1], see cinn.dequantize), got "
                        f"{x.dtype}; for 8-bit images use cinn.dequantize(images)")
    if x.dtype != dtype and dtype in (torch.float32, torch.float64) and x.dtype in (torch.float32, torch.float64):
        raise TypeError(f"{name} is {x.dtype} but the model's weights are {dtype}; convert one of them "
                        f"({name}.to({dtype}) or model.to({x.dtype}))")
    expected = tuple(input_shape)
    if x.dim() != len(expected) + 1 or (x.shape[1] != expected[0] if any_size else tuple(x.shape[1:]) != expected):
        batch = f"(B, {', '.join(map(str, expected))})"
        hint = f"; add the batch axis: {name}.unsqueeze(0)" if tuple(x.shape) == expected else ""
        raise ValueError(f"{name} must be a batch of shape {batch}, got {tuple(x.shape)}{hint}")
    return x


def require_batch(conditions: Sequence[Tensor], batch: int, name: str = "c") -> None:
    """Every condition tensor has one row per input (``batch``)."""
    for condition in conditions:
        if condition.shape[0] != batch:
            raise ValueError(f"{name} has {condition.shape[0]} rows for a batch of {batch}; give one condition "
                             "per input")


def require_count(n: Any, name: str = "n", high: int | None = None, low: int = 1) -> int:
    """A count: an integer from ``low`` (to ``high``).

    Example:
        >>> require_count(-1)
        Traceback (most recent call last):
        ValueError: n must be an integer >= 1, got -1
    """
    if isinstance(n, bool) or not isinstance(n, numbers.Integral) or n < low or (high is not None and n > high):
        allowed = f">= {low}" if high is None else f"from {low} to {high}"
        raise ValueError(f"{name} must be an integer {allowed}, got {n!r}"[:200])
    return int(n)


def require_temperature(temperature: Any, name: str = "temperature") -> float:
    """A sampling temperature: a finite number >= 0.

    Example:
        >>> require_temperature(float("nan"))
        Traceback (most recent call last):
        ValueError: temperature must be a finite number >= 0, got nan
    """
    if isinstance(temperature, Tensor) and temperature.numel() == 1:
        temperature = temperature.item()
    if isinstance(temperature, bool) or not isinstance(temperature, numbers.Real) or not math.isfinite(
            temperature) or temperature < 0:
        raise ValueError(f"{name} must be a finite number >= 0, got {temperature!r}"[:200])
    return float(temperature)


def require_sizes(low: int = 1, **sizes: Any) -> None:
    """Sizes a builder is given (depths, widths): each an integer >= ``low``.

    Example:
        >>> require_sizes(hidden_channels=0, n_levels=2)
        Traceback (most recent call last):
        ValueError: hidden_channels must be an integer >= 1, got 0
    """
    for name, value in sizes.items():
        require_count(value, name, low=low)
