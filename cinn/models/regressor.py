"""A deterministic image-to-image regressor: the baseline a conditional INN is compared against."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from cinn.models.arguments import require_count, require_inputs, require_sizes, require_temperature
from cinn.models.cinn import condition_scale_steps
from cinn.models.condition import ImageConditionPyramid, default_condition_channels
from cinn.models.flow import Condition, standard_normal_log_prob


class UpsamplingHead(nn.Module):
    """Multi-scale features → an image: from the coarsest level up, ×2 bilinear upsampling, concatenation
    with the next finer level's features, 3x3 conv + ReLU; then ×2 to full size and a 3x3 conv.

    Shapes: ``[(B, channels[l], H/2^(l+1), W/2^(l+1)) for l]`` → ``(B, out_channels, H, W)``.

    Example:
        >>> head = UpsamplingHead((16, 32), out_channels=2)
        >>> head([torch.randn(1, 16, 8, 8), torch.randn(1, 32, 4, 4)]).shape
        torch.Size([1, 2, 16, 16])
    """

    def __init__(self, channels: Sequence[int], out_channels: int):
        super().__init__()
        widths = list(channels)
        self.merges = nn.ModuleList(
            nn.Sequential(nn.Conv2d(widths[level] + widths[level + 1], widths[level], 3, padding=1), nn.ReLU())
            for level in range(len(widths) - 1))
        self.output = nn.Conv2d(widths[0], out_channels, 3, padding=1)

    def forward(self, features: Sequence[Tensor]) -> Tensor:
        h = features[-1]
        for level in reversed(range(len(features) - 1)):
            h = F.interpolate(h, size=features[level].shape[-2:], mode="bilinear", align_corners=False)
            h = self.merges[level](torch.cat([features[level], h], dim=1))
        return self.output(F.interpolate(h, scale_factor=2, mode="bilinear", align_corners=False))


class GaussianRegressor(nn.Module):
    r"""``x̂ = head(condition_net(c))``, trained by L2 regression.

    Its ``log_prob`` is the density of an isotropic Gaussian around the prediction with one learned
    scale, ``log N(x; x̂(c), σ² I)``, so the engine's maximum-likelihood step is L2 regression: for
    the prediction the loss is ``‖x − x̂‖² / 2σ²`` (Adam is invariant to the constant ``1/σ²``), and
    the fitted ``σ`` makes held-out NLL comparable with a flow's. ``sample`` returns the prediction
    for every draw (the model has no randomness).

    Shapes: ``x`` ``(B, *input_shape)``; ``c`` ``(B, *condition_shape)``; ``log_prob`` ``(B,)`` nats.

    Example:
        >>> model = build_regressor((2, 16, 16), (1, 16, 16), n_levels=2)
        >>> model.log_prob(torch.randn(3, 2, 16, 16), torch.randn(3, 1, 16, 16)).shape
        torch.Size([3])
    """

    def __init__(self, input_shape: Sequence[int], condition_net: nn.Module, head: nn.Module):
        super().__init__()
        self.input_shape = tuple(input_shape)
        self.condition_net = condition_net
        self.head = head
        self.log_scale = nn.Parameter(torch.zeros(()))

    def predict(self, c: Tensor) -> Tensor:
        """The regression output ``x̂(c)``, shape ``(B, *input_shape)`` (at ``c``'s spatial size)."""
        return self.head(self.condition_net(c))

    def log_prob(self, x: Tensor, c: Condition = None) -> Tensor:
        """``log N(x; x̂(c), σ² I)`` in nats, shape ``(B,)``."""
        x = require_inputs(x, self.input_shape, self.log_scale.dtype, any_size=True)
        residual = (x - self.predict(c)) * torch.exp(-self.log_scale)
        return standard_normal_log_prob(residual) - self.log_scale * math.prod(x.shape[1:])

    def forward(self, x: Tensor, c: Condition = None) -> Tensor:
        return self.log_prob(x, c)

    @torch.no_grad()
    def sample(self, n: int, c: Condition = None, temperature: float = 1.0,
               generator: torch.Generator | None = None, spatial_size: Sequence[int] | None = None) -> Tensor:
        """The prediction ``x̂(c)`` (``c`` has batch size ``n``); temperature and generator do not apply."""
        require_count(n), require_temperature(temperature)
        return self.predict(c)


def build_regressor(input_shape: Sequence[int], condition_shape: Sequence[int], *, n_levels: int = 3,
                    condition_channels: Sequence[int] | None = None,
                    global_features: int = 0) -> GaussianRegressor:
    """The deterministic counterpart of :func:`~cinn.models.build_cinn`: the same condition network
    (:class:`~cinn.models.condition.ImageConditionPyramid`, same widths; the condition may be ``2^k``
    times larger than ``x``; ``global_features`` as there) and an :class:`UpsamplingHead` that predicts ``x``.

    Example:
        >>> model = build_regressor((2, 64, 64), (1, 64, 64))
        >>> model.predict(torch.randn(1, 1, 64, 96)).shape
        torch.Size([1, 2, 64, 96])
    """
    require_sizes(n_levels=n_levels)
    if condition_channels is None:
        condition_channels = default_condition_channels(n_levels)
    condition_net = ImageConditionPyramid(condition_shape[0], condition_channels,
                                          extra_stages=condition_scale_steps(condition_shape, input_shape),
                                          global_features=global_features)
    return GaussianRegressor(input_shape, condition_net, UpsamplingHead(condition_channels, input_shape[0]))
