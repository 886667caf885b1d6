"""Shared checks for invertible blocks and models: brute-force Jacobians, perturbation, round trips."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
from torch import Tensor, nn

from cinn.blocks import ActNorm


def perturb_(module: nn.Module, scale: float = 0.2, seed: int = 0) -> nn.Module:
    """Add noise to every parameter and mark ActNorms initialised, so that no block is the identity."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in module.parameters():
            noise = torch.randn(parameter.shape, generator=generator, dtype=torch.float64)
            parameter.add_(scale * noise.to(parameter.dtype))
        for child in module.modules():
            if isinstance(child, ActNorm):
                child.initialized.fill_(True)
    return module


def flatten_all(tensors: Sequence[Tensor]) -> Tensor:
    """Concatenate tensors of batch size 1 into one flat vector."""
    return torch.cat([t.reshape(-1) for t in tensors])


def unflatten(flat: Tensor, shapes: Sequence[Sequence[int]]) -> list[Tensor]:
    """Split a flat vector into tensors of batch size 1 with the given sample shapes."""
    sizes = [math.prod(shape) for shape in shapes]
    return [part.reshape(1, *shape) for part, shape in zip(flat.split(sizes), shapes, strict=True)]


def brute_force_log_det(fn: Callable[[list[Tensor]], Sequence[Tensor]], inputs: Sequence[Tensor]) -> Tensor:
    """``log|det J|`` of ``fn`` at every sample of the batch, from the full autograd Jacobian.

    ``fn`` maps a list of tensors with batch size 1 to a list of tensors; returns shape ``(B,)``.
    """
    shapes = [tuple(t.shape[1:]) for t in inputs]
    values = []
    for b in range(inputs[0].shape[0]):
        point = flatten_all([t[b:b + 1] for t in inputs])
        jacobian = torch.autograd.functional.jacobian(
            lambda flat: flatten_all(fn(unflatten(flat, shapes))), point, vectorize=True)
        values.append(torch.linalg.slogdet(jacobian)[1])
    return torch.stack(values)


def max_abs_difference(first: Sequence[Tensor], second: Sequence[Tensor]) -> float:
    assert len(first) == len(second)
    return max((a - b).abs().max().item() for a, b in zip(first, second, strict=True))
