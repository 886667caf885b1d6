"""Invertible building blocks, each a ``FrEIA.modules.InvertibleModule``.

Contract (FrEIA's): ``block(x_or_z: list[Tensor], c: list[Tensor] = [], rev=False, jac=True)``
returns ``(outputs: tuple[Tensor, ...], log_det: Tensor of shape (B,))``, where ``log_det`` is
``log|det ∂out/∂in|`` of the direction that ran (so reverse returns minus forward's).
"""

from cinn.blocks.actnorm import ActNorm
from cinn.blocks.coupling import CouplingBlock
from cinn.blocks.invconv import InvertibleConv1x1, InvertibleConv1x1LU, random_rotation
from cinn.blocks.permutation import ChannelPermutation, OrthogonalPermutation
from cinn.blocks.prior import LearnedPrior, Split
from cinn.blocks.reshape import HaarDownsampling, Squeeze
from cinn.blocks.subnets import PointwiseConv2d, ZeroConv2d, conv_subnet, fc_subnet, zero_linear

__all__ = [
    "ActNorm",
    "ChannelPermutation",
    "CouplingBlock",
    "HaarDownsampling",
    "InvertibleConv1x1",
    "InvertibleConv1x1LU",
    "LearnedPrior",
    "OrthogonalPermutation",
    "PointwiseConv2d",
    "Split",
    "Squeeze",
    "ZeroConv2d",
    "conv_subnet",
    "fc_subnet",
    "random_rotation",
    "zero_linear",
]
