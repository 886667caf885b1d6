"""Small shape helpers shared by the blocks: channel mixing and per-sample log-dets."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor


def spatial_size(shape: Sequence[int]) -> int:
    """Number of positions per channel of a sample shape ``(C, *spatial)``; 1 for flat ``(C,)``."""
    return math.prod(shape[1:])


def channel_param_shape(shape: Sequence[int]) -> tuple[int, ...]:
    """Shape of a per-channel parameter that broadcasts over a batch of ``shape``: ``(1, C, 1, ...)``."""
    return (1, shape[0]) + (1,) * (len(shape) - 1)


def exact_precision(x: Tensor) -> torch.autocast:
    """Context in which ``x``'s device runs no autocast: the invertible path of a flow (1x1 convolutions,
    wavelet filters) stays in ``x.dtype`` under ``--precision bf16``; only the coupling subnets and prior
    networks, whose outputs the blocks cast back, run in bfloat16. A bf16 map between latents would be
    invertible only to 3 significant digits."""
    return torch.autocast(x.device.type, enabled=False)


def mix_channels(x: Tensor, weight: Tensor) -> Tensor:
    """Apply the ``(C_out, C_in)`` matrix ``weight`` to the channel axis of ``x`` at every position, in
    ``x.dtype`` even under autocast.

    ``x`` is ``(B, C)`` or ``(B, C, H, W)``; for images this is a 1x1 convolution.
    """
    with exact_precision(x):
        if x.dim() == 2:
            return F.linear(x, weight)
        if x.dim() == 4:
            return F.conv2d(x, weight[:, :, None, None])
    raise ValueError(f"expected a (B, C) or (B, C, H, W) tensor, got shape {tuple(x.shape)}")


def per_sample(value: Tensor | float, like: Tensor) -> Tensor:
    """Broadcast a scalar log-det to one entry per sample of ``like``: shape ``(B,)``."""
    return torch.as_tensor(value, dtype=like.dtype, device=like.device).expand(like.shape[0])


def sum_per_sample(x: Tensor) -> Tensor:
    """Sum over all but the batch axis: ``(B, ...) → (B,)``. Unlike ``x.flatten(1).sum(1)`` it never copies,
    so a channels_last ``x`` keeps its layout in the backward pass too."""
    return x.sum(dim=tuple(range(1, x.dim())))
