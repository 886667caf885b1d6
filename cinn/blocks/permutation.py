"""Fixed (non-learned) channel mixing: random orthogonal matrices and channel permutations."""

from __future__ import annotations

from typing import Literal

import torch
from FrEIA.modules import InvertibleModule
from torch import Tensor

from cinn.blocks._shapes import mix_channels, per_sample
from cinn.blocks.invconv import random_rotation


class OrthogonalPermutation(InvertibleModule):
    r"""Fixed random orthogonal channel mixing ``y = Q x`` (a 1x1 convolution for images).

    ``Q`` is drawn from ``torch.Generator().manual_seed(seed)`` — global RNGs are neither used
    nor reseeded — and stored as a float64 buffer, so it survives save/load and keeps the exact
    inverse ``Qᵀ`` in float64. ``log_det = 0`` (``|det Q| = 1``), shape ``(B,)``.

    Shapes: ``(B, C)`` or ``(B, C, H, W)`` in and out.

    Example:
        >>> perm = OrthogonalPermutation([(8, 4, 4)], seed=3)
        >>> (y,), log_det = perm([torch.randn(2, 8, 4, 4)])
    """

    def __init__(self, dims_in: list[tuple[int, ...]], dims_c: list[tuple[int, ...]] | None = None,
                 seed: int = 0):
        super().__init__(dims_in, dims_c)
        generator = torch.Generator().manual_seed(seed)
        self.register_buffer("weight", random_rotation(dims_in[0][0], generator))

    def forward(self, x_or_z: list[Tensor], c: list[Tensor] | None = None, rev: bool = False,
                jac: bool = True) -> tuple[tuple[Tensor], Tensor]:
        x = x_or_z[0]
        weight = self.weight.to(x.dtype)
        return (mix_channels(x, weight.T if rev else weight),), per_sample(0.0, x)

    def output_dims(self, input_dims: list[tuple[int, ...]]) -> list[tuple[int, ...]]:
        return input_dims


class ChannelPermutation(InvertibleModule):
    r"""Fixed channel permutation: ``"reverse"`` the channel order (Glow's reverse) or a seeded
    random ``"shuffle"``. ``log_det = 0``, shape ``(B,)``. The permutation is a buffer.

    Example:
        >>> (y,), _ = ChannelPermutation([(4, 2, 2)], kind="shuffle", seed=1)([torch.randn(1, 4, 2, 2)])
    """

    def __init__(self, dims_in: list[tuple[int, ...]], dims_c: list[tuple[int, ...]] | None = None,
                 kind: Literal["reverse", "shuffle"] = "reverse", seed: int = 0):
        super().__init__(dims_in, dims_c)
        channels = dims_in[0][0]
        if kind == "reverse":
            order = torch.arange(channels - 1, -1, -1)
        elif kind == "shuffle":
            order = torch.randperm(channels, generator=torch.Generator().manual_seed(seed))
        else:
            raise ValueError(f"unknown permutation kind {kind!r}; use 'reverse' or 'shuffle'")
        self.register_buffer("order", order)
        self.register_buffer("inverse_order", torch.argsort(order))

    def forward(self, x_or_z: list[Tensor], c: list[Tensor] | None = None, rev: bool = False,
                jac: bool = True) -> tuple[tuple[Tensor], Tensor]:
        x = x_or_z[0]
        return (x[:, self.inverse_order if rev else self.order],), per_sample(0.0, x)

    def output_dims(self, input_dims: list[tuple[int, ...]]) -> list[tuple[int, ...]]:
        return input_dims
