"""Subnetworks for coupling blocks. Each constructor returns ``f(in_channels, out_channels) -> nn.Module``
whose last layer is zero-initialised, so a coupling block built with it starts as the identity."""

from __future__ import annotations

from collections.abc import Callable

import torch
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
            nn.Conv2d(hidden_channels, hidden_channels, middle_kernel_size, padding=middle_kernel_size // 2),
            nn.ReLU(),
            ZeroConv2d(hidden_channels, out_channels),
        )

    return build


def fc_subnet(hidden_features: int, hidden_layers: int = 1) -> SubnetConstructor:
    """Fully connected coupling network: ``hidden_layers`` × (linear → ReLU) → zero linear.

    The cINN paper's MNIST model uses one hidden layer of width 512.

    Example:
        >>> net = fc_subnet(512)(in_channels=402, out_channels=784)
    """

    def build(in_features: int, out_features: int) -> nn.Module:
        layers: list[nn.Module] = []
        width = in_features
        for _ in range(hidden_layers):
            layers += [nn.Linear(width, hidden_features), nn.ReLU()]
            width = hidden_features
        layers.append(zero_linear(width, out_features))
        return nn.Sequential(*layers)

    return build
