"""Latent-space tools: interpolation between encoded inputs."""

from __future__ import annotations

import torch
from torch import Tensor


def interpolate_latents(start: list[Tensor], end: list[Tensor], steps: int) -> list[Tensor]:
    """Linear paths between two multi-scale latents (each tensor batch 1) in ``steps`` points, ends included.

    Returns one tensor per scale with batch ``steps``: row ``i`` is ``(1 − t_i)·start + t_i·end``
    with ``t_i = i / (steps − 1)``.

    Example:
        >>> path = interpolate_latents(model.encode(x[:1]), model.encode(x[1:2]), steps=8)
        >>> frames = model.decode(path)
    """
    if steps < 2:
        raise ValueError(f"an interpolation needs at least 2 steps, got {steps}")
    weights = torch.linspace(0, 1, steps, dtype=start[0].dtype, device=start[0].device)
    return [torch.lerp(a.expand(steps, *a.shape[1:]), b.expand(steps, *b.shape[1:]),
                       weights.view(-1, *([1] * (a.dim() - 1))))
            for a, b in zip(start, end, strict=True)]
