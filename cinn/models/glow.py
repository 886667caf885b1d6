"""Glow (Kingma & Dhariwal 2018): a multi-scale flow of ActNorm → 1x1 conv → coupling steps."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

from cinn.blocks import (
    ActNorm,
    ChannelPermutation,
    CouplingBlock,
    CouplingSpec,
    InvertibleConv1x1,
    InvertibleConv1x1LU,
    LearnedPrior,
    Split,
    Squeeze,
    coupling_map,
    subnet_constructor,
)
from cinn.models.arguments import require_sizes
from cinn.models.condition import OneHot
from cinn.models.flow import Flow, settle_layout

GlowPermutation = Literal["lu", "plain", "reverse", "shuffle"]


def check_multiscale_shape(input_shape: Sequence[int], n_levels: int) -> None:
    """Raise a clear error unless ``(C, H, W)`` can be halved ``n_levels`` times."""
    if len(input_shape) != 3:
        raise ValueError(f"expected an image shape (C, H, W), got {tuple(input_shape)}")
    _, height, width = input_shape
    factor = 2 ** n_levels
    if n_levels < 1 or height % factor or width % factor:
        raise ValueError(f"image size {height}x{width} must be divisible by 2^n_levels = {factor} "
                         f"(n_levels={n_levels}); change the image size or n_levels")


def level_subnets(subnet: str | Sequence[str], n_levels: int) -> list[str]:
    """The subnet name of each of ``n_levels`` levels: one name for all, or a list of exactly one per level.

    Example:
        >>> level_subnets("glow_conv", 2), level_subnets(["glow_conv", "vit_attention"], 2)
        (['glow_conv', 'glow_conv'], ['glow_conv', 'vit_attention'])
    """
    if isinstance(subnet, str):
        return [subnet] * n_levels
    if len(subnet) != n_levels:
        raise ValueError(f"subnet: give one name for all levels or one per level ({n_levels}), got {len(subnet)}: "
                         f"{list(subnet)}")
    return list(subnet)


def build_glow(input_shape: Sequence[int] = (3, 32, 32), *, n_levels: int = 3, steps_per_level: int = 32,
               hidden_channels: int = 512, coupling: CouplingSpec = "sigmoid_affine",
               subnet: str | Sequence[str] = "glow_conv",
               permutation: GlowPermutation = "lu", learn_top_prior: bool = True, split_prior: bool = True,
               n_classes: int = 0, seed: int = 0, channels_last: bool | None = None) -> Flow:
    r"""Multi-scale Glow: ``L`` levels of [squeeze → K × (ActNorm → 1x1 conv → coupling)] → split.

    Every level but the last ends in a :class:`~cinn.blocks.Split` whose learned prior predicts
    the split-off half from the kept half (``split_prior``); the last level ends in a learned top
    prior (``learn_top_prior``). With ``n_classes > 0`` the priors also receive the class label
    (Glow's ``ycond``): pass ``c`` as integer labels ``(B,)`` or one-hot ``(B, n_classes)``.

    Couplings use the registered subnet ``subnet`` of width ``hidden_channels`` (by default Glow's, 3x3 → ReLU →
    1x1 → ReLU → zero 3x3; :data:`~cinn.blocks.SUBNETS`) — or, given a list of ``n_levels`` names, one per level,
    finest first (attention where the maps are small: ``["glow_conv", "vit_attention"]``) — and the map
    ``coupling``, a name or map spec (:func:`~cinn.blocks.coupling_map`): ``"sigmoid_affine"``, Glow's
    ``y = (x + t)·σ(h + 2)``, or with ``{"map": "sigmoid_affine", "min_scale": m}`` the floored scale
    ``m + (1 − m)·σ(h + 2)`` that bounds the inverse (:class:`~cinn.blocks.SigmoidAffine`); ``"additive"``,
    ``y = x + t`` (:class:`~cinn.blocks.Additive`); or any other registered :class:`~cinn.blocks.CouplingMap`.
    ``permutation`` picks the channel mixing: learned 1x1 conv (``"lu"``, ``"plain"``) or fixed
    (``"reverse"``, ``"shuffle"``).

    The model maps ``x`` of shape ``(B, *input_shape)`` to ``n_levels`` latents; inputs are
    expected dequantised in ``[0, 1]`` (see :mod:`cinn.likelihood`).
    ``channels_last``: parameters and activations NHWC (``True``, :meth:`~cinn.models.Flow.use_channels_last`)
    or NCHW (``False``); ``None`` builds NHWC and leaves the layout to the training engine, which times both
    on the machine (:mod:`cinn.engine.layout`: which is faster depends on the CPU and precision).

    Example:
        >>> import torch
        >>> glow = build_glow((1, 8, 8), n_levels=2, steps_per_level=2, hidden_channels=16)
        >>> log_p = glow.log_prob(torch.rand(4, 1, 8, 8))
        >>> glow = build_glow((1, 8, 8), n_levels=2, steps_per_level=2, hidden_channels=16,
        ...                   subnet=["glow_conv", "vit_attention"])  # attention over the 2x2 level's positions
    """
    require_sizes(n_levels=n_levels, hidden_channels=hidden_channels)
    require_sizes(0, steps_per_level=steps_per_level)
    check_multiscale_shape(input_shape, n_levels)
    transform = coupling_map(coupling)
    subnets = [subnet_constructor(name, hidden_channels) for name in level_subnets(subnet, n_levels)]
    permutation_blocks = {
        "lu": (InvertibleConv1x1LU, {}),
        "plain": (InvertibleConv1x1, {}),
        "reverse": (ChannelPermutation, {"kind": "reverse"}),
        "shuffle": (ChannelPermutation, {"kind": "shuffle"}),
    }
    if permutation not in permutation_blocks:
        raise ValueError(f"unknown permutation {permutation!r}; use one of {sorted(permutation_blocks)}")
    permutation_class, permutation_kwargs = permutation_blocks[permutation]
    class_condition = 0 if n_classes > 0 else None
    flow = Flow(input_shape,
                condition_shapes=[(n_classes,)] if n_classes > 0 else [],
                condition_net=OneHot(n_classes) if n_classes > 0 else None)
    for level in range(n_levels):
        flow.append(Squeeze)
        for step in range(steps_per_level):
            flow.append(ActNorm)
            extra = {"seed": seed + level * steps_per_level + step} if permutation == "shuffle" else {}
            flow.append(permutation_class, **permutation_kwargs, **extra)
            flow.append(CouplingBlock, subnet_constructor=subnets[level], transform=transform)
        if level < n_levels - 1:
            flow.append(Split, learned_prior=split_prior,
                        condition=class_condition if split_prior else None)
    if learn_top_prior or n_classes > 0:
        flow.append(LearnedPrior, learn_top=learn_top_prior, condition=class_condition)
    return settle_layout(flow, channels_last)
