"""Conditional INNs (Ardizzone et al. 2019): multi-scale convolutional and fully connected."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

from FrEIA.modules import Flatten

from cinn.blocks import (
    ActNorm,
    AsinhTails,
    ChannelPermutation,
    CouplingBlock,
    CouplingSpec,
    HaarDownsampling,
    LearnedPrior,
    OrthogonalPermutation,
    Split,
    coupling_map,
    fc_subnet,
    subnet_constructor,
)
from cinn.models.arguments import require_sizes
from cinn.models.condition import ImageConditionPyramid, LabelMaps, OneHot, default_condition_channels
from cinn.models.flow import Flow, settle_layout
from cinn.models.glow import check_multiscale_shape


def build_cinn(input_shape: Sequence[int], condition_shape: Sequence[int], *, n_levels: int = 3,
               blocks_per_level: int = 4, hidden_channels: int = 64,
               condition_channels: Sequence[int] | None = None, coupling: CouplingSpec = "soft_clamp_affine",
               subnet: str = "cinn_conv", split_prior: bool = False, actnorm: bool = False, seed: int = 0,
               global_features: int = 0, channels_last: bool | None = None) -> Flow:
    r"""Multi-scale conditional INN: ``L`` levels of [Haar → K × (conditional coupling → orthogonal
    permutation)] → split.

    The model owns a condition network trained jointly with the flow: for an image condition
    (``condition_shape = (C_c, 2^k·H, 2^k·W)``, e.g. the L channel for colourisation, possibly at a
    higher resolution than ab) a conv pyramid (:class:`~cinn.models.condition.ImageConditionPyramid`);
    for a class condition (``condition_shape = (K,)``) learned label embeddings broadcast as maps
    (:class:`~cinn.models.condition.LabelMaps`, ``c`` given as labels ``(B,)`` or one-hot). Level
    ``l`` works at ``H/2^(l+1) x W/2^(l+1)`` and its couplings (both halves transformed, conv subnets of
    width ``hidden_channels``) receive the condition features of that resolution, concatenated to their
    input; their subnets are the registered ``subnet`` (by default conv3x3 → conv3x3 → zero conv3x3;
    :data:`~cinn.blocks.SUBNETS`). The couplings' map is ``coupling``, a name or map spec
    (:func:`~cinn.blocks.coupling_map`), by default the paper's soft-clamped affine map ``y = x·exp(s) + t``,
    ``|s| < clamp`` with clamp 1.5 (:class:`~cinn.blocks.SoftClampAffine`). After each level but the last, half the
    channels are split off (plain split as in the paper, or a learned prior with ``split_prior``).
    ``actnorm`` (not in the paper) puts an :class:`~cinn.blocks.ActNorm` before every coupling.
    ``global_features > 0`` gives an image condition's pyramid a global branch: a vector of that many numbers
    computed from the whole image offsets every level's features.
    ``channels_last`` sets the memory layout as in :func:`~cinn.models.glow.build_glow` (``None``: chosen by
    the training engine on the machine).

    Example:
        >>> import torch
        >>> model = build_cinn((2, 16, 16), (1, 16, 16), n_levels=2, blocks_per_level=2, hidden_channels=16)
        >>> ab, lightness = torch.randn(3, 2, 16, 16), torch.randn(3, 1, 16, 16)
        >>> log_p = model.log_prob(ab, c=lightness)
        >>> samples = model.sample(3, c=lightness, temperature=0.8)
    """
    require_sizes(n_levels=n_levels, hidden_channels=hidden_channels)
    require_sizes(0, blocks_per_level=blocks_per_level)
    check_multiscale_shape(input_shape, n_levels)
    if condition_channels is None:
        condition_channels = default_condition_channels(n_levels)
    if len(condition_channels) != n_levels:
        raise ValueError(f"condition_channels needs one entry per level ({n_levels}), got {condition_channels}")
    _, height, width = input_shape
    sizes = [(height // 2 ** (level + 1), width // 2 ** (level + 1)) for level in range(n_levels)]
    if len(condition_shape) == 3:
        condition_net = ImageConditionPyramid(condition_shape[0], condition_channels,
                                              extra_stages=condition_scale_steps(condition_shape, input_shape),
                                              global_features=global_features)
    elif len(condition_shape) == 1:
        if global_features:
            raise ValueError("global_features applies to an image condition; a class label is global already")
        condition_net = LabelMaps(condition_shape[0], condition_channels, sizes)
    else:
        raise ValueError(f"condition_shape must be an image (C, H, W) or a class count (K,), got "
                         f"{tuple(condition_shape)}")
    flow = Flow(input_shape,
                condition_shapes=[(width_l, *size) for width_l, size in zip(condition_channels, sizes,
                                                                              strict=True)],
                condition_net=condition_net)
    subnet_of_width, transform = subnet_constructor(subnet, hidden_channels), coupling_map(coupling)
    for level in range(n_levels):
        flow.append(HaarDownsampling)
        for block in range(blocks_per_level):
            if actnorm:
                flow.append(ActNorm)
            flow.append(CouplingBlock, condition=level, subnet_constructor=subnet_of_width, transform=transform,
                        two_sided=True)
            flow.append(OrthogonalPermutation, seed=seed + level * blocks_per_level + block)
        if level < n_levels - 1:
            flow.append(Split, learned_prior=split_prior)
    return settle_layout(flow, channels_last)


def condition_scale_steps(condition_shape: Sequence[int], input_shape: Sequence[int]) -> int:
    """``k`` such that an image condition is ``2^k`` times the input's height and width (``k ≥ 0``)."""
    condition_size, input_size = tuple(condition_shape[1:]), tuple(input_shape[1:])
    for steps in range(8):
        if condition_size == tuple(side * 2**steps for side in input_size):
            return steps
    raise ValueError(f"condition image size {condition_size} must be the input size {input_size} times a power "
                     "of two (1, 2, 4, ...)")


