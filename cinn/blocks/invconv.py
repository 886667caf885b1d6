"""Invertible 1x1 convolutions (Glow): a learned ``C x C`` matrix applied at every position."""

from __future__ import annotations

import torch
from FrEIA.modules import InvertibleModule
from torch import Tensor, nn

from cinn.blocks._shapes import exact_precision, mix_channels, per_sample, spatial_size


def random_rotation(channels: int, generator: torch.Generator | None = None) -> Tensor:
    """A random orthogonal ``(C, C)`` matrix in float64, Haar-distributed (QR with sign fix)."""
    gaussian = torch.randn(channels, channels, generator=generator, dtype=torch.float64)
    q, r = torch.linalg.qr(gaussian)
    return q * torch.sign(torch.diagonal(r))


class InvertibleConv1x1(InvertibleModule):
    r"""Plain invertible 1x1 convolution ``y = W x`` with an unconstrained learned ``W``.

    ``W`` starts as a random rotation (drawn from the global torch RNG, like any layer init).
    ``log_det = H·W·log|det W|`` (via ``slogdet``), shape ``(B,)``. The reverse uses ``W⁻¹``
    computed in float64 so that it stays accurate in float32 after training.

    Shapes: ``(B, C, H, W)`` or ``(B, C)`` in and out.

    Example:
        >>> conv = InvertibleConv1x1([(4, 8, 8)])
        >>> (y,), log_det = conv([torch.randn(2, 4, 8, 8)])
    """

    def __init__(self, dims_in: list[tuple[int, ...]], dims_c: list[tuple[int, ...]] | None = None):
        super().__init__(dims_in, dims_c)
        channels = dims_in[0][0]
        self.weight = nn.Parameter(random_rotation(channels).to(torch.get_default_dtype()))
        self.positions = spatial_size(dims_in[0])

    def forward(self, x_or_z: list[Tensor], c: list[Tensor] | None = None, rev: bool = False,
                jac: bool = True) -> tuple[tuple[Tensor], Tensor]:
        x = x_or_z[0]
        log_det = per_sample(torch.linalg.slogdet(self.weight)[1] * self.positions, x)
        if rev:
            inverse = torch.linalg.inv(self.weight.double()).to(x.dtype)
            return (mix_channels(x, inverse),), -log_det
        return (mix_channels(x, self.weight),), log_det

    def output_dims(self, input_dims: list[tuple[int, ...]]) -> list[tuple[int, ...]]:
        return input_dims


class InvertibleConv1x1LU(InvertibleModule):
    r"""LU-parametrised invertible 1x1 convolution ``W = P · L · (U + diag(sign(s)·exp(log|s|)))``.

    ``P`` (permutation) and ``sign(s)`` are fixed buffers; ``L`` (unit lower triangular), ``U``
    (strictly upper triangular) and ``log|s|`` are learned. ``log_det = H·W·Σ log|s|``, shape
    ``(B,)``: no determinant is ever computed. The reverse applies ``W⁻¹ = (U + diag s)⁻¹ L⁻¹ Pᵀ``
    built by triangular solves in float64.

    At initialisation ``W`` is a random rotation drawn exactly as :class:`InvertibleConv1x1`
    draws it, so under the same seed both start as the same map.

    Example:
        >>> conv = InvertibleConv1x1LU([(4, 8, 8)])
        >>> (y,), log_det = conv([torch.randn(2, 4, 8, 8)])
    """

    def __init__(self, dims_in: list[tuple[int, ...]], dims_c: list[tuple[int, ...]] | None = None):
        super().__init__(dims_in, dims_c)
        channels = dims_in[0][0]
        permutation, lower, upper = torch.linalg.lu(random_rotation(channels))
        s = torch.diagonal(upper)
        dtype = torch.get_default_dtype()
        self.register_buffer("permutation", permutation.to(dtype))
        self.register_buffer("sign_s", torch.sign(s).to(dtype))
        self.register_buffer("lower_mask", torch.tril(torch.ones(channels, channels, dtype=dtype), -1))
        self.register_buffer("eye", torch.eye(channels, dtype=dtype))
        self.lower = nn.Parameter(lower.to(dtype))
        self.upper = nn.Parameter(torch.triu(upper, 1).to(dtype))
        self.log_s = nn.Parameter(torch.log(torch.abs(s)).to(dtype))
        self.positions = spatial_size(dims_in[0])

    def _factors(self, dtype: torch.dtype) -> tuple[Tensor, Tensor, Tensor]:
        """``(P, L, U + diag(s))`` in ``dtype``."""
        lower = self.lower.to(dtype) * self.lower_mask.to(dtype) + self.eye.to(dtype)
        diagonal = torch.diag(self.sign_s.to(dtype) * torch.exp(self.log_s.to(dtype)))
        upper = self.upper.to(dtype) * self.lower_mask.T.to(dtype) + diagonal
        return self.permutation.to(dtype), lower, upper

    def weight(self) -> Tensor:
        """The current ``(C, C)`` matrix ``W`` (in the parameters' dtype, even under autocast)."""
        permutation, lower, upper = self._factors(self.lower.dtype)
        with exact_precision(upper):
            return permutation @ lower @ upper

    def inverse_weight(self) -> Tensor:
        """``W⁻¹`` computed in float64 by two triangular solves."""
        permutation, lower, upper = self._factors(torch.float64)
        lower_inv_pt = torch.linalg.solve_triangular(lower, permutation.T, upper=False, unitriangular=True)
        return torch.linalg.solve_triangular(upper, lower_inv_pt, upper=True)

    def forward(self, x_or_z: list[Tensor], c: list[Tensor] | None = None, rev: bool = False,
                jac: bool = True) -> tuple[tuple[Tensor], Tensor]:
        x = x_or_z[0]
        log_det = per_sample(self.log_s.sum() * self.positions, x)
        if rev:
            return (mix_channels(x, self.inverse_weight().to(x.dtype)),), -log_det
        return (mix_channels(x, self.weight().to(x.dtype)),), log_det

    def output_dims(self, input_dims: list[tuple[int, ...]]) -> list[tuple[int, ...]]:
        return input_dims
