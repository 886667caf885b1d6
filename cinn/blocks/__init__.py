"""Invertible building blocks, each a ``FrEIA.modules.InvertibleModule``.

Contract (FrEIA's): ``block(x_or_z: list[Tensor], c: list[Tensor] = [], rev=False, jac=True)``
returns ``(outputs: tuple[Tensor, ...], log_det: Tensor of shape (B,))``, where ``log_det`` is
``log|det ∂out/∂in|`` of the direction that ran (so reverse returns minus forward's).

A :class:`CouplingBlock` takes its element-wise map (:mod:`cinn.blocks.coupling_maps`): :class:`Additive`,
:class:`SigmoidAffine` (Glow), :class:`SoftClampAffine` (cINN), :class:`RationalQuadraticSpline` (Neural Spline
Flows), :class:`LogisticMixtureCdf` (Flow++), or any other :class:`CouplingMap`, by object or by its registered
name (:data:`COUPLING_MAPS`); the builders choose its subnets by name (:data:`SUBNETS`): the conv ones of
:mod:`cinn.blocks.subnets` or the attention ones of :mod:`cinn.blocks.attention`.
"""

from cinn.blocks.actnorm import ActNorm
from cinn.blocks.attention import gated_attention, vit_attention
from cinn.blocks.autoregressive import Patchify, TransformerAutoregressiveBlock
from cinn.blocks.coupling import CouplingBlock
from cinn.blocks.coupling_maps import (
    COUPLING_MAPS,
    Additive,
    CouplingMap,
    CouplingSpec,
    SigmoidAffine,
    SoftClampAffine,
    coupling_map,
    map_spec,
    register_coupling_map,
)
from cinn.blocks.invconv import InvertibleConv1x1, InvertibleConv1x1LU, random_rotation
from cinn.blocks.logistic_mixture import LogisticMixtureCdf
from cinn.blocks.permutation import ChannelPermutation, OrthogonalPermutation
from cinn.blocks.prior import LearnedPrior, Split
from cinn.blocks.rational_quadratic import RationalQuadraticSpline
from cinn.blocks.reshape import HaarDownsampling, Squeeze
from cinn.blocks.subnets import (
    SUBNETS,
    Asinh,
    PointwiseConv2d,
    ZeroConv2d,
    conv_subnet,
    fc_subnet,
    register_subnet,
    subnet_constructor,
    zero_linear,
)
from cinn.blocks.tails import AsinhTails

__all__ = [
    "COUPLING_MAPS",
    "SUBNETS",
    "ActNorm",
    "Additive",
    "Asinh",
    "AsinhTails",
    "ChannelPermutation",
    "CouplingBlock",
    "CouplingMap",
    "CouplingSpec",
    "HaarDownsampling",
    "InvertibleConv1x1",
    "InvertibleConv1x1LU",
    "LearnedPrior",
    "LogisticMixtureCdf",
    "OrthogonalPermutation",
    "Patchify",
    "PointwiseConv2d",
    "RationalQuadraticSpline",
    "SigmoidAffine",
    "SoftClampAffine",
    "Split",
    "Squeeze",
    "TransformerAutoregressiveBlock",
    "ZeroConv2d",
    "conv_subnet",
    "coupling_map",
    "fc_subnet",
    "gated_attention",
    "map_spec",
    "random_rotation",
    "register_coupling_map",
    "register_subnet",
    "subnet_constructor",
    "vit_attention",
    "zero_linear",
]
