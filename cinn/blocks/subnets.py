"""Subnetworks for coupling blocks. Each constructor returns ``f(in_channels, out_channels) -> nn.Module``
whose last layer is zero-initialised, so a coupling block built with it starts as the identity."""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

SubnetConstructor = Callable[[int, int], nn.Module]


class ZeroConv2d(nn.Module):
    """3x3 convolution initialised to output zero, with a learned per-channel output scale.

    ``y = conv(x) · exp(3·g)`` with ``g`` starting at 0, as in Glow's final coupling layer
    (the factor 3 lets the scale move quickly without large raw parameters).
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size, padding=kernel_size // 2)
        nn.init.zeros_(self.conv.weight)
        nn.init.zeros_(self.conv.bias)
        self.log_gain = nn.Parameter(torch.zeros(1, out_channels, 1, 1))

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(x) * torch.exp(3.0 * self.log_gain)


class PointwiseConv2d(nn.Conv2d):
    """1x1 convolution ``(B, C_in, H, W) → (B, C_out, H, W)`` that runs as one matrix product
    ``(B·H·W, C_in) @ (C_in, C_out)`` on a channels_last input (a zero-copy view), which CPUs run faster than
    oneDNN's 1x1 convolution (BENCHMARKS.md, "Training speed against the standard PyTorch Glow"); other
    layouts use the convolution. Same parameters and state dict as ``nn.Conv2d(in_channels, out_channels, 1)``.

    Example:
        >>> layer = PointwiseConv2d(8, 4).to(memory_format=torch.channels_last)
        >>> y = layer(torch.randn(2, 8, 5, 5).contiguous(memory_format=torch.channels_last))  # (2, 4, 5, 5)
    """

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__(in_channels, out_channels, 1)

    def forward(self, x: Tensor) -> Tensor:
        if x.dim() != 4 or not x.is_contiguous(memory_format=torch.channels_last):
            return super().forward(x)
        weight = self.weight.view(self.out_channels, self.in_channels)
        return F.linear(x.permute(0, 2, 3, 1), weight, self.bias).permute(0, 3, 1, 2)


def zero_linear(in_features: int, out_features: int) -> nn.Linear:
    """A linear layer whose weight and bias start at zero."""
    layer = nn.Linear(in_features, out_features)
    nn.init.zeros_(layer.weight)
    nn.init.zeros_(layer.bias)
    return layer


def conv_subnet(hidden_channels: int, middle_kernel_size: int = 1) -> SubnetConstructor:
    """Glow's coupling network: conv3x3 → ReLU → conv(k×k) → ReLU → zero conv3x3.

    Example:
        >>> net = conv_subnet(64)(in_channels=6, out_channels=12)
    """

    def build(in_channels: int, out_channels: int) -> nn.Module:
        return nn.Sequential(
            nn.Conv2d(in_channels, hidden_channels, 3, padding=1),
            nn.ReLU(),
            (PointwiseConv2d(hidden_channels, hidden_channels) if middle_kernel_size == 1 else
             nn.Conv2d(hidden_channels, hidden_channels, middle_kernel_size, padding=middle_kernel_size // 2)),
            nn.ReLU(),
            ZeroConv2d(hidden_channels, out_channels),
        )

    return build


class Asinh(nn.Module):
    r"""Element-wise ``asinh x``: the identity near 0 (``asinh x ≈ x``), ``sign(x)·log 2|x|`` far from it.

    In front of a coupling subnet it bounds how far one unusual input value moves the subnet's output,
    which stays any function of its input, so the coupling is exactly as invertible as before (see
    :func:`fc_subnet`).

    Example:
        >>> [round(value, 3) for value in Asinh()(torch.tensor([0.0, 1.0, 1000.0])).tolist()]
        [0.0, 0.881, 7.601]
    """

    def forward(self, x: Tensor) -> Tensor:
        return torch.asinh(x)


def fc_subnet(hidden_features: int, hidden_layers: int = 1, asinh_inputs: bool = False) -> SubnetConstructor:
    r"""Fully connected coupling network: [``asinh``] → ``hidden_layers`` × (linear → ReLU) → zero linear.

    The cINN paper's MNIST model uses one hidden layer of width 512. ``asinh_inputs`` feeds the subnet
    ``asinh(x_a)`` instead of ``x_a`` (:class:`Asinh`). In a flow whose couplings scale some dimensions
    up a lot (near-constant background pixels), a test image with ink where the training images had none
    reaches the later subnets as values far larger than a typical image's, and every dimension they transform
    goes astray; ``asinh`` grows only logarithmically (``asinh(1000) ≈ 7.6``), so such a value cannot swamp
    them (BENCHMARKS.md, "Why the FC model ignored its labels", measures the effect;
    ``benchmarks/fc_cinn_outliers.py``).

    Example:
        >>> net = fc_subnet(512)(402, 784)   # (in_features, out_features)
        >>> [layer.out_features for layer in net if isinstance(layer, torch.nn.Linear)]
        [512, 784]
        >>> net(torch.randn(2, 402)).abs().sum().item()   # zero last layer: the coupling starts as the identity
        0.0
        >>> type(fc_subnet(512, asinh_inputs=True)(402, 784)[0]).__name__
        'Asinh'
    """

    def build(in_features: int, out_features: int) -> nn.Module:
        layers: list[nn.Module] = [Asinh()] if asinh_inputs else []
        width = in_features
        for _ in range(hidden_layers):
            layers += [nn.Linear(width, hidden_features), nn.ReLU()]
            width = hidden_features
        layers.append(zero_linear(width, out_features))
        return nn.Sequential(*layers)

    return build


SubnetFactory = Callable[[int], SubnetConstructor]
"""A kind of subnet: its width → the constructor ``f(in_channels, out_channels)`` a coupling block calls."""

SUBNETS: dict[str, SubnetFactory] = {}
"""Every kind of coupling subnet by name (see :func:`register_subnet`); the builders' ``subnet=`` and the configs'
``model.subnet`` name one."""


def register_subnet(factory: SubnetFactory) -> SubnetFactory:
    """Make ``factory(width) -> f(in_channels, out_channels)`` selectable by its function name; returns it, so it
    works as a decorator. The module ``f`` builds must map ``(B, in_channels, H, W)`` to
    ``(B, out_channels, H, W)`` and start at zero (so its coupling starts as the identity or a fixed scaling).

    Example:
        >>> @register_subnet
        ... def one_by_one(width: int) -> SubnetConstructor:
        ...     return lambda in_channels, out_channels: ZeroConv2d(in_channels, out_channels, kernel_size=1)
        >>> subnet_constructor("one_by_one", 8)(4, 6)(torch.randn(2, 4, 5, 5)).shape
        torch.Size([2, 6, 5, 5])
        >>> del SUBNETS["one_by_one"]
    """
    SUBNETS[factory.__name__] = factory
    return factory


def subnet_constructor(name: str, width: int) -> SubnetConstructor:
    """The constructor of the registered subnet ``name`` of ``width`` hidden channels; an unknown name is a
    :class:`ValueError` listing the known ones.

    Example:
        >>> net = subnet_constructor("glow_conv", 16)(in_channels=2, out_channels=4)
    """
    if name not in SUBNETS:
        raise ValueError(f"unknown subnet {str(name)[:80]!r}; known: {', '.join(sorted(SUBNETS))}")
    return SUBNETS[name](width)


@register_subnet
def glow_conv(width: int) -> SubnetConstructor:
    """Glow's coupling network: conv3x3 → ReLU → conv1x1 → ReLU → zero conv3x3 (:func:`conv_subnet`)."""
    return conv_subnet(width, middle_kernel_size=1)


@register_subnet
def cinn_conv(width: int) -> SubnetConstructor:
    """The cINN's coupling network: conv3x3 → ReLU → conv3x3 → ReLU → zero conv3x3 (:func:`conv_subnet`)."""
    return conv_subnet(width, middle_kernel_size=3)