def build_cinn_fc(input_shape: Sequence[int], n_classes: int, *, n_blocks: int = 24,
                  hidden_features: int = 512, coupling: CouplingSpec = "soft_clamp_affine", actnorm: bool = False,
                  permutation: Literal["shuffle", "orthogonal"] = "shuffle", seed: int = 0,
                  class_affine: Literal["none", "input", "latent"] = "none", heavy_tails: bool = False,
                  subnet_inputs: Literal["raw", "asinh"] = "raw") -> Flow:
    r"""The cINN paper's MNIST model: flatten → ``n_blocks`` × [fixed random permutation →
    conditional affine coupling (soft clamp, both halves, one hidden layer of ``hidden_features``)].

    ``permutation``: a hard random ``"shuffle"`` of the dimensions, as the paper and its official code
    (each pixel keeps its own coordinates, so the flow can give near-constant background pixels very large
    scales, and a test image with ink where no training image had any gets a very high NLL), or a fixed random
    ``"orthogonal"`` matrix that mixes all dimensions (BENCHMARKS.md, "Why the FC model ignored its labels",
    compares them). ``actnorm`` (not in the paper)
    puts an :class:`~cinn.blocks.ActNorm` (per-dimension scale and shift, data-initialised) before
    every coupling. Every coupling receives the one-hot label, concatenated to its subnet input;
    ``c`` is given as integer labels ``(B,)`` or one-hot ``(B, n_classes)``. The single latent is
    flat, ``(B, prod(input_shape))``. ``coupling`` chooses the couplings' map as for
    :func:`build_cinn`. ``class_affine="latent"`` ends the couplings in a learned class-conditional
    Gaussian prior (a :class:`~cinn.blocks.LearnedPrior`: per class, a mean ``μ_c`` and log-scale of every
    latent dimension, zero-initialised, ``ε = (u − μ_c)·exp(−log σ_c)``), so the label moves the latent
    directly; ``"input"`` puts the same map first. ``heavy_tails`` ends the couplings in
    :class:`~cinn.blocks.AsinhTails` (``v = asinh(u)``), which bounds the bits/dim of test images unlike every
    training image; it comes before the class prior, so the prior stays Gaussian in ``v`` and still pays the full
    quadratic cost for a latent far from its class mean.
    ``subnet_inputs="asinh"`` feeds every subnet ``asinh`` of its input half (:func:`~cinn.blocks.fc_subnet`),
    so that a dimension the couplings have scaled up a lot cannot swamp the later subnets. BENCHMARKS.md ("Why
    the FC model ignored its labels") measures what each of these options does.

    Example:
        >>> import torch
        >>> model = build_cinn_fc((1, 28, 28), 10, n_blocks=4, hidden_features=64)
        >>> digits = model.sample(10, c=torch.arange(10), temperature=0.8)   # (10, 1, 28, 28)
    """
    require_sizes(n_classes=n_classes, hidden_features=hidden_features)
    require_sizes(0, n_blocks=n_blocks)
    flow = Flow(input_shape, condition_shapes=[(n_classes,)], condition_net=OneHot(n_classes))
    if len(input_shape) > 1:
        flow.append(Flatten)
    if class_affine == "input":
        flow.append(LearnedPrior, condition=0, learn_top=False)
    if subnet_inputs not in ("raw", "asinh"):
        raise ValueError(f"unknown subnet_inputs {subnet_inputs!r}; use 'raw' or 'asinh'")
    subnet = fc_subnet(hidden_features, asinh_inputs=subnet_inputs == "asinh")
    transform = coupling_map(coupling)
    for block in range(n_blocks):
        if permutation == "shuffle":
            flow.append(ChannelPermutation, kind="shuffle", seed=seed + block)
        elif permutation == "orthogonal":
            flow.append(OrthogonalPermutation, seed=seed + block)
        else:
            raise ValueError(f"unknown permutation {permutation!r}; use 'orthogonal' or 'shuffle'")
        if actnorm:
            flow.append(ActNorm)
        flow.append(CouplingBlock, condition=0, subnet_constructor=subnet, transform=transform, two_sided=True)
    if heavy_tails:
        flow.append(AsinhTails)
    if class_affine == "latent":
        flow.append(LearnedPrior, condition=0, learn_top=False)
    return flow
