r"""The monotone rational-quadratic spline of Neural Spline Flows as a coupling map."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from cinn.blocks._shapes import sum_per_sample
from cinn.blocks.coupling_maps import CouplingMap, register_coupling_map


@register_coupling_map
@dataclass(frozen=True)
class RationalQuadraticSpline(CouplingMap):
    r"""The rational-quadratic spline of Durkan et al. 2019 ("Neural Spline Flows") on ``[−B, B]``, the
    identity outside, with ``B = bound`` and ``K = bins``.

    ``K + 1`` knots ``(x_k, y_k)`` run from ``(−B, −B)`` to ``(B, B)``; the bin widths and heights are
    ``w = 2B·(m_w + (1 − K·m_w)·softmax(θ_w))`` (and alike with ``m_h``, ``θ_h``), the derivatives at the
    ``K − 1`` inner knots ``δ_k = m_δ + softplus(θ_δ + log(e^{1 − m_δ} − 1))`` and ``δ_0 = δ_K = 1``, so that
    the map and its derivative are continuous where the linear tails begin. In bin ``k``, with
    ``ξ = (x − x_k)/w_k`` and slope ``s_k = h_k/w_k``,

        ``y = y_k + h_k·(s_k ξ² + δ_k ξ(1 − ξ)) / (s_k + (δ_{k+1} + δ_k − 2 s_k) ξ(1 − ξ))``,

        ``∂y/∂x = s_k²·(δ_{k+1} ξ² + 2 s_k ξ(1 − ξ) + δ_k (1 − ξ)²) / (s_k + (δ_{k+1} + δ_k − 2 s_k) ξ(1 − ξ))²``

    and ``log_det = Σ log ∂y/∂x`` over the elements inside ``[−B, B]`` (the tails add 0). The inverse solves
    the quadratic for ``ξ`` in closed form with the root ``ξ = 2c / (−b − √(b² − 4ac))``, which does not
    cancel. Zero ``params`` (a zero-initialised subnet) give uniform bins and unit derivatives: the identity.
    ``m_w``, ``m_h``, ``m_δ`` are ``min_bin_width``, ``min_bin_height``, ``min_derivative``, the first two as
    fractions of ``2B``. Computes in the dtype of its inputs.

    Shapes: ``x`` and ``y`` are ``(B, C, *spatial)``; ``params`` is ``(B, (3K − 1)·C, *spatial)``, read as
    ``(B, 3K − 1, C, *spatial)`` (parameter ``j`` of channel ``c`` is channel ``j·C + c``, as the affine maps
    chunk theirs): ``θ_w`` for ``j < K``, ``θ_h`` for ``K ≤ j < 2K``, ``θ_δ`` for ``2K ≤ j < 3K − 1``. The
    log-det is ``(B,)``.

    Example:
        >>> spline = RationalQuadraticSpline(bins=4, bound=2.0)
        >>> x, params = torch.randn(2, 3, dtype=torch.float64), torch.randn(2, 11 * 3, dtype=torch.float64)
        >>> y, log_det = spline.forward(x, params)
        >>> x_back, log_det_rev = spline.inverse(y, params)
        >>> torch.allclose(x_back, x), torch.allclose(log_det_rev, -log_det), spline.params_per_channel
        (True, True, 11)
    """

    bins: int = 8
    bound: float = 3.0
    min_bin_width: float = 1e-3
    min_bin_height: float = 1e-3
    min_derivative: float = 1e-3

    def __post_init__(self) -> None:
        if isinstance(self.bins, bool) or not isinstance(self.bins, int) or self.bins < 1:
            raise ValueError(f"bins must be a positive integer, got {self.bins!r}")
        if not self.bound > 0:
            raise ValueError(f"bound must be positive, got {self.bound}")
        for name in ("min_bin_width", "min_bin_height"):
            value = getattr(self, name)
            if not 0 <= value * self.bins < 1:
                raise ValueError(f"{name} must be in [0, 1/bins) = [0, {1 / self.bins:g}), got {value}")
        if not 0 <= self.min_derivative < 1:
            raise ValueError(f"min_derivative must be in [0, 1), got {self.min_derivative}")

    @property
    def params_per_channel(self) -> int:  # type: ignore[override]
        """``3K − 1``: ``K`` widths, ``K`` heights and ``K − 1`` inner derivatives per channel."""
        return 3 * self.bins - 1

    def forward(self, x: Tensor, params: Tensor) -> tuple[Tensor, Tensor]:
        inside = (x >= -self.bound) & (x <= self.bound)
        clamped = x.where(inside, 0.0)  # not clamp, whose gradient vanishes at −B
        x_k, w, y_k, h, d_k, d_next = self._bin_of(clamped, params, from_x=True)
        slope = h / w
        xi = (clamped - x_k) / w
        curve = xi * (1 - xi)
        y_inside = y_k + h * (slope * xi**2 + d_k * curve) / (slope + (d_next + d_k - 2 * slope) * curve)
        log_derivative = self._log_derivative(xi, slope, d_k, d_next)
        return torch.where(inside, y_inside, x), sum_per_sample(torch.where(inside, log_derivative, 0.0))

    def inverse(self, y: Tensor, params: Tensor) -> tuple[Tensor, Tensor]:
        inside = (y >= -self.bound) & (y <= self.bound)
        clamped = y.where(inside, 0.0)
        x_k, w, y_k, h, d_k, d_next = self._bin_of(clamped, params, from_x=False)
        slope = h / w
        rise = clamped - y_k
        bend = d_next + d_k - 2 * slope
        a = h * (slope - d_k) + rise * bend
        b = h * d_k - rise * bend
        c = -slope * rise
        xi = 2 * c / (-b - torch.sqrt((b**2 - 4 * a * c).clamp_min(0)))
        log_derivative = self._log_derivative(xi, slope, d_k, d_next)
        return torch.where(inside, x_k + xi * w, y), -sum_per_sample(torch.where(inside, log_derivative, 0.0))

    def _bin_of(self, value: Tensor, params: Tensor, from_x: bool) -> tuple[Tensor, ...]:
        """For each element of ``value`` (in ``[−B, B]``) the bin it falls in, on the x axis (``from_x``) or
        the y axis: ``(x_k, w_k, y_k, h_k, δ_k, δ_{k+1})``, each shaped like ``value``."""
        raw = params.unflatten(1, (self.params_per_channel, value.shape[1])).movedim(1, -1)
        x_knots = self._knots(raw[..., :self.bins], self.min_bin_width)
        y_knots = self._knots(raw[..., self.bins:2 * self.bins], self.min_bin_height)
        unit = math.log(math.expm1(1 - self.min_derivative))  # softplus(unit) = 1 − m_δ: zero params give δ = 1
        inner = self.min_derivative + F.softplus(raw[..., 2 * self.bins:] + unit)
        ends = inner.new_ones((*inner.shape[:-1], 1))
        derivatives = torch.cat([ends, inner, ends], dim=-1)
        knots = x_knots if from_x else y_knots
        k = (value.unsqueeze(-1) >= knots[..., 1:-1]).sum(dim=-1, keepdim=True)
        x_k, x_next = x_knots.gather(-1, k), x_knots.gather(-1, k + 1)
        y_k, y_next = y_knots.gather(-1, k), y_knots.gather(-1, k + 1)
        found = (x_k, x_next - x_k, y_k, y_next - y_k, derivatives.gather(-1, k), derivatives.gather(-1, k + 1))
        return tuple(t.squeeze(-1) for t in found)

    def _knots(self, raw: Tensor, minimum: float) -> Tensor:
        """``K + 1`` increasing knot positions from ``−B`` to ``B`` (the ends exact) along the last axis, from the
        bins' raw sizes ``raw`` (``K`` along the last axis)."""
        sizes = minimum + (1 - minimum * self.bins) * torch.softmax(raw, dim=-1)
        inner = 2 * self.bound * torch.cumsum(sizes[..., :-1], dim=-1) - self.bound
        ends = inner.new_full((*inner.shape[:-1], 1), self.bound)
        return torch.cat([-ends, inner, ends], dim=-1)

    @staticmethod
    def _log_derivative(xi: Tensor, slope: Tensor, d_k: Tensor, d_next: Tensor) -> Tensor:
        """``log ∂y/∂x`` at the position ``ξ`` in a bin of slope ``s_k`` and knot derivatives ``δ_k, δ_{k+1}``."""
        curve = xi * (1 - xi)
        denominator = slope + (d_next + d_k - 2 * slope) * curve
        numerator = d_next * xi**2 + 2 * slope * curve + d_k * (1 - xi) ** 2
        return 2 * torch.log(slope) + torch.log(numerator) - 2 * torch.log(denominator)
