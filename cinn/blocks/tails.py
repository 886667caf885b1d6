r"""Heavy tails for a flow's latent: an element-wise ``ε = asinh(u)``.

An affine flow with a Gaussian latent has Gaussian tails in every direction it can reach with bounded
scales, so an input far outside the training data (a digit with ink where no training digit has any, in
a dimension the flow has learnt to scale by 10^4) costs ``u²/2`` nats per such dimension: thousands of
bits/dim. Ending the flow in ``ε = asinh(u)`` with ``ε ~ N(0, I)`` makes ``u = sinh(ε)`` Johnson's
S_U-distributed (Johnson 1949): Gaussian near 0 (``asinh(u) ≈ u``), and at ``|u| → ∞`` a cost of about
``(log 2|u|)²/2 + log|u|`` nats instead of ``u²/2``. The model's likelihood stays exact; only its family of
densities changes. Followed by a class-conditional Gaussian prior (as in
:func:`~cinn.models.build_cinn_fc`), the prior stays Gaussian in ``asinh(u)``, so the label keeps its pull.
"""

from __future__ import annotations

import math

import torch
from FrEIA.modules import InvertibleModule
from torch import Tensor

from cinn.blocks._shapes import sum_per_sample


def log_cosh(x: Tensor) -> Tensor:
    """``log cosh x`` without overflow: ``|x| + log1p(exp(−2|x|)) − log 2``.

    Example:
        >>> [round(value, 4) for value in log_cosh(torch.tensor([0.0, 1.0, 1000.0], dtype=torch.float64)).tolist()]
        [0.0, 0.4338, 999.3069]
    """
    magnitude = x.abs()
    return magnitude + torch.log1p(torch.exp(-2 * magnitude)) - math.log(2.0)


class AsinhTails(InvertibleModule):
    r"""``ε = asinh(u)`` element-wise, ``log_det = −Σ log √(1 + u²)``; reverse ``u = sinh(ε)``,
    ``log_det = Σ log cosh ε``. Any input shape ``(B, ...)``, no parameters; put it last in a flow so
    that its latent is the standard normal ``ε``.

    Example:
        >>> tails = AsinhTails([(3,)])
        >>> (eps,), log_det = tails([torch.tensor([[0.0, 1.0, 1e4]])])
        >>> [round(value, 3) for value in eps[0].tolist()], round(log_det.item(), 3)
        ([0.0, 0.881, 9.903], -9.557)
        >>> (u,), _ = tails([eps], rev=True)
        >>> torch.allclose(u, torch.tensor([[0.0, 1.0, 1e4]]))
        True
    """

    def forward(self, x_or_z: list[Tensor], c: list[Tensor] | None = None, rev: bool = False,
                jac: bool = True) -> tuple[tuple[Tensor], Tensor]:
        value = x_or_z[0]
        if rev:
            return (torch.sinh(value),), sum_per_sample(log_cosh(value))
        return (torch.asinh(value),), -sum_per_sample(torch.log(torch.hypot(torch.ones_like(value), value)))

    def output_dims(self, input_dims: list[tuple[int, ...]]) -> list[tuple[int, ...]]:
        return input_dims
