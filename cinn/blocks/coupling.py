"""Additive and affine coupling blocks with an optional condition input."""

from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn.functional as F
from FrEIA.modules import InvertibleModule
from torch import Tensor, nn

from cinn.blocks.subnets import SubnetConstructor

CouplingTransform = Literal["additive", "affine_sigmoid", "affine_soft_clamp"]


class CouplingBlock(InvertibleModule):
    r"""Coupling block: split channels ``x = [x_a, x_b]`` and transform ``x_b`` given ``(x_a, c)``.

    With ``[t, h] = NN([x_a, c])`` (the condition tensors concatenated on the channel axis):

    * ``"additive"``:          ``y_b = x_b + t``,                      ``log_det = 0``
    * ``"affine_sigmoid"``:    ``y_b = (x_b + t) · σ(h + 2)``          (Glow),
      ``log_det = Σ log σ(h + 2)``
    * ``"affine_soft_clamp"``: ``y_b = x_b · exp(s) + t`` with ``s = clamp·(2/π)·atan(h/clamp)``
      (cINN), ``log_det = Σ s``

    and ``y_a = x_a``. With ``two_sided=True`` a second subnet then transforms ``x_a`` given the
    new ``y_b`` the same way (FrEIA's ``GLOWCouplingBlock`` layout, used by the cINN paper), so
    every channel changes in one block. ``log_det`` has shape ``(B,)``.

    The subnets' last layers are zero-initialised (see :mod:`cinn.blocks.subnets`), so additive
    and soft-clamp blocks start as the identity; the sigmoid form starts as the fixed scaling
    ``y_b = x_b · σ(2)``, as in Glow.

    Shapes: ``x`` is ``(B, C, H, W)`` with conditions ``(B, C_c, H, W)`` for conv subnets, or
    ``(B, C)`` with conditions ``(B, C_c)`` for fully connected subnets; ``C_a = C // 2``.

    Example:
        >>> from cinn.blocks.subnets import conv_subnet
        >>> block = CouplingBlock([(4, 8, 8)], [(3, 8, 8)], subnet_constructor=conv_subnet(32))
        >>> (y,), log_det = block([torch.randn(2, 4, 8, 8)], c=[torch.randn(2, 3, 8, 8)])
    """

    def __init__(self, dims_in: list[tuple[int, ...]], dims_c: list[tuple[int, ...]] | None = None, *,
                 subnet_constructor: SubnetConstructor,
                 transform: CouplingTransform = "affine_sigmoid",
                 clamp: float = 2.0,
                 two_sided: bool = False):
        super().__init__(dims_in, dims_c)
        if transform not in ("additive", "affine_sigmoid", "affine_soft_clamp"):
            raise ValueError(f"unknown coupling transform {transform!r}; "
                             "use 'additive', 'affine_sigmoid' or 'affine_soft_clamp'")
        channels = dims_in[0][0]
        if channels < 2:
            raise ValueError(f"a coupling block needs at least 2 channels to split, got {channels}; "
                             "squeeze or Haar-downsample first")
        for shape in self.dims_c:
            if tuple(shape[1:]) != tuple(dims_in[0][1:]):
                raise ValueError(f"condition shape {tuple(shape)} does not match the input's spatial "
                                 f"shape {tuple(dims_in[0][1:])}")
        self.split_sizes = (channels // 2, channels - channels // 2)
        self.transform = transform
        self.clamp = clamp
        condition_channels = sum(shape[0] for shape in self.dims_c)
        factor = 1 if transform == "additive" else 2
        size_a, size_b = self.split_sizes
        self.subnet_b = subnet_constructor(size_a + condition_channels, factor * size_b)
        self.subnet_a = subnet_constructor(size_b + condition_channels, factor * size_a) if two_sided else None

    def _log_scale(self, raw: Tensor) -> Tensor:
        if self.transform == "affine_sigmoid":
            return F.logsigmoid(raw + 2.0)
        return self.clamp * (2.0 / math.pi) * torch.atan(raw / self.clamp)

    def _couple(self, subnet: nn.Module, given: Tensor, target: Tensor, conditions: list[Tensor],
                rev: bool) -> tuple[Tensor, Tensor]:
        """Transform ``target`` with parameters computed from ``given``; return it and its log-det."""
        params = subnet(torch.cat([given, *conditions], dim=1) if conditions else given)
        if self.transform == "additive":
            return (target - params if rev else target + params), target.new_zeros(target.shape[0])
        shift, raw = params.chunk(2, dim=1)
        log_scale = self._log_scale(raw)
        log_det = log_scale.flatten(1).sum(1)
        if self.transform == "affine_sigmoid":
            out = target * torch.exp(-log_scale) - shift if rev else (target + shift) * torch.exp(log_scale)
        else:
            out = (target - shift) * torch.exp(-log_scale) if rev else target * torch.exp(log_scale) + shift
        return out, (-log_det if rev else log_det)

    def forward(self, x_or_z: list[Tensor], c: list[Tensor] | None = None, rev: bool = False,
                jac: bool = True) -> tuple[tuple[Tensor], Tensor]:
        conditions = list(c) if c is not None else []
        a, b = torch.split(x_or_z[0], self.split_sizes, dim=1)
        if not rev:
            b, log_det = self._couple(self.subnet_b, a, b, conditions, rev=False)
            if self.subnet_a is not None:
                a, log_det_a = self._couple(self.subnet_a, b, a, conditions, rev=False)
                log_det = log_det + log_det_a
        else:
            log_det = a.new_zeros(a.shape[0])
            if self.subnet_a is not None:
                a, log_det = self._couple(self.subnet_a, b, a, conditions, rev=True)
            b, log_det_b = self._couple(self.subnet_b, a, b, conditions, rev=True)
            log_det = log_det + log_det_b
        return (torch.cat([a, b], dim=1),), log_det

    def output_dims(self, input_dims: list[tuple[int, ...]]) -> list[tuple[int, ...]]:
        return input_dims
