r"""Flow++'s logistic-mixture CDF coupling map, inverted by bisection."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor

from cinn.blocks._shapes import sum_per_sample
from cinn.blocks.coupling_maps import CouplingMap, register_coupling_map


@register_coupling_map
@dataclass(frozen=True)
class LogisticMixtureCdf(CouplingMap):
    r"""Flow++'s map (Ho et al. 2019): ``y = e^a·logit(F(x)) + b`` with the CDF of a mixture of ``K`` logistics,

        ``F(x) = Σ_k π_k σ((x − μ_k)/s_k)``,  ``K = components``,

    and ``π = softmax(θ_π)``, ``μ_k = θ_μk + m_k``, ``log s_k = 7·tanh(θ_sk/7)``, ``a = tanh(θ_a)``, ``b = θ_b``.
    The offsets ``m_k = (2k + 1)/K − 1`` (the centres of ``K`` equal cells of ``[−1, 1]``) keep the
    components apart: a zero-initialised subnet would otherwise give them equal parameters and equal
    gradients forever. Zero ``params`` therefore give the fixed map ``y = logit(Σ_k σ(x − m_k)/K)``, the
    identity for ``K = 1``. The soft bounds keep ``e^a`` in ``(1/e, e)`` and ``s_k`` in ``(e^{−7}, e^7)`` (Flow++
    clamps ``log s ≥ −7``).

    ``log_det = Σ [a + log f(x) − log F(x) − log(1 − F(x))]`` over all but the batch axis, with the mixture
    density ``f``; every term is a log-sum-exp over the components of log-sigmoids, never a log of a rounded
    probability. The slope is at most ``e^a / min_k s_k``.

    The inverse bisects on ``x``: the root of ``logit F(x) = (y − b)·e^{−a} =: L`` lies in
    ``[min_k (μ_k + s_k L), max_k (μ_k + s_k L)]`` (where every component's CDF is below, resp. above, ``σ(L)``).
    It halves every element's bracket ``n = ⌈log₂(w/ε)⌉`` times (at most ``max_iterations``), ``w`` the widest
    bracket of the batch, so ``|x̂ − x| ≤ ε/2`` plus the rounding error of ``y`` over the slope ``∂y/∂x``.
    ``ε`` is ``tolerance`` in float32 and scales with the dtype's machine epsilon (``tolerance·2⁻²⁹`` in
    float64). One inverse costs ``n`` bisection steps, each one evaluation of the mixture CDF (``K``
    log-sigmoids and a log-sum-exp over ``K`` per element, on the side of the median where it does not round to
    1), then one evaluation of the map for the log-det at ``x̂``, which is what the forward pass costs; when
    autograd records, one more gives ``x̂`` the implicit gradient ``∂x/∂(y, params) = (1, −∂y/∂params)/(∂y/∂x)``.

    Shapes: ``x`` and ``y`` are ``(B, C, *spatial)``; ``params`` is ``(B, (3K + 2)·C, *spatial)``, read as
    ``(B, 3K + 2, C, *spatial)`` (parameter ``j`` of channel ``c`` is channel ``j·C + c``, as the affine maps
    chunk theirs): ``θ_π`` for ``j < K``, ``θ_μ`` for ``K ≤ j < 2K``, ``θ_s`` for ``2K ≤ j < 3K``, then ``θ_a``,
    ``θ_b``. The log-det is ``(B,)``.

    Example:
        >>> mixture = LogisticMixtureCdf(components=2)
        >>> x, params = torch.randn(2, 3, dtype=torch.float64), torch.randn(2, 8 * 3, dtype=torch.float64)
        >>> y, log_det = mixture.forward(x, params)
        >>> x_back, log_det_rev = mixture.inverse(y, params)
        >>> torch.allclose(x_back, x, rtol=0, atol=1e-12), torch.allclose(log_det_rev, -log_det)
        (True, True)
    """

    components: int = 4
    tolerance: float = 1e-6
    max_iterations: int = 100
    LOG_SCALE_BOUND: ClassVar[float] = 7.0

    def __post_init__(self) -> None:
        for name in ("components", "max_iterations"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if not self.tolerance > 0:
            raise ValueError(f"tolerance must be positive, got {self.tolerance}")

    @property
    def params_per_channel(self) -> int:  # type: ignore[override]
        """``3K + 2``: ``K`` weights, means and scales, and ``a``, ``b`` per channel."""
        return 3 * self.components + 2

    def resolution(self, dtype: torch.dtype) -> float:
        """``ε``, the width to which the inverse narrows its brackets in ``dtype``."""
        return self.tolerance * torch.finfo(dtype).eps / torch.finfo(torch.float32).eps

    def bisection_steps(self, width: float, dtype: torch.dtype) -> int:
        """``n = ⌈log₂(width/ε)⌉`` (0 if ``width ≤ ε``, at most ``max_iterations``): the halvings that narrow a
        bracket of ``width`` to ``ε``."""
        steps = math.log2(width / self.resolution(dtype)) if width > self.resolution(dtype) else 0.0
        return math.ceil(min(steps, self.max_iterations))

    def forward(self, x: Tensor, params: Tensor) -> tuple[Tensor, Tensor]:
        mixture = self._mixture(params, x.shape[1])
        y, log_derivative = self._map(x, *mixture)
        return y, sum_per_sample(log_derivative)

    def inverse(self, y: Tensor, params: Tensor) -> tuple[Tensor, Tensor]:
        mixture = self._mixture(params, y.shape[1])
        with torch.no_grad():
            x = self._bisect(y, *mixture)
        if torch.is_grad_enabled() and (y.requires_grad or params.requires_grad):
            y_at_x, log_derivative = self._map(x, *mixture)
            residual = y - y_at_x
            x = x + (residual - residual.detach()) * torch.exp(-log_derivative.detach())
        return x, -sum_per_sample(self._map(x, *mixture)[1])

    def _mixture(self, params: Tensor, channels: int) -> tuple[Tensor, ...]:
        """``(log π, μ, log s)``, each ``(B, K, C, *spatial)``, and ``(a, b)``, each ``(B, C, *spatial)``."""
        k = self.components
        raw = params.unflatten(1, (self.params_per_channel, channels))
        offsets = (2 * torch.arange(k, dtype=params.dtype, device=params.device) + 1) / k - 1
        means = raw[:, k:2 * k] + offsets.view(1, k, *(1,) * (raw.dim() - 2))
        log_scales = self.LOG_SCALE_BOUND * torch.tanh(raw[:, 2 * k:3 * k] / self.LOG_SCALE_BOUND)
        log_weights = torch.log_softmax(raw[:, :k], dim=1)
        return log_weights, means, log_scales, torch.tanh(raw[:, 3 * k]), raw[:, 3 * k + 1]

    def _log_cdfs(self, x: Tensor, log_weights: Tensor, means: Tensor, log_scales: Tensor) -> tuple[Tensor, ...]:
        """``(log F(x), log(1 − F(x)))`` and the components' ``(log σ(z_k), log σ(−z_k))`` with
        ``z_k = (x − μ_k)/s_k``, these of shape ``(B, K, C, *spatial)``."""
        z = (x.unsqueeze(1) - means) * torch.exp(-log_scales)
        log_below, log_above = F.logsigmoid(z), F.logsigmoid(-z)
        log_cdf = torch.logsumexp(log_weights + log_below, dim=1)
        return log_cdf, torch.logsumexp(log_weights + log_above, dim=1), log_below, log_above

    def _map(self, x: Tensor, log_weights: Tensor, means: Tensor, log_scales: Tensor, a: Tensor, b: Tensor
             ) -> tuple[Tensor, Tensor]:
        """``(y, log ∂y/∂x)`` element-wise."""
        log_cdf, log_survival, log_below, log_above = self._log_cdfs(x, log_weights, means, log_scales)
        log_density = torch.logsumexp(log_weights - log_scales + log_below + log_above, dim=1)
        return torch.exp(a) * (log_cdf - log_survival) + b, a + log_density - log_cdf - log_survival

    def _bisect(self, y: Tensor, log_weights: Tensor, means: Tensor, log_scales: Tensor, a: Tensor, b: Tensor
                ) -> Tensor:
        """``x`` with ``logit F(x) = (y − b)·e^{−a}`` to within ``ε/2``, by bisection (no gradient)."""
        target = (y - b) * torch.exp(-a)
        scales = torch.exp(log_scales)
        ends = means + scales * target.unsqueeze(1)
        low, high = ends.amin(dim=1), ends.amax(dim=1)
        width = (high - low).max().item() if y.numel() else 0.0
        # compare the tail of F on the target's side of the median, F(x) < 1/2 or 1 − F(x) ≤ 1/2, whose log does
        # not round to 0: ``sign·(log tail(x) − log tail(target)) > 0`` iff logit F(x) > target
        sign = torch.where(target < 0, 1.0, -1.0).to(y.dtype)
        slopes = sign.unsqueeze(1) / scales
        offsets = means * slopes
        threshold = F.logsigmoid(sign * target)
        for _ in range(self.bisection_steps(width, y.dtype)):
            middle = (low + high) / 2
            above = sign * (self._log_tail(middle, log_weights, slopes, offsets) - threshold) > 0
            low, high = torch.where(above, low, middle), torch.where(above, middle, high)
        return (low + high) / 2

    @staticmethod
    def _log_tail(x: Tensor, log_weights: Tensor, slopes: Tensor, offsets: Tensor) -> Tensor:
        """``log Σ_k π_k σ(slope_k·x − offset_k)``: one evaluation of the mixture CDF (or of ``1 − F``)."""
        return torch.logsumexp(log_weights + F.logsigmoid(torch.addcmul(-offsets, x.unsqueeze(1), slopes)), dim=1)
