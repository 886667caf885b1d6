r"""Variational dequantisation (Ho et al. 2019, Flow++): the noise that fills each quantisation bin drawn from a
learned conditional flow ``q(u | k)`` instead of the uniform distribution, trained jointly with the model.

For an image quantised to bins ``k ∈ {0, …, n−1}^M`` (``n = 2^n_bits``) and ``x = (k + u)/n``,

    ``log P(k) ≥ E_{u~q(·|k)}[log p(x) − log q(u | k)] − M·log n``,

with equality when ``q(u | k)`` is ``p``'s own density inside the bin. Uniform noise (``q = 1``) is the special
case cinn uses by default (:mod:`cinn.likelihood`); a learned ``q`` can only tighten the bound, by the KL
divergence it removes. The bits/dim of a flow with a dequantiser is therefore still a bound — a variational one,
and it says so wherever it is reported.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from cinn.likelihood import n_bins
from cinn.models.cinn import build_cinn
from cinn.models.flow import Flow, standard_normal_log_prob
from cinn.models.registry import build_from_spec, register_builder

EDGE = 1e-6
"""Uniform noise is kept this far inside ``(0, 1)`` before its normal quantile is taken (``Φ⁻¹(0) = −∞``)."""


class VariationalDequantizer(nn.Module):
    r"""``q(u | k)``: noise ``u ∈ (0, 1)^M`` for the bins ``k`` of an image, from a conditional flow.

    Given ``x = (k + u₀)/n`` dequantised with uniform ``u₀`` (what :class:`~cinn.engine.DequantizedImages`
    prepares), it recovers ``k = ⌊n·x⌋`` and ``u₀``, turns ``u₀`` into standard-normal noise ``ε = Φ⁻¹(u₀)`` (so
    every random draw stays the objective's, seeded and resumable), and maps it through a conditional INN
    ``g`` (:func:`~cinn.models.build_cinn`, one level, conditioned on ``k/(n−1) − ½``) and a sigmoid:

        ``a = g(ε; k)``,  ``u = σ(a)``,  ``x' = (k + u)/n``,
        ``log q(u | k) = log N(ε; 0, I) − log|det ∂g/∂ε| − Σ log σ'(a)``,
        ``log σ'(a) = −softplus(−a) − softplus(a)``.

    ``forward(x)`` returns ``(x', log q(u | k))``, the latter of shape ``(B,)``.

    Example:
        >>> dequantizer = VariationalDequantizer((1, 4, 4), n_bits=3, blocks=1, hidden_channels=8)
        >>> k = torch.randint(0, 8, (2, 1, 4, 4)).float()
        >>> x, log_q = dequantizer((k + torch.rand(2, 1, 4, 4)) / 8)
        >>> bool(((x * 8).floor() == k).all()), log_q.shape
        (True, torch.Size([2]))
    """

    def __init__(self, input_shape: Sequence[int], n_bits: int, *, blocks: int = 4, hidden_channels: int = 32):
        super().__init__()
        self.input_shape, self.n_bits = tuple(input_shape), n_bits
        self.flow = build_cinn(self.input_shape, self.input_shape, n_levels=1, blocks_per_level=blocks,
                               hidden_channels=hidden_channels, channels_last=False)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        bins = n_bins(self.n_bits)
        scaled = x * bins
        k = scaled.floor().clamp(0, bins - 1)
        eps = torch.special.ndtri((scaled - k).clamp(EDGE, 1 - EDGE))
        latents, log_det = self.flow.transform(eps, k / (bins - 1) - 0.5)
        a = torch.cat([latent.flatten(1) for latent in latents], dim=1).view_as(eps)
        log_sigmoid_slope = -(F.softplus(-a) + F.softplus(a))
        log_q = standard_normal_log_prob(eps) - log_det - log_sigmoid_slope.flatten(1).sum(1)
        return (k + torch.sigmoid(a)) / bins, log_q


class VariationallyDequantizedFlow(nn.Module):
    r"""A flow whose likelihood is the variational dequantisation bound of :mod:`cinn.models.dequantization`.

    ``log_prob(x, c) = log p(x' | c) − log q(u | k)`` with ``(x', log q) = dequantizer(x)``, for ``x``
    uniformly dequantised as usual: the standard bits/dim formula then gives the variational bound (one draw of
    ``u`` per image). ``encode``, ``decode``, ``sample`` and the rest are the flow's own (the dequantiser only
    matters for the likelihood); ``self.flow`` is the flow.

    Example:
        >>> from cinn.models import build_glow
        >>> model = VariationallyDequantizedFlow(build_glow((1, 4, 4), n_levels=1, steps_per_level=1,
        ...                                                 hidden_channels=8), n_bits=3, blocks=1)
        >>> model.log_prob(torch.rand(2, 1, 4, 4)).shape, model.sample(2).shape
        (torch.Size([2]), torch.Size([2, 1, 4, 4]))
    """

    variational_bound = True

    def __init__(self, flow: Flow, n_bits: int, *, blocks: int = 4, hidden_channels: int = 32):
        super().__init__()
        if not isinstance(flow, Flow) or len(flow.input_shape) != 3:
            raise ValueError("variational dequantisation takes a flow on images (C, H, W)")
        self.flow = flow
        self.dequantizer = VariationalDequantizer(flow.input_shape, n_bits, blocks=blocks,
                                                  hidden_channels=hidden_channels)

    def log_prob(self, x: Tensor, c: Any = None) -> Tensor:
        dequantized, log_q = self.dequantizer(x)
        return self.flow.log_prob(dequantized, c) - log_q

    def forward(self, x: Tensor, c: Any = None) -> Tensor:
        return self.log_prob(x, c)

    def __getattr__(self, name: str) -> Any:
        """Everything else (``encode``, ``decode``, ``sample``, ``input_shape``, …) is the flow's."""
        try:
            return super().__getattr__(name)
        except AttributeError:
            return getattr(super().__getattr__("flow"), name)

    def trained_with(self, flow_module: nn.Module) -> nn.Module:
        """The training objective with the flow's ``log_prob`` computed by ``flow_module`` (the flow under
        another backprop, :func:`~cinn.models.with_backprop`): ``flow_module(x', c) − log q``."""
        return _DequantizedObjective(self.dequantizer, flow_module)


class _DequantizedObjective(nn.Module):
    """``flow_module(x', c) − log q(u | k)``: :meth:`VariationallyDequantizedFlow.trained_with`."""

    def __init__(self, dequantizer: VariationalDequantizer, flow_module: nn.Module):
        super().__init__()
        self.dequantizer, self.flow_module = dequantizer, flow_module

    def forward(self, x: Tensor, c: Any = None) -> Tensor:
        dequantized, log_q = self.dequantizer(x)
        return self.flow_module(dequantized, c) - log_q


@register_builder
def build_variationally_dequantized(flow: Mapping[str, Any], *, n_bits: int = 8, blocks_per_level: int = 4,
                                    hidden_channels: int = 32) -> VariationallyDequantizedFlow:
    """The model of the spec ``flow`` (:func:`~cinn.models.registry.model_spec`) with a variational dequantiser
    of ``blocks_per_level`` couplings of width ``hidden_channels`` for ``n_bits`` images.

    Example:
        >>> from cinn.models import build_glow
        >>> from cinn.models.registry import model_spec
        >>> glow = model_spec(build_glow, input_shape=(1, 4, 4), n_levels=1, steps_per_level=1, hidden_channels=8)
        >>> model = build_variationally_dequantized(glow, n_bits=5, blocks_per_level=1, hidden_channels=8)
        >>> type(model.flow).__name__, model.input_shape
        ('Flow', (1, 4, 4))
    """
    if not 1 <= n_bits <= 8:
        raise ValueError(f"n_bits must be from 1 to 8, got {n_bits}")
    return VariationallyDequantizedFlow(build_from_spec(flow), n_bits, blocks=blocks_per_level,
                                        hidden_channels=hidden_channels)
